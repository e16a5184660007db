import { GraphQLError } from 'graphql';
import { z } from 'zod';
import type { ErrorCode } from '../errors.ts';
import { MAX_PAYEES } from '../payees/payees.ts';
import { MAX_ACTIVE_STANDING_ORDERS } from '../payments/standing-orders.ts';

/**
 * Cursor pagination of connections. Cursors are opaque to clients: base64url of the JSON sort key
 * of the last row seen. A cursor this server did not hand out is bad input, never a query.
 */

/** The largest page a connection serves; `first` above it is clamped. */
export const MAX_PAGE = 100;
/** The page size when `first` is omitted or null (the schema's default). */
export const DEFAULT_PAGE = 20;

export function pageSize(first: number | null | undefined): number {
  return Math.min(Math.max(first ?? DEFAULT_PAGE, 1), MAX_PAGE);
}

/**
 * Fields whose `first` has its own default and maximum (not DEFAULT_PAGE and MAX_PAGE): what the
 * resolver reads and what the query cost counts (cost.ts), from this one table, so they agree.
 * Lists whose default is their maximum show everything there can be (payees, active orders).
 */
export const FIELD_PAGES = {
  'Query.paymentEvents': { default: 100, max: 500 },
  'Customer.payees': { default: MAX_PAYEES, max: MAX_PAYEES },
  'Account.standingOrders': { default: MAX_ACTIVE_STANDING_ORDERS, max: MAX_ACTIVE_STANDING_ORDERS },
  'Payment.attempts': { default: DEFAULT_PAGE, max: MAX_PAGE },
} as const;
export type FieldWithPage = keyof typeof FIELD_PAGES;

/** The rows `field` reads for `first`: its default when omitted or null, within 1 and its maximum. */
export function fieldPageSize(field: FieldWithPage, first: number | null | undefined): number {
  const page = FIELD_PAGES[field];
  return Math.min(Math.max(first ?? page.default, 1), page.max);
}

/** Sort key of a payment: [createdAt as ISO-8601, id]. */
export const paymentCursorKey = z.tuple([z.iso.datetime(), z.uuid()]);
const rowId = z.string().refine((id) => /^\d{1,19}$/.test(id) && BigInt(id) < 2n ** 63n, 'a row id');
/** Sort key of a row with a bigserial id (ledger entries, operator actions): [id as a decimal string]. */
export const serialCursorKey = z.tuple([rowId]);
/** Sort key of a statement entry: [its time as ISO-8601, its ledger entry id]. */
export const statementCursorKey = z.tuple([z.iso.datetime(), rowId]);
/** Sort key of a payment in the review queue (heldPayments): [heldAt as ISO-8601, id]. */
export const heldCursorKey = paymentCursorKey;
/** Sort key of a quarantined provider event: [receivedAt as ISO-8601, id], newest first. */
export const quarantineCursorKey = paymentCursorKey;
/** Sort key of a webhook delivery: [createdAt as ISO-8601, id], like a payment's. */
export const deliveryCursorKey = paymentCursorKey;

export const encodeCursor = (key: readonly unknown[]) => Buffer.from(JSON.stringify(key)).toString('base64url');

/** The key inside `after`, or null for the first page; BAD_USER_INPUT naming `after` when it is not a cursor of this connection. */
export function decodeCursor<T>(after: string | null | undefined, key: z.ZodType<T>): T | null {
  // An empty string has always meant "from the start", as null does.
  if (!after) return null;
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(after, 'base64url').toString('utf8'));
  } catch {
    throw badCursor();
  }
  const parsed = key.safeParse(json);
  if (!parsed.success) throw badCursor();
  return parsed.data;
}

const badCursor = () =>
  new GraphQLError('after: not a cursor of this connection; pass an endCursor or edge cursor it returned', {
    extensions: { code: 'BAD_USER_INPUT' satisfies ErrorCode, field: ['after'] },
  });

/** A page of a forward connection from `limit + 1` rows read after `after`. */
export function connection<T>(rows: T[], limit: number, keyOf: (row: T) => unknown[], after?: string | null) {
  return edgesPage(
    rows.slice(0, limit).map((node) => ({ cursor: encodeCursor(keyOf(node)), node })),
    rows.length > limit,
    after,
  );
}

/** Edges and their PageInfo; `hasPreviousPage` is true when the page was read after a cursor. */
export function edgesPage<E extends { cursor: string }>(edges: E[], hasNextPage: boolean, after?: string | null) {
  return {
    edges,
    pageInfo: {
      hasNextPage,
      endCursor: edges.at(-1)?.cursor ?? null,
      hasPreviousPage: Boolean(after),
      startCursor: edges[0]?.cursor ?? null,
    },
  };
}

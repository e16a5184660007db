import { GraphQLError } from 'graphql';
import { comparePositions, decodeCursor, START, type EventPosition } from '../events/cursor.ts';
import type { FeedEvent } from '../events/feed.ts';
import { withPayments } from '../events/feed.ts';
import { prismaSql, prunedThrough, readEvents } from '../events/store.ts';
import { accountEventStream } from '../events/stream.ts';
import { ownedAccountWhere, requireViewer, type Context } from './context.ts';
import { edgesPage } from './pagination.ts';
import { budgeted } from './subscription-budget.ts';
import { isUuid } from '../validation.ts';

/**
 * The durable payment events over GraphQL: the `paymentEvents` page and the `accountEvents`
 * subscription (replay, then live). Both read the same stream in the same order, so a client can
 * page with one and carry on with the other from the last id it saw.
 */

export const MAX_EVENTS_PAGE = 500;

const badInput = (message: string, field: string) =>
  new GraphQLError(message, { extensions: { code: 'BAD_USER_INPUT', field: [field] } });


/** Throws unless the caller may read the account's events (its owner, or an operator). */
export async function requireEventAccount(ctx: Context, accountId: string): Promise<void> {
  const viewer = requireViewer(ctx);
  const owned = isUuid(accountId)
    ? await ctx.prisma.account.findFirst({ where: { id: accountId, ...ownedAccountWhere(viewer) }, select: { id: true } })
    : null;
  // Not yours looks exactly like not there.
  if (!owned) throw badInput('No such account', 'accountId');
}

/** The position of a client's `after`, refused when it is not a cursor or retention passed it. */
async function resumePosition(ctx: Context, after: string | null | undefined): Promise<EventPosition | null> {
  if (after === null || after === undefined) return null;
  const position = decodeCursor(after);
  if (!position) throw badInput('after is not an event cursor: pass the id of an event you received', 'after');
  const pruned = await prunedThrough(prismaSql(ctx.prisma));
  if (pruned && comparePositions(position, pruned) < 0) {
    throw badInput(
      'after is older than the event retention: events after it were deleted; read paymentEvents from the start and reconcile',
      'after',
    );
  }
  return position;
}

async function paymentEvents(
  _: unknown,
  args: { accountId: string; after?: string | null; first?: number | null },
  ctx: Context,
) {
  const first = args.first ?? 100;
  if (!Number.isInteger(first) || first < 1 || first > MAX_EVENTS_PAGE) {
    throw badInput(`first must be between 1 and ${MAX_EVENTS_PAGE}`, 'first');
  }
  await requireEventAccount(ctx, args.accountId);
  const after = (await resumePosition(ctx, args.after)) ?? START;
  const rows = await readEvents(prismaSql(ctx.prisma), { after, limit: first + 1, accountId: args.accountId });
  const page = withPayments(ctx.prisma, rows.slice(0, first));
  return edgesPage(page.map((node) => ({ cursor: node.id, node })), rows.length > first, args.after);
}

async function accountEvents(_: unknown, args: { accountId: string; after?: string | null }, ctx: Context): Promise<AsyncIterable<FeedEvent>> {
  await requireEventAccount(ctx, args.accountId);
  const after = await resumePosition(ctx, args.after);
  return accountEventStream({ feed: ctx.events, prisma: ctx.prisma, accountId: args.accountId, after });
}

export const eventResolvers = {
  Query: { paymentEvents },
  Subscription: {
    accountEvents: { subscribe: budgeted(accountEvents), resolve: (event: FeedEvent) => event },
  },
  PaymentEvent: {
    payment: (event: FeedEvent) => event.payment(),
  },
};

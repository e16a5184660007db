import DataLoader from 'dataloader';
import type { Account, Payment, PaymentAttempt, PrismaClient } from '../db/prisma.ts';
import { type Balances, createLedgerReader } from '../ledger/statements.ts';
import { FIELD_PAGES } from './pagination.ts';

/**
 * Batched reads of what nested fields need (a payment's account and attempts, a ledger entry's
 * payment): every such read in one tick of one operation becomes one `WHERE ... IN (...)` query,
 * so a page of N payments costs a fixed number of queries instead of N + 1.
 *
 * Batching only, no cache: an operation may read, move money (a document of several mutations
 * runs them in turn), then read again, and a subscription lives for hours; a cached row would be
 * stale in both. Loaders are still made per operation, so no batch mixes two callers' reads.
 */
export function createLoaders(prisma: PrismaClient) {
  const ledger = createLedgerReader({ prisma });
  return {
    /** An account's three balances, read together in one statement (one snapshot). */
    balances: new DataLoader<string, Balances | null>(
      async (ids) => {
        const found = await ledger.balances(ids);
        return ids.map((id) => found.get(id) ?? null);
      },
      { cache: false },
    ),
    account: new DataLoader<string, Account | null>(
      async (ids) => byKey(ids, await prisma.account.findMany({ where: { id: { in: unique(ids) } } }), (a) => a.id),
      { cache: false },
    ),
    payment: new DataLoader<string, Payment | null>(
      async (ids) => byKey(ids, await prisma.payment.findMany({ where: { id: { in: unique(ids) } } }), (p) => p.id),
      { cache: false },
    ),
    // The first FIELD_PAGES['Payment.attempts'].max of each payment, however many it has.
    attempts: new DataLoader<string, PaymentAttempt[]>(
      async (paymentIds) => {
        const rows = await prisma.$queryRaw<PaymentAttempt[]>`
          SELECT id, payment_id::text AS "paymentId", at, outcome, detail, internal_detail AS "internalDetail" FROM (
            SELECT a.*, row_number() OVER (PARTITION BY payment_id ORDER BY id) AS n
            FROM payment_attempts a WHERE payment_id = ANY(${unique(paymentIds)}::uuid[])) numbered
          WHERE n <= ${FIELD_PAGES['Payment.attempts'].max}
          ORDER BY id`;
        const grouped = Map.groupBy(rows, (a) => a.paymentId);
        return paymentIds.map((id) => grouped.get(id) ?? []);
      },
      { cache: false },
    ),
  };
}

export type Loaders = ReturnType<typeof createLoaders>;

const unique = (keys: readonly string[]) => [...new Set(keys)];

function byKey<T>(keys: readonly string[], rows: T[], keyOf: (row: T) => string): Array<T | null> {
  const found = new Map(rows.map((row) => [keyOf(row), row]));
  return keys.map((key) => found.get(key) ?? null);
}

import type { KeysetPage } from './db/keyset.ts';
import type { OperatorAction, PrismaClient, Tx } from './db/prisma.ts';

/**
 * The operator action log: which operator (the token's `sub`) changed what, and when, written in
 * the same transaction as the change, so nothing an operator does is unrecorded. Decisions the
 * system takes on an operator's behalf (a hold expiring) are recorded under a `system:` name.
 */

/** The operator making a change: their id from the token's `sub`. */
export type Operator = string;

/** Appends one action to the log, inside the transaction that makes the change. */
export function recordOperatorAction(tx: Tx, operator: Operator, action: string, targetId: string, detail: string | null) {
  return tx.operatorAction.create({ data: { operator, action, targetId, detail } });
}

/** The log, newest first, keyed by action id. */
export function listOperatorActions(prisma: PrismaClient, page: KeysetPage<[string]>): Promise<OperatorAction[]> {
  return prisma.operatorAction.findMany({
    where: page.after ? { id: { lt: BigInt(page.after[0]) } } : {},
    orderBy: { id: 'desc' },
    take: page.limit + 1,
  });
}

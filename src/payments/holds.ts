import { z } from 'zod';
import type { Clock } from '../calendar.ts';
import { afterHeldAtId, type KeysetPage } from '../db/keyset.ts';
import type { Payment, PrismaClient, Tx } from '../db/prisma.ts';
import { DomainError, userError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { type Operator, recordOperatorAction } from '../operator-actions.ts';
import type { Metrics } from '../ops/metrics.ts';
import { recordLetThrough, type SavedPayee } from '../payees/payees.ts';
import { isUuid, parseInput, rejectReason } from '../validation.ts';
import type { FailureReason } from './failure-reasons.ts';
import type { PaymentJobs } from './outbox.ts';
import { approve, cancelHeld, expire, reject } from './transitions.ts';

/**
 * Risk holds.
 *
 * Glossary: a *held* payment (status HELD) is debited, with its ledger entry, but has no
 * settlement job: nothing is sent to the provider until an operator *approves* it (HELD -> PENDING
 * and its job, in one transaction). An operator may *reject* it, the customer may *cancel* it,
 * and after HOLD_MAX_HOURS it *expires*: each of those is HELD -> CANCELLED with the money back.
 * Every one of these changes is guarded by `status = 'HELD'`, so when they race exactly one wins.
 *
 * The hold rule (`holdReason`), one function for every way money leaves: a payment taken now
 * (sendPayment), a scheduled payment on its day and every standing-order occurrence (scheduled.ts).
 * A payment is held when its amount is REVIEW_THRESHOLD or more, or when it goes to a payee saved
 * less than NEW_PAYEE_HOURS ago that has not been let through (`letThroughAt`, recorded on the payee
 * by an operator's approval or by the first payment to it that was not held: payees.ts): its first
 * payment, however many are tried while that one waits.
 *
 * HOLD_MAX_HOURS and the review queue's order count from `heldAt`, when the payment became HELD (a
 * scheduled payment on its day, not when it was scheduled).
 */

export type HoldReason = 'amount' | 'new-payee';

/** The system's name in the operator action log for holds it rejects on its own. */
export const HOLD_EXPIRY_OPERATOR = 'system:hold-expiry';

export interface HoldPolicy {
  reviewThreshold: number;
  newPayeeSeconds: number;
  holdMaxSeconds: number;
}

/**
 * Why a payment of `amount` to `payee` (the customer's saved payee with its details, or null) taken
 * at `now` must be held, or null: the one hold rule (see the top of this file).
 */
export function holdReason(
  policy: Pick<HoldPolicy, 'reviewThreshold' | 'newPayeeSeconds'>,
  amount: number | bigint,
  payee: Pick<SavedPayee, 'createdAt' | 'letThroughAt'> | null,
  now: Date,
): HoldReason | null {
  if (amount >= policy.reviewThreshold) return 'amount';
  if (!payee || payee.letThroughAt !== null) return null;
  return now.getTime() - payee.createdAt.getTime() < policy.newPayeeSeconds * 1000 ? 'new-payee' : null;
}

/**
 * The same rule as SQL, for the statement that takes a payment and reads the payee itself
 * (transitions.ts `take`): each field of `e` is an SQL expression, the payee's columns NULL when there
 * is none. Yields 'amount', 'new-payee' or NULL, as `holdReason` would (test/holds.test.ts holds the
 * two to each other).
 */
export function holdReasonSql(
  policy: Pick<HoldPolicy, 'reviewThreshold' | 'newPayeeSeconds'>,
  e: { amount: string; payeeId: string; payeeCreatedAt: string; payeeLetThroughAt: string; now: string },
): string {
  const { reviewThreshold, newPayeeSeconds } = policy;
  if (!Number.isSafeInteger(reviewThreshold) || !Number.isSafeInteger(newPayeeSeconds))
    throw new Error('hold policy must be whole numbers');
  return `CASE WHEN ${e.amount} >= ${reviewThreshold} THEN 'amount'
       WHEN ${e.payeeId} IS NOT NULL AND ${e.payeeLetThroughAt} IS NULL
         AND ${e.now} - ${e.payeeCreatedAt} < ${newPayeeSeconds} * interval '1 second' THEN 'new-payee' END`;
}

export type CancelHeldResult = { kind: 'cancelled'; payment: Payment } | { kind: 'not-found' } | { kind: 'not-held'; payment: Payment };

const rejectInput = z.object({ reason: rejectReason });

export function createHoldService(deps: {
  prisma: PrismaClient;
  jobs: Pick<PaymentJobs, 'settle'>;
  policy: HoldPolicy;
  clock: Clock;
  logger: Logger;
  metrics: Pick<Metrics, 'holdDecisions'>;
  /** Called after an operator's decision commits (the API wakes its event feed); nothing by default. */
  afterCommit?: () => void;
}) {
  const { prisma, jobs, logger, metrics } = deps;

  const noSuchHeldPayment = (paymentId: string, exists: boolean) =>
    new DomainError(userError('INVALID_INPUT', exists ? `Payment ${paymentId} is not HELD` : 'No such payment', ['paymentId']));

  /** Throws the error an operator sees when the payment was not HELD (or does not exist). */
  async function refuse(paymentId: string): Promise<never> {
    const exists = isUuid(paymentId) && (await prisma.payment.count({ where: { id: paymentId } })) > 0;
    throw noSuchHeldPayment(paymentId, exists);
  }

  /**
   * `end` (reject, expire or cancelHeld: HELD -> CANCELLED, money back), then `after` in the same
   * transaction; null when it was not HELD.
   */
  async function refundHeld(
    paymentId: string,
    end: (tx: Tx, paymentId: string) => Promise<(Payment & { failureReason: FailureReason }) | null>,
    after: (tx: Tx, payment: Payment) => Promise<unknown>,
  ) {
    if (!isUuid(paymentId)) return null;
    const payment = await prisma.$transaction(async (tx) => {
      const cancelled = await end(tx, paymentId);
      if (cancelled) await after(tx, cancelled);
      return cancelled;
    });
    if (payment) {
      metrics.holdDecisions.inc({ decision: payment.failureReason });
      logger.info({ paymentId, reason: payment.failureReason }, 'held payment cancelled; money back');
    }
    return payment;
  }

  /**
   * Operator: HELD -> PENDING and its settlement job, with the operator's action, in one
   * transaction; its payee, if saved, is let through from now on.
   */
  async function approvePayment(operator: Operator, paymentId: string): Promise<Payment> {
    const approved = isUuid(paymentId)
      ? await prisma.$transaction(async (tx) => {
          const payment = await approve(tx, paymentId);
          if (!payment) return null;
          await jobs.settle(tx, paymentId);
          await recordLetThrough(tx, paymentId, deps.clock.now());
          await recordOperatorAction(tx, operator, 'approvePayment', paymentId, `${payment.amount} pence`);
          return payment;
        })
      : null;
    if (!approved) return refuse(paymentId);
    deps.afterCommit?.();
    metrics.holdDecisions.inc({ decision: 'APPROVED' });
    logger.info({ paymentId, operator }, 'held payment approved');
    return approved;
  }

  /** Operator: HELD -> CANCELLED, money back, with the operator's action and reason, in one transaction. */
  async function rejectPayment(operator: Operator, paymentId: string, reason: unknown): Promise<Payment> {
    const why = parseInput(rejectInput, { reason });
    if (!why.ok) throw new DomainError(why.error);
    const rejected = await refundHeld(paymentId, reject, (tx) =>
      recordOperatorAction(tx, operator, 'rejectPayment', paymentId, why.value.reason),
    );
    if (rejected) deps.afterCommit?.();
    return rejected ?? refuse(paymentId);
  }

  /**
   * Customer: their own HELD payment -> CANCELLED, money back. For `cancelPayment`
   * (SCHEDULED, HELD or PENDING), which hands HELD payments here. Another customer's payment is
   * `not-found`, exactly like a missing one.
   */
  async function cancelHeldPayment(customerId: string, paymentId: string): Promise<CancelHeldResult> {
    if (!isUuid(paymentId)) return { kind: 'not-found' };
    const owned = await prisma.payment.findFirst({ where: { id: paymentId, account: { customerId } }, select: { id: true } });
    if (!owned) return { kind: 'not-found' };
    const cancelled = await refundHeld(paymentId, cancelHeld, async () => undefined);
    if (cancelled) return { kind: 'cancelled', payment: cancelled };
    return { kind: 'not-held', payment: await prisma.payment.findUniqueOrThrow({ where: { id: paymentId } }) };
  }

  /**
   * Rejects every payment HELD for HOLD_MAX_HOURS or more since it became HELD (at most `limit` a
   * run), each in its own transaction with an action by HOLD_EXPIRY_OPERATOR. Returns the ids it rejected.
   */
  async function expireHolds(limit = 500): Promise<string[]> {
    const before = new Date(deps.clock.now().getTime() - deps.policy.holdMaxSeconds * 1000);
    const due = await prisma.$queryRaw<{ id: string }[]>`
      SELECT id::text AS id FROM payments WHERE status = 'HELD' AND held_at <= ${before} ORDER BY held_at, id LIMIT ${limit}`;
    const hours = deps.policy.holdMaxSeconds / 3600;
    const expired: string[] = [];
    for (const { id } of due) {
      const done = await refundHeld(id, expire, (tx) =>
        recordOperatorAction(tx, HOLD_EXPIRY_OPERATOR, 'expireHold', id, `not reviewed within ${hours} hours`),
      );
      if (done) expired.push(id);
    }
    if (expired.length > 0) logger.warn({ paymentIds: expired }, 'held payments not reviewed in time were rejected');
    return expired;
  }

  /** Operators' review queue: HELD payments, held longest first, keyed by (heldAt, id). */
  async function heldPayments(page: KeysetPage<[string, string]>): Promise<Array<Payment & { heldAt: Date }>> {
    const rows = await prisma.payment.findMany({
      where: { status: 'HELD', ...afterHeldAtId(page.after) },
      orderBy: [{ heldAt: 'asc' }, { id: 'asc' }],
      take: page.limit + 1,
    });
    return rows.map(({ heldAt, ...payment }) => {
      // The database refuses a HELD payment without heldAt (payments_held_at_when_held).
      if (heldAt === null) throw new Error(`held payment ${payment.id} has no held_at`);
      return { ...payment, heldAt };
    });
  }

  return { approvePayment, rejectPayment, cancelHeldPayment, expireHolds, heldPayments };
}

export type HoldService = ReturnType<typeof createHoldService>;

import { type Clock, calendarDateOf } from '../calendar.ts';
import type { PrismaClient } from '../db/prisma.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../ops/metrics.ts';
import { findSavedPayee, recordLetThrough } from '../payees/payees.ts';
import { FAILURE_REASONS } from './failure-reasons.ts';
import { type HoldPolicy, holdReason } from './holds.ts';
import { londonDay, reserveDailyLimit } from './limits.ts';
import type { PaymentJobs } from './outbox.ts';
import { executeOnDay, failOnDay } from './transitions.ts';

/**
 * Scheduled payments: a SCHEDULED payment moves no money until its London day. Its execution job
 * is created with it (same transaction) and becomes due when that day begins, by the clock of the
 * process that scheduled it; then the same guarded debit as `sendPayment` runs, and the same hold
 * rule (holds.ts `holdReason`), as it stands that day: standing-order occurrences are run here too.
 */

/** How far ahead a payment or a standing order's first payment may be scheduled. */
export const MAX_SCHEDULE_DAYS = 366;

// As for sendPayment: wait for a pooled connection under a burst, never hold one for long.
export const TX_OPTIONS = { maxWait: 15_000, timeout: 10_000 } as const;

/** Thrown inside the execution's transaction to undo its debit: the payment would pass the daily limit. */
class OverDailyLimit extends Error {
  override name = 'OverDailyLimit';
}

export function createScheduledExecution(deps: {
  prisma: PrismaClient;
  /** Its settlement job once debited, or a fresh execution job when it ran before its day. */
  jobs: Pick<PaymentJobs, 'settle' | 'execute'>;
  clock: Clock;
  /** Payee safety on the payment's day: its daily limit and the hold rule. */
  policy: Pick<HoldPolicy, 'reviewThreshold' | 'newPayeeSeconds'> & { dailyLimit: number };
  logger: Logger;
  metrics: Pick<Metrics, 'scheduledExecuted' | 'held'>;
}) {
  const { prisma, jobs, clock, logger } = deps;

  /**
   * Runs a SCHEDULED payment whose day has come: debit + ledger + settlement job (-> PENDING), or
   * HELD for review by the hold rule (debited, no job), or FAILED with INSUFFICIENT_FUNDS and
   * nothing debited, in one transaction. A payment that is no longer SCHEDULED (cancelled, or run
   * already) is left alone; one whose day has not come (the job ran early) gets a fresh job for its day.
   */
  async function execute(paymentId: string): Promise<void> {
    const now = clock.now();
    const today = londonDay(now);
    const ran = await prisma
      .$transaction(async (tx) => {
        // Its amount and recipient never change: read before the statement that locks it.
        const scheduled = await tx.payment.findUnique({
          where: { id: paymentId },
          select: { amount: true, recipientSortCode: true, recipientAccountNumber: true, account: { select: { customerId: true } } },
        });
        if (!scheduled) return null;
        const { customerId } = scheduled.account;
        const recipient = { sortCode: scheduled.recipientSortCode, accountNumber: scheduled.recipientAccountNumber };
        const payee = await findSavedPayee(tx, customerId, recipient);
        const held = holdReason(deps.policy, scheduled.amount, payee, now);
        const payment = await executeOnDay(tx, paymentId, today, { hold: held !== null, at: now });
        if (payment && payment.status !== 'FAILED') {
          // It counts against the customer's limit on the day it runs; past it, nothing may move.
          const fits = await reserveDailyLimit(tx, {
            customerId,
            day: today,
            amount: Number(payment.amount),
            limit: deps.policy.dailyLimit,
          });
          if (!fits) throw new OverDailyLimit();
        }
        if (payment?.status === 'PENDING') {
          await jobs.settle(tx, paymentId);
          // Not held: a saved payee not yet let through is let through by this payment.
          if (payee && payee.letThroughAt === null) await recordLetThrough(tx, paymentId, now);
        }
        if (payment) return { payment, held: payment.status === 'HELD' ? held : null };
        const current = await tx.payment.findUnique({ where: { id: paymentId }, select: { status: true, executeOn: true } });
        if (current?.status === 'SCHEDULED' && current.executeOn) {
          const executeOn = calendarDateOf(current.executeOn);
          await jobs.execute(tx, { paymentId, executeOn, fresh: true });
          logger.warn({ paymentId, executeOn, today }, 'scheduled payment job ran before its day; put off to its day');
        }
        return null;
      }, TX_OPTIONS)
      .catch(async (error: unknown) => {
        if (!(error instanceof OverDailyLimit)) throw error;
        // The debit above was rolled back with the transaction: fail it with nothing moved.
        const failed = await failOnDay(prisma, paymentId, FAILURE_REASONS.LIMIT_EXCEEDED);
        return failed && { payment: failed, held: null };
      });
    if (!ran) return;
    const { payment: moved, held } = ran;
    deps.metrics.scheduledExecuted.inc({ status: moved.status });
    if (held) deps.metrics.held.inc({ reason: held });
    logger.info({ paymentId, status: moved.status, failureReason: moved.failureReason, holdReason: held }, 'scheduled payment executed');
  }

  return { execute };
}

export type ScheduledExecution = ReturnType<typeof createScheduledExecution>;

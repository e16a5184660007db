import type { Job, PgBoss } from 'pg-boss';
import { addCalendarDays, type Clock, londonToday } from '../calendar.ts';
import { type PrismaClient, prismaSql } from '../db/prisma.ts';
import { pruneEvents } from '../events/store.ts';
import type { Reconciliation } from '../ledger/reconciliation.ts';
import type { Logger } from '../logger.ts';
import type { HoldService } from '../payments/holds.ts';
import type { ProviderEventsService } from '../payments/provider-events.ts';
import type { ScheduledExecution } from '../payments/scheduled.ts';
import type { Settlement } from '../payments/settlement.ts';
import type { StandingOrders } from '../payments/standing-orders.ts';
import type { DeliverWebhookJob, JobHandlers, QueuePolicy, SettlePaymentJob } from './queues.ts';
import { sweepOrphanedPayments } from './sweeper.ts';

/**
 * Whether this job may have reached the provider before, so the provider must be asked before the
 * payment is created (the crash-recovery rule: ask before you create when in doubt). Only a job on
 * its very first claim, never retried, deferred or re-enqueued, cannot have: pg-boss counts every
 * claim after the first in `retryCount`, including the one after a dead worker's job expired.
 */
export function mayHaveRunBefore(data: SettlePaymentJob, job: Pick<Job<unknown>, 'retryCount'>): boolean {
  return job.retryCount > 0 || data.retriesSpent !== undefined || data.deferrals !== undefined || data.swept === true;
}

/** The settlement queues' handlers: settle a PENDING payment, and resolve one whose retries ran out. */
export function settlementHandlers(settlement: Settlement): Pick<JobHandlers, 'settle' | 'reconcile'> {
  return {
    settle: (data, job) => settlement.settle(data.paymentId, { askFirst: mayHaveRunBefore(data, job) }),
    reconcile: (data) => settlement.reconcile(data.paymentId),
  };
}

/** What each queue's job does: one call into the service that owns the work. */
export function createJobHandlers(deps: {
  boss: PgBoss;
  prisma: PrismaClient;
  policy: QueuePolicy;
  clock: Clock;
  logger: Logger;
  settlement: Settlement;
  scheduled: ScheduledExecution;
  standingOrders: StandingOrders;
  providerEvents: ProviderEventsService;
  holds: Pick<HoldService, 'expireHolds'>;
  /** The provider's daily settlement report against our books. */
  reconciliation: Pick<Reconciliation, 'reconcile'>;
  /** One webhook delivery attempt (src/webhooks/deliver.ts), if `jobId` is still the job allowed to make it. */
  webhooks: { attempt(jobId: string, job: DeliverWebhookJob): Promise<void> };
  /** The sweeper re-enqueues PENDING payments without a live job once they are this old. */
  sweepMinAgeSeconds: number;
  /** Payment events are kept this long (EVENT_RETENTION_DAYS). */
  eventRetentionDays: number;
}): JobHandlers {
  const { logger } = deps;
  return {
    ...settlementHandlers(deps.settlement),
    // The sweep itself holds an advisory lock: two at once find nothing twice.
    async sweep() {
      const { prisma, boss, policy, clock } = deps;
      await sweepOrphanedPayments({ prisma, boss, queue: policy, minAgeSeconds: deps.sweepMinAgeSeconds, clock, logger });
    },
    async pruneEvents() {
      const before = new Date(Date.now() - deps.eventRetentionDays * 24 * 3600 * 1000);
      const deleted = await pruneEvents(prismaSql(deps.prisma), { before });
      logger.info({ deleted, before }, 'payment events past retention pruned');
    },
    async expireHolds() {
      const expired = await deps.holds.expireHolds();
      logger.debug({ expired: expired.length }, 'hold expiry ran');
    },
    async reconcileDay(data) {
      const date = data?.date ?? addCalendarDays(londonToday(deps.clock), -1);
      const open = await deps.reconciliation.reconcile(date);
      logger.info({ date, openBreaks: open.length }, 'daily reconciliation done');
    },
    execute: ({ paymentId }) => deps.scheduled.execute(paymentId),
    creditReturn: ({ creditId }) => deps.providerEvents.returnCredit(creditId),
    standingOrders: () => deps.standingOrders.runDue().then(() => undefined),
    // A poll that fails is replaced by the next one in the chain (src/jobs/worker.ts).
    async providerEvents() {
      try {
        const applied = await deps.providerEvents.poll();
        if (applied > 0) logger.info({ applied }, 'provider events applied');
      } catch (error) {
        logger.warn({ err: error }, 'polling the provider events failed; the next poll tries again');
      }
    },
    async deliverWebhook(data, job) {
      try {
        await deps.webhooks.attempt(job.id, data);
      } catch (error) {
        // Ours, not the endpoint's (the database, a secret that does not decrypt): pg-boss tries the job again.
        logger
          .child({ component: 'webhooks' })
          .error({ err: error, jobId: job.id, deliveryId: data.deliveryId }, 'webhook attempt failed on our side; will retry');
        throw error;
      }
    },
  };
}

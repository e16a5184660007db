import type { PgBoss, SendOptions } from 'pg-boss';
import { z } from 'zod';

/**
 * The queues and their payloads. A payload is validated when it is read back by a worker,
 * as well as typed when it is sent.
 *
 * - `payment.settle`: created in the same transaction as the payment; asks the provider and
 *   settles the payment. Transient failures retry with exponential backoff.
 * - `payment.reconcile`: the dead-letter queue of `payment.settle`. When the retries run out, it
 *   resolves the payment for good: completed if the provider has it, otherwise voided there
 *   and refunded. It keeps retrying while the provider is unreachable.
 * - `events.prune`: scheduled; deletes payment events older than EVENT_RETENTION_DAYS.
 * - `payment.sweep`: every minute (pg-boss schedule), re-enqueues PENDING payments that have no
 *   live job (src/jobs/sweeper.ts).
 */
export const QUEUES = {
  settle: 'payment.settle',
  reconcile: 'payment.reconcile',
  pruneEvents: 'events.prune',
  sweep: 'payment.sweep',
} as const;

/** When retention runs: hourly, at a minute no other schedule uses. */
export const PRUNE_EVENTS_CRON = '17 * * * *';

/** Jobs waiting (created or retry) are kept this long; pg-boss's default (14 days) would drop a payment's only job. */
const WAITING_JOB_RETENTION_SECONDS = 365 * 24 * 3600;

export const settlePaymentJob = z.object({
  paymentId: z.uuid(),
  /**
   * Set on a job that replaced a deferred one (the provider was not called: circuit open or
   * Retry-After): the retries its predecessors spent, and how many times it was put off in a row.
   */
  retriesSpent: z.number().int().min(0).optional(),
  deferrals: z.number().int().min(0).optional(),
  /** Set by the sweeper: the payment lost its job, and may have reached the provider before. */
  swept: z.literal(true).optional(),
});
export type SettlePaymentJob = z.infer<typeof settlePaymentJob>;

export interface RetryPolicy {
  limit: number;
  delaySeconds: number;
  delayMaxSeconds: number;
}

export interface QueuePolicy {
  retry: RetryPolicy;
  /**
   * A job whose worker died (SIGKILL, power loss) is handed to another worker after this long.
   * Comfortably above one provider call (timeout 5 s by default), well under the contract's minute.
   */
  jobExpireSeconds: number;
}

export function settleJobOptions({ retry, jobExpireSeconds }: QueuePolicy): SendOptions {
  return {
    retryLimit: retry.limit,
    retryDelay: retry.delaySeconds,
    retryBackoff: true,
    retryDelayMax: retry.delayMaxSeconds,
    expireInSeconds: jobExpireSeconds,
    retentionSeconds: WAITING_JOB_RETENTION_SECONDS,
    deadLetter: QUEUES.reconcile,
  };
}

/**
 * When to try a deferred settlement again: when the provider lets us call again, but no sooner
 * than the retry backoff for this many deferrals in a row, so a long outage is not polled hot.
 */
export function deferralDelaySeconds(retry: RetryPolicy, resumeInSeconds: number, deferrals: number): number {
  return Math.max(resumeInSeconds, Math.min(retry.delayMaxSeconds, retry.delaySeconds * 2 ** Math.min(deferrals, 16)), 1);
}

/** Creates the queues if they are missing. Safe to call from every process at start-up. */
export async function createQueues(boss: PgBoss, policy: QueuePolicy): Promise<void> {
  const { retry } = policy;
  // The dead-letter queue must exist before a queue names it. Reconciliation keeps trying at a
  // steady pace for as long as the provider cannot be reached. (pg-boss copies a dead-lettered
  // job's retry policy from this queue but not retryDelayMax, so backoff would be uncapped here.)
  await boss.createQueue(QUEUES.reconcile, {
    retryLimit: 1_000_000,
    retryDelay: Math.min(retry.delayMaxSeconds, 60),
    retryBackoff: false,
    expireInSeconds: policy.jobExpireSeconds,
    retentionSeconds: WAITING_JOB_RETENTION_SECONDS,
  });
  // No notify: pg-boss would NOTIFY inside the payment's transaction, and every NOTIFY-ing commit
  // takes PostgreSQL's one notification-queue lock (ADR 0006). Workers poll instead.
  // (Databases made before this have it switched off by the durable_events migration.)
  await boss.createQueue(QUEUES.settle, { ...settleJobOptions(policy), notify: false });
  // Queues created before the retention was set keep their default for jobs sent without one.
  await boss.updateQueue(QUEUES.settle, { retentionSeconds: WAITING_JOB_RETENTION_SECONDS });
  // A sweep that fails is simply run again by the next minute's schedule.
  await boss.createQueue(QUEUES.sweep, { retryLimit: 0, expireInSeconds: 120, deleteAfterSeconds: 3600 });
  // A singleton: one prune at a time across every worker process.
  await boss.createQueue(QUEUES.pruneEvents, { policy: 'singleton', retryLimit: 3, expireInSeconds: 15 * 60 });
}

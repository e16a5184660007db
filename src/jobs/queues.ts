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
 */
export const QUEUES = {
  settle: 'payment.settle',
  reconcile: 'payment.reconcile',
  pruneEvents: 'events.prune',
} as const;

/** When retention runs: hourly, at a minute no other schedule uses. */
export const PRUNE_EVENTS_CRON = '17 * * * *';

export const settlePaymentJob = z.object({ paymentId: z.uuid() });
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
    deadLetter: QUEUES.reconcile,
  };
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
    retentionSeconds: 365 * 24 * 3600,
  });
  // No notify: pg-boss would NOTIFY inside the payment's transaction, and every NOTIFY-ing commit
  // takes PostgreSQL's one notification-queue lock (ADR 0004). Workers poll instead.
  // (Databases made before this have it switched off by the durable_events migration.)
  await boss.createQueue(QUEUES.settle, { ...settleJobOptions(policy), notify: false });
  // A singleton: one prune at a time across every worker process.
  await boss.createQueue(QUEUES.pruneEvents, { policy: 'singleton', retryLimit: 3, expireInSeconds: 15 * 60 });
}

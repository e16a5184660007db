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
 * - `webhook.deliver`: one attempt to POST one event to one endpoint (grouped by endpoint, so a
 *   slow endpoint holds at most its own slots). Failed attempts schedule the next one themselves
 *   (src/webhooks/deliver.ts); pg-boss retries only a job whose worker died or errored.
 */
export const QUEUES = {
  settle: 'payment.settle',
  reconcile: 'payment.reconcile',
  pruneEvents: 'events.prune',
  deliverWebhook: 'webhook.deliver',
} as const;

/** When retention runs: hourly, at a minute no other schedule uses. */
export const PRUNE_EVENTS_CRON = '17 * * * *';

export const settlePaymentJob = z.object({ paymentId: z.uuid() });
export type SettlePaymentJob = z.infer<typeof settlePaymentJob>;

export const deliverWebhookJob = z.object({ deliveryId: z.uuid() });
export type DeliverWebhookJob = z.infer<typeof deliverWebhookJob>;

/**
 * Options of every `webhook.deliver` job. A job outlives one attempt (the HTTP timeout) by a
 * margin before pg-boss hands it to another worker; it is retried by pg-boss only when its
 * worker died or hit an error of ours (the database), at a steady pace, practically forever:
 * the delivery's own retry window decides when to give up.
 */
export function webhookJobOptions(options: { timeoutMs: number; jobExpireSeconds: number }) {
  return {
    expireInSeconds: Math.max(options.jobExpireSeconds, Math.ceil(options.timeoutMs / 1000) + 2),
    retryLimit: 100_000,
    retryDelay: 1,
    retryBackoff: true,
    retryDelayMax: 60,
  } satisfies SendOptions;
}

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
  // Jobs of this queue are sent by the webhook dispatcher and redeliveries, never by the money
  // transaction, so a NOTIFY on send wakes workers at once without slowing payments.
  await boss.createQueue(QUEUES.deliverWebhook, { notify: true, retentionSeconds: 7 * 24 * 3600 });
}

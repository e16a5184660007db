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
 *   live job, and SCHEDULED payments that have no execution job (src/jobs/sweeper.ts).
 * - `webhook.deliver`: one attempt to POST one event to one endpoint (grouped by endpoint, so a
 *   slow endpoint holds at most its own slots). Failed attempts schedule the next one themselves
 *   (src/webhooks/deliver.ts); pg-boss retries only a job whose worker died or errored.
 * - `payment.expire-holds`: every minute (pg-boss schedule), rejects payments HELD for
 *   HOLD_MAX_HOURS, money back (src/jobs/hold-expiry.ts, issue 15).
 * - `payment.execute`: created with a SCHEDULED payment, due (`startAfter`) when its London day
 *   begins; runs the guarded debit (SCHEDULED -> PENDING and a settlement job) or fails it for funds.
 * - `standing-orders.due`: every minute (pg-boss schedule) and at once after an order is created;
 *   creates every due standing-order occurrence as a SCHEDULED payment, each exactly once.
 * - `provider.events`: one poll of the provider's event feed at a time (policy `stately`); applies
 *   returns and inbound credits, then queues the next poll.
 * - `provider.credit-return`: sends an inbound credit for no account of ours back to the provider,
 *   retried until the provider confirms.
 */
export const QUEUES = {
  settle: 'payment.settle',
  reconcile: 'payment.reconcile',
  pruneEvents: 'events.prune',
  sweep: 'payment.sweep',
  deliverWebhook: 'webhook.deliver',
  expireHolds: 'payment.expire-holds',
  execute: 'payment.execute',
  standingOrders: 'standing-orders.due',
  providerEvents: 'provider.events',
  creditReturn: 'provider.credit-return',
} as const;

/** When the standing-order scheduler runs: every minute (an order's day is found within a minute of midnight). */
export const STANDING_ORDERS_CRON = '* * * * *';

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
  /** The trace of the request that made the payment (W3C trace context), continued by the worker. */
  trace: z.record(z.string(), z.string()).optional(),
  /** Set by the sweeper: the payment lost its job, and may have reached the provider before. */
  swept: z.literal(true).optional(),
});
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
export const executePaymentJob = z.object({ paymentId: z.uuid() });
export type ExecutePaymentJob = z.infer<typeof executePaymentJob>;

export const creditReturnJob = z.object({ creditId: z.string().min(1).max(200) });
export type CreditReturnJob = z.infer<typeof creditReturnJob>;

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

/** A poll of the provider's events whose worker died frees the feed after this long. */
export function providerEventsExpireSeconds(policy: QueuePolicy): number {
  return Math.max(policy.jobExpireSeconds, 5);
}

/** A scheduled payment's execution job: DB work only, retried with backoff; kept until long after its day. */
export function executeJobOptions({ retry, jobExpireSeconds }: QueuePolicy): SendOptions {
  return {
    retryLimit: 1_000,
    retryDelay: retry.delaySeconds,
    retryBackoff: true,
    retryDelayMax: retry.delayMaxSeconds,
    expireInSeconds: jobExpireSeconds,
    retentionSeconds: WAITING_JOB_RETENTION_SECONDS,
  };
}

/** Returning a credit to the provider: retried (capped backoff) until the provider confirms. */
export function creditReturnJobOptions({ retry, jobExpireSeconds }: QueuePolicy): SendOptions {
  return {
    retryLimit: 1_000_000,
    retryDelay: retry.delaySeconds,
    retryBackoff: true,
    retryDelayMax: retry.delayMaxSeconds,
    expireInSeconds: jobExpireSeconds,
    retentionSeconds: WAITING_JOB_RETENTION_SECONDS,
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
  // No notify, like every queue: no process LISTENs (ADR 0006); webhook workers poll every 0.5 s.
  await boss.createQueue(QUEUES.deliverWebhook, { notify: false, retentionSeconds: 7 * 24 * 3600 });
  // Like the sweep: a run that fails is done by the next minute's; each rejection is guarded by status.
  await boss.createQueue(QUEUES.expireHolds, { retryLimit: 0, expireInSeconds: 120, deleteAfterSeconds: 3600 });
  // Money jobs: no notify inside the money transaction (as for settlement); workers poll.
  await boss.createQueue(QUEUES.execute, { ...executeJobOptions(policy), notify: false });
  await boss.createQueue(QUEUES.creditReturn, { ...creditReturnJobOptions(policy), notify: false });
  // A run that fails is replaced by the next minute's; occurrences are created once whoever runs.
  await boss.createQueue(QUEUES.standingOrders, { retryLimit: 0, expireInSeconds: 120, deleteAfterSeconds: 3600 });
  // One poll waiting and one running at most (stately): every worker may queue the next poll, and
  // a duplicate is refused by pg-boss. A poll that fails is simply replaced by the next one.
  await boss.createQueue(QUEUES.providerEvents, {
    policy: 'stately',
    retryLimit: 0,
    expireInSeconds: providerEventsExpireSeconds(policy),
    deleteAfterSeconds: 3600,
  });
}

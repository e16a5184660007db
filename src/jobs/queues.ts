import type { Job, PgBoss, Queue, SendOptions } from 'pg-boss';
import { z } from 'zod';

/**
 * The job registry: every queue of the service, declared once in `JOBS` below with its payload
 * schema, its options, its schedule and how it is consumed (graphile-worker's task list and
 * crontab in one table). A payload is typed when it is sent (src/jobs/enqueue.ts, the only place
 * jobs are sent from) and parsed when a worker reads it back (src/jobs/worker.ts).
 */

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

function settleJobOptions({ retry, jobExpireSeconds }: QueuePolicy): SendOptions {
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
function providerEventsExpireSeconds(policy: QueuePolicy): number {
  return Math.max(policy.jobExpireSeconds, 5);
}

/** A scheduled payment's execution job: DB work only, retried with backoff; kept until long after its day. */
function executeJobOptions({ retry, jobExpireSeconds }: QueuePolicy): SendOptions {
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
function creditReturnJobOptions({ retry, jobExpireSeconds }: QueuePolicy): SendOptions {
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

/** Every minute: the sweeper, hold expiry, the standing-order scheduler, the restart of the provider feed's poll chain. */
export const EVERY_MINUTE = '* * * * *';

/** Hourly, at a minute no other schedule uses: retention. */
export const HOURLY_AT_17 = '17 * * * *';

/**
 * Daily at 03:30 UTC: after London midnight whether it is GMT or BST, so "yesterday in London" is
 * a whole day that has ended: the reconciliation with the provider's settlement report.
 */
export const DAILY_AT_0330_UTC = '30 3 * * *';

/** A reconciliation of one London day; a scheduled run (no date) reconciles yesterday's. */
export const reconcileDayJob = z
  .object({
    date: z
      .string()
      .regex(/^\d{4}-\d{2}-\d{2}$/)
      .optional(),
  })
  .nullish();
export type ReconcileDayJob = z.infer<typeof reconcileDayJob>;

/** A job that carries nothing: a scheduled run, or a run asked for at once. */
export const noPayload = z.object({}).nullish();

/** The shape of one job as its handler sees it: the claim's id and how many claims came before it. */
export type JobClaim = Pick<Job<unknown>, 'id' | 'retryCount'>;

/**
 * How a queue's jobs are consumed (src/jobs/worker.ts):
 * - `bounded`: our own fetch loop with at most `capacity(concurrency)` jobs in flight, each
 *   completed or failed on its own (ADR 0010); a settlement the provider could not be called for is
 *   put off without spending a retry (ADR 0005).
 * - `batch`: pg-boss `work`, a few jobs per batch, one result per job (a malformed one dead-letters).
 * - `single`: pg-boss `work`, one job at a time; scheduled runs and runs asked for at once.
 * - `chain`: each run queues the next one `providerEventsPollSeconds` later (a stately queue keeps
 *   one waiting), and the schedule restarts the chain should every worker have been down.
 * - `grouped`: pg-boss `work` with at most `endpointConcurrency` jobs of one group (endpoint) in
 *   this process, so a slow endpoint holds only its own slots.
 *
 * `polling`: how often an idle queue is looked at: `busy` is the process's polling interval,
 * `idle` a slower one for what only a schedule sends, or a fixed number of seconds.
 */
export type Consumer =
  | { kind: 'bounded'; capacity: (concurrency: number) => number }
  | { kind: 'batch' }
  | { kind: 'single'; polling: 'busy' | 'idle' | number }
  | { kind: 'chain' }
  | { kind: 'grouped' };

/** One queue: its name, its payload, how it is created, how its jobs are sent and run, and when it is scheduled. */
export interface JobDefinition<T> {
  name: string;
  /** Parsed when a job is read back, and the type of what is sent. */
  payload: z.ZodType<T>;
  /** The queue's own options, set when it is created. */
  queue: (policy: QueuePolicy) => Omit<Queue, 'name'>;
  /** Options of every job sent to it (and of its scheduled jobs), when they differ from the queue's. */
  job?: (policy: QueuePolicy) => SendOptions;
  /** A named cron schedule (pg-boss sends one job per tick, whichever process scheduled it). */
  schedule?: string;
  consumer: Consumer;
}

/**
 * The registry: every queue, declared once, in the order they are created (a dead-letter queue
 * before the queue that names it). Handlers are given by name to `startJobs` (src/jobs/worker.ts);
 * jobs are sent only through the helpers of src/jobs/enqueue.ts.
 *
 * No queue notifies (pg-boss's default; the money queues say so, as databases made before had it
 * on): pg-boss would NOTIFY inside the sender's transaction (the payment's), and every NOTIFY-ing
 * commit takes PostgreSQL's one notification-queue lock (ADR 0006). No process LISTENs; workers poll.
 */
export const JOBS = {
  /**
   * The dead-letter queue of `payment.settle`. When the retries run out, it resolves the payment
   * for good: completed if the provider has it, otherwise voided there and refunded. It keeps
   * trying at a steady pace for as long as the provider cannot be reached. (pg-boss copies a
   * dead-lettered job's retry policy from this queue but not retryDelayMax, so backoff would be
   * uncapped here.)
   */
  reconcile: {
    name: 'payment.reconcile',
    payload: settlePaymentJob,
    queue: ({ retry, jobExpireSeconds }) => ({
      retryLimit: 1_000_000,
      retryDelay: Math.min(retry.delayMaxSeconds, 60),
      retryBackoff: false,
      expireInSeconds: jobExpireSeconds,
      retentionSeconds: WAITING_JOB_RETENTION_SECONDS,
    }),
    consumer: { kind: 'bounded', capacity: (concurrency) => Math.max(1, Math.min(concurrency, 16)) },
  },
  /**
   * Created in the same transaction as the payment (or its approval, or its day's debit); asks the
   * provider and settles the payment. Transient failures retry with exponential backoff.
   */
  settle: {
    name: 'payment.settle',
    payload: settlePaymentJob,
    queue: (policy) => ({ ...settleJobOptions(policy), notify: false }),
    job: settleJobOptions,
    consumer: { kind: 'bounded', capacity: (concurrency) => concurrency },
  },
  /**
   * Re-enqueues PENDING payments that have no live job, and SCHEDULED payments that have no
   * execution job (src/jobs/sweeper.ts). A sweep that fails is simply run again by the next minute's.
   */
  sweep: {
    name: 'payment.sweep',
    payload: noPayload,
    queue: () => ({ retryLimit: 0, expireInSeconds: 120, deleteAfterSeconds: 3600 }),
    schedule: EVERY_MINUTE,
    consumer: { kind: 'single', polling: 30 },
  },
  /** Deletes payment events older than EVENT_RETENTION_DAYS. A singleton: one prune at a time across every worker. */
  pruneEvents: {
    name: 'events.prune',
    payload: noPayload,
    queue: () => ({ policy: 'singleton', retryLimit: 3, expireInSeconds: 15 * 60 }),
    schedule: HOURLY_AT_17,
    // pg-boss's default.
    consumer: { kind: 'single', polling: 2 },
  },
  /**
   * One attempt to POST one event to one endpoint, grouped by endpoint. Failed attempts schedule
   * the next one themselves (src/webhooks/deliver.ts); pg-boss retries only a job whose worker died
   * or errored (its per-job options: `webhookJobOptions`).
   */
  deliverWebhook: {
    name: 'webhook.deliver',
    payload: deliverWebhookJob,
    queue: () => ({ notify: false, retentionSeconds: 7 * 24 * 3600 }),
    consumer: { kind: 'grouped' },
  },
  /**
   * Rejects payments HELD for HOLD_MAX_HOURS, money back. Like the sweep: a run that fails is done
   * by the next minute's; each rejection is guarded by status, so two runs at once are harmless.
   */
  expireHolds: {
    name: 'payment.expire-holds',
    payload: noPayload,
    queue: () => ({ retryLimit: 0, expireInSeconds: 120, deleteAfterSeconds: 3600 }),
    schedule: EVERY_MINUTE,
    consumer: { kind: 'single', polling: 'idle' },
  },
  /**
   * Created with a SCHEDULED payment, due (`startAfter`) when its London day begins; runs the
   * guarded debit (SCHEDULED -> PENDING and a settlement job) or fails it for funds.
   */
  execute: {
    name: 'payment.execute',
    payload: executePaymentJob,
    queue: (policy) => ({ ...executeJobOptions(policy), notify: false }),
    job: executeJobOptions,
    consumer: { kind: 'batch' },
  },
  /**
   * Creates every due standing-order occurrence as a SCHEDULED payment, each exactly once; every
   * minute and at once after an order due today is created. A run that fails is replaced by the next.
   */
  standingOrders: {
    name: 'standing-orders.due',
    payload: noPayload,
    queue: () => ({ retryLimit: 0, expireInSeconds: 120, deleteAfterSeconds: 3600 }),
    schedule: EVERY_MINUTE,
    consumer: { kind: 'single', polling: 'busy' },
  },
  /**
   * One poll of the provider's event feed at a time: applies returns and inbound credits, then
   * queues the next poll. One waiting and one running at most (stately): every worker may queue the
   * next poll, and a duplicate is refused by pg-boss. A poll that fails is simply replaced.
   */
  providerEvents: {
    name: 'provider.events',
    payload: noPayload,
    queue: (policy) => ({
      policy: 'stately',
      retryLimit: 0,
      expireInSeconds: providerEventsExpireSeconds(policy),
      deleteAfterSeconds: 3600,
    }),
    // This process's expiry, not the queue's (made by whichever process came first): a poll whose
    // worker died must not hold the feed for long.
    job: (policy) => ({ expireInSeconds: providerEventsExpireSeconds(policy) }),
    schedule: EVERY_MINUTE,
    consumer: { kind: 'chain' },
  },
  /** Sends an inbound credit for no account of ours back to the provider, retried until the provider confirms. */
  creditReturn: {
    name: 'provider.credit-return',
    payload: creditReturnJob,
    queue: (policy) => ({ ...creditReturnJobOptions(policy), notify: false }),
    job: creditReturnJobOptions,
    consumer: { kind: 'batch' },
  },
  /**
   * Reconciles a London day against the provider's settlement report (src/ledger/reconciliation.ts):
   * yesterday's, daily. Idempotent (each break is recorded once), so a failed run is retried with
   * backoff, and one at a time is enough (singleton).
   */
  reconcileDay: {
    name: 'reconciliation.day',
    payload: reconcileDayJob,
    queue: () => ({
      policy: 'singleton',
      retryLimit: 12,
      retryDelay: 300,
      retryBackoff: true,
      retryDelayMax: 3600,
      expireInSeconds: 600,
      deleteAfterSeconds: 7 * 24 * 3600,
    }),
    schedule: DAILY_AT_0330_UTC,
    consumer: { kind: 'single', polling: 'idle' },
  },
} as const satisfies Record<string, JobDefinition<unknown>>;

export type QueueKey = keyof typeof JOBS;

/** The payload type of a queue, from its schema. */
export type PayloadOf<K extends QueueKey> = z.infer<(typeof JOBS)[K]['payload']>;

/** The queue names, by key. */
export const QUEUES = Object.fromEntries(Object.entries(JOBS).map(([key, job]) => [key, job.name])) as {
  readonly [K in QueueKey]: (typeof JOBS)[K]['name'];
};

/**
 * The handlers, one per queue (graphile-worker's task list): each gets its payload, parsed, and
 * its claim. What a handler throws fails the job, which its queue's policy retries.
 */
export type JobHandlers = { [K in QueueKey]: (data: PayloadOf<K>, job: JobClaim) => Promise<void> };

/** Creates the queues if they are missing. Safe to call from every process at start-up. */
export async function createQueues(boss: PgBoss, policy: QueuePolicy): Promise<void> {
  for (const job of Object.values(JOBS)) await boss.createQueue(job.name, job.queue(policy));
  // Queues created before the retention was set keep their default for jobs sent without one.
  await boss.updateQueue(JOBS.settle.name, { retentionSeconds: WAITING_JOB_RETENTION_SECONDS });
}

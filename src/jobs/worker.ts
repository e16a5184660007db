import { setTimeout as sleep } from 'node:timers/promises';
import { fromPrisma, type Job, type JobResult, type PgBoss } from 'pg-boss';
import { z } from 'zod';
import type { PrismaClient } from '../db/prisma.ts';
import type { Logger } from '../logger.ts';
import { Deferred, RetryLater } from '../payments/settlement.ts';
import { withTraceFrom } from '../telemetry/propagation.ts';
import { enqueueSettlement } from './enqueue.ts';
import {
  deferralDelaySeconds,
  JOBS,
  type JobDefinition,
  type JobHandlers,
  type QueueKey,
  type QueuePolicy,
  type SettlePaymentJob,
} from './queues.ts';

/** Most jobs claimed by one fetch: a large backlog is taken in steps, not all at once. */
const MAX_FETCH = 100;

/** How long `stop()` lets jobs in flight finish; any still running then expire back to the queue. */
const STOP_GRACE_MS = 15_000;

/** Jobs of the `batch` queues per pg-boss batch: their jobs are small and quick (no provider call waits in a batch). */
const BATCH_SIZE = 4;

export interface RunningJobs {
  /** Jobs being run right now by the `bounded` consumers, per queue. */
  inFlight(): Record<string, number>;
  /** Stops fetching, lets the jobs in flight finish (up to 15 s), then returns. */
  stop(): Promise<void>;
}

export interface JobsOptions {
  boss: PgBoss;
  /** For the rescheduler's transaction (a deferred settlement's successor). */
  prisma: PrismaClient;
  policy: QueuePolicy;
  logger: Logger;
  /** Settlement jobs in flight in this process (WORKER_CONCURRENCY); other queues take a share of it. */
  concurrency: number;
  /** How often an idle queue is looked at again: `busy` for queues sent to by requests, `idle` for what only a schedule sends. */
  polling: { busySeconds: number; idleSeconds: number };
  /** Pause between two polls of the provider's event feed. */
  providerEventsPollSeconds: number;
  /** Webhook deliveries in flight in this process, and of those at most `endpointConcurrency` per endpoint. */
  webhooks: { concurrency: number; endpointConcurrency: number };
}

/**
 * Starts the worker process's jobs: a consumer for every queue of the registry (src/jobs/queues.ts),
 * as its definition says, and every schedule. Every queue has a handler (the type says so).
 */
export function startJobs(options: JobsOptions & { handlers: JobHandlers }): Promise<RunningJobs> {
  return startConsumers(options);
}

/**
 * Starts consumers (and schedules) for the queues given a handler, and only those: the worker
 * process gives them all (`startJobs`); a test may run a part of the worker on its own.
 */
export async function startConsumers(options: JobsOptions & { handlers: Partial<JobHandlers> }): Promise<RunningJobs> {
  const { boss, handlers } = options;
  const bounded: Array<{ name: string; consumer: ReturnType<typeof consumeQueue> }> = [];
  for (const key of Object.keys(JOBS) as QueueKey[]) {
    const handler = handlers[key] as Handler | undefined;
    if (!handler) continue;
    const definition: JobDefinition<unknown> = JOBS[key];
    const consumer = await startConsumer(options, key, definition, handler);
    if (consumer) bounded.push({ name: definition.name, consumer });
    if (definition.schedule) await boss.schedule(definition.name, definition.schedule, {}, definition.job?.(options.policy));
  }
  return {
    inFlight: () => Object.fromEntries(bounded.map(({ name, consumer }) => [name, consumer.inFlight()])),
    async stop() {
      await Promise.all(bounded.map(({ consumer }) => consumer.stop()));
    },
  };
}

type Handler = (data: unknown, job: Job<unknown>) => Promise<void>;

/** Starts one queue's consumer; returns it when this process runs its fetch loop itself (`bounded`). */
async function startConsumer(options: JobsOptions, key: QueueKey, definition: JobDefinition<unknown>, handler: Handler) {
  const { boss, logger, policy } = options;
  const { name, payload, consumer } = definition;
  const busy = options.polling.busySeconds;
  switch (consumer.kind) {
    case 'bounded':
      return consumeQueue({
        boss,
        logger,
        queue: name,
        capacity: consumer.capacity(options.concurrency),
        pollingIntervalSeconds: busy,
        run: createSettlementRunner(options, key, handler),
      });
    case 'batch': {
      const workOptions = {
        batchSize: BATCH_SIZE,
        pollingIntervalSeconds: busy,
        localConcurrency: Math.max(1, Math.min(4, Math.ceil(options.concurrency / BATCH_SIZE))),
        perJobResults: true,
      } as const;
      await boss.work(name, workOptions, async (jobs: Job<unknown>[]) =>
        Promise.all(
          jobs.map(async (job): Promise<JobResult> => {
            const data = payload.safeParse(job.data);
            if (!data.success) {
              logger.error({ jobId: job.id, queue: name, issues: data.error.issues }, 'malformed job payload');
              return { id: job.id, status: 'deadletter', output: { error: 'malformed payload' } };
            }
            try {
              await handler(data.data, job);
              return { id: job.id, status: 'completed' };
            } catch (error) {
              logger.warn({ jobId: job.id, queue: name, err: error }, 'job failed; will retry');
              return { id: job.id, status: 'failed', output: { error: error instanceof Error ? error.message : String(error) } };
            }
          }),
        ),
      );
      return null;
    }
    case 'single': {
      const pollingIntervalSeconds =
        consumer.polling === 'busy' ? busy : consumer.polling === 'idle' ? options.polling.idleSeconds : consumer.polling;
      await boss.work(name, { pollingIntervalSeconds }, async (jobs: Job<unknown>[]) => {
        for (const job of jobs) await runParsed(logger, definition, handler, job);
      });
      return null;
    }
    case 'chain': {
      // Each poll queues the next one (the queue is stately, so all workers together keep one
      // waiting); the schedule restarts the chain should every worker have been down. A next run
      // that cannot be queued (the database is away, or failing over) is tried again every poll
      // interval until it is or the queue stops: the chain resumes within an interval of the
      // database coming back, not at the schedule's next minute.
      const jobOptions = definition.job?.(policy) ?? {};
      const intervalMs = options.providerEventsPollSeconds * 1000;
      let stopped = false;
      boss.once('stopped', () => {
        stopped = true;
      });
      const next = async (): Promise<void> => {
        if (stopped) return;
        try {
          await boss.send(name, {}, { ...jobOptions, startAfter: options.providerEventsPollSeconds });
        } catch (error) {
          if (stopped) return;
          logger.warn({ err: error, queue: name }, 'could not queue the next run of a chained job; trying again');
          setTimeout(() => void next(), intervalMs).unref();
        }
      };
      await boss.work(name, { pollingIntervalSeconds: busy }, async (jobs: Job<unknown>[]) => {
        try {
          for (const job of jobs) await runParsed(logger, definition, handler, job);
        } finally {
          await next();
        }
      });
      await boss.send(name, {}, jobOptions);
      return null;
    }
    case 'grouped': {
      await boss.work(
        name,
        {
          batchSize: 1,
          localConcurrency: options.webhooks.concurrency,
          // Exact within this process (pg-boss tracks it in memory and skips full groups when fetching).
          // The database-tracked groupConcurrency was measured letting a third job through under
          // concurrent fetches, and pg-boss allows only one of the two.
          localGroupConcurrency: options.webhooks.endpointConcurrency,
          pollingIntervalSeconds: busy,
          notifyPollingIntervalSeconds: busy,
        },
        async ([job]: Job<unknown>[]) => {
          if (job) await runParsed(logger, definition, handler, job);
        },
      );
      return null;
    }
  }
}

/** Runs the handler on a job's parsed payload; a malformed payload can never succeed: logged loudly, and the job ends. */
async function runParsed(logger: Logger, definition: JobDefinition<unknown>, handler: Handler, job: Job<unknown>): Promise<void> {
  const data = definition.payload.safeParse(job.data);
  if (!data.success) {
    logger.error({ jobId: job.id, queue: definition.name, issues: data.error.issues }, 'malformed job payload');
    return;
  }
  await handler(data.data, job);
}

/**
 * One attempt at one settlement (or reconciliation) job, settled with pg-boss on its own (fenced
 * to this attempt), in the trace of the request that made the payment.
 */
function createSettlementRunner(options: JobsOptions, key: QueueKey, handler: Handler) {
  const { boss, logger } = options;
  const queue = JOBS[key].name;
  const reschedule = createRescheduler(options);
  return async (job: Job<unknown>): Promise<void> => {
    const attempt = { id: job.id, retryCount: job.retryCount };
    const data = JOBS.settle.payload.safeParse(job.data);
    if (!data.success) {
      // A malformed payload can never succeed (and names no payment to reconcile): log it loudly, end it.
      logger.error({ jobId: job.id, queue, issues: data.error.issues }, 'malformed job payload; job cancelled');
      await boss.cancel(queue, job.id);
      return;
    }
    const log = logger.child({ jobId: job.id, paymentId: data.data.paymentId, queue, retryCount: job.retryCount });
    try {
      await withTraceFrom(data.data.trace, queue, { 'payment.id': data.data.paymentId, 'job.id': job.id }, () => handler(data.data, job));
    } catch (error) {
      if (error instanceof Deferred && key === 'settle') {
        // Completed (or, had its claim lapsed, left alone) by the rescheduling transaction.
        await reschedule(job, data.data, error, log);
        return;
      }
      if (error instanceof RetryLater) log.warn({ reason: error.message }, 'provider unavailable; will retry');
      else log.error({ err: error }, 'settlement attempt failed; will retry');
      await boss.fail(queue, attempt, { error: error instanceof Error ? error.message : String(error) });
      return;
    }
    await boss.complete(queue, attempt);
  };
}

/**
 * Consumes one queue with at most `capacity` jobs in flight. As soon as any one job ends, its slot
 * is refilled, so one slow provider call holds back nothing but itself (pg-boss's `work()` waits
 * for a whole batch before it fetches again). Fetches claim only as many jobs as there are free
 * slots, so a job's expiry (`jobExpireSeconds`) runs from when it really starts: a dead worker's
 * jobs are handed on as before. While slots are full it waits for one to free up (no polling), and
 * when a fetch comes back short the queue is drained, so it looks again after the polling interval.
 */
function consumeQueue(options: {
  boss: PgBoss;
  logger: Logger;
  queue: string;
  capacity: number;
  pollingIntervalSeconds: number;
  run: (job: Job<unknown>) => Promise<void>;
}) {
  const { boss, logger, queue, capacity } = options;
  // Refill once a few slots are free, so a busy queue is not fetched one job at a time.
  const refillAt = Math.max(1, Math.min(16, Math.floor(capacity / 8)));
  const inFlight = new Set<Promise<void>>();
  const stopping = new AbortController();
  let slotFreed: (() => void) | null = null;

  const start = (job: Job<unknown>) => {
    const running: Promise<void> = options
      .run(job)
      .catch((error: unknown) => {
        // Settling the job with pg-boss failed (the database is unreachable): it stays claimed,
        // expires and is retried, and the retry asks the provider first.
        logger.error({ err: error, jobId: job.id, queue }, 'could not record a job outcome; the job will expire and be retried');
      })
      .finally(() => {
        inFlight.delete(running);
        slotFreed?.();
      });
    inFlight.add(running);
  };

  const waitForSlot = () =>
    new Promise<void>((resolve) => {
      slotFreed = () => {
        slotFreed = null;
        resolve();
      };
    });

  const pause = (ms: number) => sleep(ms, undefined, { signal: stopping.signal }).catch(() => undefined);

  const loop = (async () => {
    while (!stopping.signal.aborted) {
      const free = capacity - inFlight.size;
      if (free < refillAt) {
        await waitForSlot();
        continue;
      }
      const wanted = Math.min(free, MAX_FETCH);
      let jobs: Job<unknown>[];
      try {
        jobs = await boss.fetch<unknown>(queue, { batchSize: wanted });
      } catch (error) {
        logger.error({ err: error, queue }, 'fetching jobs failed; trying again');
        await pause(options.pollingIntervalSeconds * 1000);
        continue;
      }
      for (const job of jobs) start(job);
      if (jobs.length < wanted) await pause(options.pollingIntervalSeconds * 1000);
    }
  })();

  return {
    inFlight: () => inFlight.size,
    async stop() {
      stopping.abort();
      slotFreed?.();
      await loop;
      const grace = sleep(STOP_GRACE_MS, undefined, { ref: false });
      await Promise.race([Promise.allSettled([...inFlight]), grace]);
      if (inFlight.size > 0) logger.warn({ queue, inFlight: inFlight.size }, 'stopped with jobs in flight; they expire back to the queue');
    },
  };
}

const commandResponse = z.object({ affected: z.number() });

/**
 * Puts off a settlement whose provider could not be called, without spending a retry: in one
 * transaction, completes this job (fenced to this attempt) and enqueues its successor for when the
 * provider can be called again, carrying the retries spent so far (pg-boss would otherwise count a
 * failed attempt against the retry limit) and the predecessor's trace. Only one job per payment is
 * live at any time: the successor is sent only if this attempt still held the job.
 */
function createRescheduler(deps: { boss: PgBoss; prisma: PrismaClient; policy: QueuePolicy }) {
  const { boss, prisma, policy } = deps;
  return async (job: Job<unknown>, data: SettlePaymentJob, deferred: Deferred, log: Logger): Promise<void> => {
    const retriesSpent = (data.retriesSpent ?? 0) + job.retryCount;
    const deferrals = (data.deferrals ?? 0) + 1;
    const delay = deferralDelaySeconds(policy.retry, deferred.resumeInSeconds, deferrals - 1);
    const next: SettlePaymentJob = { paymentId: data.paymentId, retriesSpent, deferrals, ...(data.trace ? { trace: data.trace } : {}) };
    const sent = await prisma.$transaction(async (tx) => {
      const done = commandResponse.parse(
        await boss.complete(
          JOBS.settle.name,
          { id: job.id, retryCount: job.retryCount },
          { deferred: deferred.message },
          { db: fromPrisma(tx) },
        ),
      );
      if (done.affected !== 1) return false;
      await enqueueSettlement(boss, tx, policy, next, {
        fresh: true,
        retryLimit: Math.max(0, policy.retry.limit - retriesSpent),
        startAfter: new Date(Date.now() + delay * 1000),
      });
      return true;
    });
    log.warn(
      { reason: deferred.message, delaySeconds: delay, retriesSpent, deferrals, rescheduled: sent },
      'provider not callable; settlement put off without spending a retry',
    );
  };
}

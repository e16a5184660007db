import { setTimeout as sleep } from 'node:timers/promises';
import { fromPrisma, type Job, type JobResult, type PgBoss } from 'pg-boss';
import { z } from 'zod';
import type { PrismaClient } from '../db/prisma.ts';
import type { Logger } from '../logger.ts';
import { systemClock, type Clock } from '../calendar.ts';
import type { ProviderFeed } from '../payments/provider-feed.ts';
import type { ScheduledExecution } from '../payments/scheduled.ts';
import { Deferred, RetryLater, type Settlement } from '../payments/settlement.ts';
import { withTraceFrom } from '../telemetry/propagation.ts';
import type { StandingOrders } from '../payments/standing-orders.ts';
import { sweepOrphanedPayments } from './sweeper.ts';
import {
  creditReturnJob,
  deferralDelaySeconds,
  executePaymentJob,
  providerEventsExpireSeconds,
  QUEUES,
  settleJobOptions,
  settlePaymentJob,
  STANDING_ORDERS_CRON,
  type QueuePolicy,
  type SettlePaymentJob,
} from './queues.ts';

/** Most jobs claimed by one fetch: a large backlog is taken in steps, not all at once. */
const MAX_FETCH = 100;

/** How long `stop()` lets jobs in flight finish; any still running then expire back to the queue. */
const STOP_GRACE_MS = 15_000;

export interface RunningWorkers {
  /** Jobs being settled right now, per queue. */
  inFlight(): Record<string, number>;
  /** Stops fetching, lets the jobs in flight finish (up to 15 s), then returns. */
  stop(): Promise<void>;
}

/**
 * Subscribes the settlement and reconciliation handlers. Each queue is consumed with a bounded set
 * of jobs in flight (`concurrency` for settlement): as soon as any one job ends, its slot is
 * refilled, so one slow provider call holds back nothing but itself (pg-boss's `work()` waits for a
 * whole batch before it fetches again). A job is claimed only when a slot is free, so its expiry
 * (`jobExpireSeconds`) runs from when it really starts: a dead worker's jobs are handed on as before.
 */
export async function startWorkers(deps: {
  boss: PgBoss;
  prisma: PrismaClient;
  queue: QueuePolicy;
  settlement: Settlement;
  /** For the sweeper's SCHEDULED payments; the system clock by default. */
  clock?: Clock;
  logger: Logger;
  concurrency: number;
  /** How often an idle queue is looked at again for new jobs and due retries. */
  pollingIntervalSeconds: number;
  /** The sweeper re-enqueues PENDING payments without a live job once they are this old. */
  sweepMinAgeSeconds: number;
}): Promise<RunningWorkers> {
  const { boss, settlement, logger } = deps;
  const reschedule = createRescheduler(deps);

  /** One attempt at one job, settled with pg-boss on its own (fenced to this attempt). */
  const runOne = async (queue: string, run: (data: SettlePaymentJob, job: Job<unknown>) => Promise<void>, job: Job<unknown>): Promise<void> => {
    const attempt = { id: job.id, retryCount: job.retryCount };
    const data = settlePaymentJob.safeParse(job.data);
    if (!data.success) {
      // A malformed payload can never succeed (and names no payment to reconcile): log it loudly, end it.
      logger.error({ jobId: job.id, queue, issues: data.error.issues }, 'malformed job payload; job cancelled');
      await boss.cancel(queue, job.id);
      return;
    }
    const log = logger.child({ jobId: job.id, paymentId: data.data.paymentId, queue, retryCount: job.retryCount });
    try {
      await withTraceFrom(data.data.trace, queue, { 'payment.id': data.data.paymentId, 'job.id': job.id }, () => run(data.data, job));
    } catch (error) {
      if (error instanceof Deferred && queue === QUEUES.settle) {
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

  const settleQueue = consumeQueue({
    boss,
    logger,
    queue: QUEUES.settle,
    capacity: deps.concurrency,
    pollingIntervalSeconds: deps.pollingIntervalSeconds,
    run: (job) =>
      runOne(QUEUES.settle, (data) => settlement.settle(data.paymentId, { askFirst: mayHaveRunBefore(data, job) }), job),
  });
  const reconcileQueue = consumeQueue({
    boss,
    logger,
    queue: QUEUES.reconcile,
    capacity: Math.max(1, Math.min(deps.concurrency, 16)),
    pollingIntervalSeconds: deps.pollingIntervalSeconds,
    run: (job) => runOne(QUEUES.reconcile, (data) => settlement.reconcile(data.paymentId), job),
  });

  // Every minute, one sweep (pg-boss sends one job per tick whoever schedules it; the sweep itself
  // holds an advisory lock) finds PENDING payments that lost their job.
  await boss.schedule(QUEUES.sweep, '* * * * *');
  await boss.work(QUEUES.sweep, { pollingIntervalSeconds: 30 }, async () => {
    await sweepOrphanedPayments({ prisma: deps.prisma, boss, queue: deps.queue, minAgeSeconds: deps.sweepMinAgeSeconds, clock: deps.clock ?? systemClock, logger });
  });

  return {
    inFlight: () => ({ [QUEUES.settle]: settleQueue.inFlight(), [QUEUES.reconcile]: reconcileQueue.inFlight() }),
    async stop() {
      await Promise.all([settleQueue.stop(), reconcileQueue.stop()]);
    },
  };
}

/**
 * Whether this job may have reached the provider before, so the provider must be asked before the
 * payment is created (the crash-recovery rule: ask before you create when in doubt). Only a job on
 * its very first claim, never retried, deferred or re-enqueued, cannot have: pg-boss counts every
 * claim after the first in `retryCount`, including the one after a dead worker's job expired.
 */
export function mayHaveRunBefore(data: SettlePaymentJob, job: Pick<Job<unknown>, 'retryCount'>): boolean {
  return job.retryCount > 0 || data.retriesSpent !== undefined || data.deferrals !== undefined || data.swept === true;
}

/**
 * Consumes one queue with at most `capacity` jobs in flight. Fetches claim only as many jobs as
 * there are free slots; while slots are full it waits for one to free up (no polling), and when a
 * fetch comes back short the queue is drained, so it looks again after the polling interval.
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

/**
 * Scheduled payments on their day, the standing-order scheduler, the provider's event feed and the
 * return of credits we cannot take. Each job validates its payload; a failure is retried by its
 * queue's policy (a failed scheduler run or feed poll is simply replaced by the next).
 */
export async function startMoneyMovementWorkers(deps: {
  boss: PgBoss;
  queue: QueuePolicy;
  scheduled: ScheduledExecution;
  standingOrders: StandingOrders;
  providerFeed: ProviderFeed;
  /** Pause between two polls of the provider's event feed. */
  providerEventsPollSeconds: number;
  logger: Logger;
  concurrency: number;
  pollingIntervalSeconds: number;
}): Promise<void> {
  const { boss, logger } = deps;
  // These queues are small and their jobs quick (no provider call waits in a batch): pg-boss's own
  // batches do, a few at a time.
  const batchSize = 4;
  const options = {
    batchSize,
    pollingIntervalSeconds: deps.pollingIntervalSeconds,
    localConcurrency: Math.max(1, Math.min(4, Math.ceil(deps.concurrency / batchSize))),
  };
  const each =
    <T>(queue: string, schema: z.ZodType<T>, run: (data: T) => Promise<void>) =>
    async (jobs: Job<unknown>[]): Promise<JobResult[]> =>
      Promise.all(
        jobs.map(async (job): Promise<JobResult> => {
          const data = schema.safeParse(job.data);
          if (!data.success) {
            logger.error({ jobId: job.id, queue, issues: data.error.issues }, 'malformed job payload');
            return { id: job.id, status: 'deadletter', output: { error: 'malformed payload' } };
          }
          try {
            await run(data.data);
            return { id: job.id, status: 'completed' };
          } catch (error) {
            logger.warn({ jobId: job.id, queue, err: error }, 'job failed; will retry');
            return { id: job.id, status: 'failed', output: { error: error instanceof Error ? error.message : String(error) } };
          }
        }),
      );
  const perJob = { ...options, perJobResults: true } as const;
  await boss.work(QUEUES.execute, perJob, each(QUEUES.execute, executePaymentJob, ({ paymentId }) => deps.scheduled.execute(paymentId)));
  await boss.work(QUEUES.creditReturn, perJob, each(QUEUES.creditReturn, creditReturnJob, ({ creditId }) => deps.providerFeed.returnCredit(creditId)));

  await boss.work(QUEUES.standingOrders, { pollingIntervalSeconds: options.pollingIntervalSeconds }, async () => {
    await deps.standingOrders.runDue();
  });
  await boss.schedule(QUEUES.standingOrders, STANDING_ORDERS_CRON);

  // The feed is polled by a chain of jobs: each poll queues the next one `providerEventsPollSeconds`
  // later (the queue is stately, so all workers together keep one waiting). The minute's schedule
  // restarts the chain should every worker have been down.
  // This process's expiry, not the queue's (made by whichever process came first): a poll whose
  // worker died must not hold the feed for long.
  const pollOptions = { expireInSeconds: providerEventsExpireSeconds(deps.queue) };
  const nextPoll = () =>
    boss.send(QUEUES.providerEvents, {}, { ...pollOptions, startAfter: deps.providerEventsPollSeconds }).catch((error: unknown) => {
      logger.error({ err: error }, 'could not queue the next poll of the provider events');
    });
  await boss.work(QUEUES.providerEvents, { pollingIntervalSeconds: options.pollingIntervalSeconds }, async () => {
    try {
      const applied = await deps.providerFeed.poll();
      if (applied > 0) logger.info({ applied }, 'provider events applied');
    } catch (error) {
      logger.warn({ err: error }, 'polling the provider events failed; the next poll tries again');
    } finally {
      await nextPoll();
    }
  });
  await boss.schedule(QUEUES.providerEvents, '* * * * *', {}, pollOptions);
  await boss.send(QUEUES.providerEvents, {}, pollOptions);
}

const commandResponse = z.object({ affected: z.number() });

/**
 * Puts off a settlement whose provider could not be called, without spending a retry: in one
 * transaction, completes this job (fenced to this attempt) and enqueues its successor for when the
 * provider can be called again, carrying the retries spent so far (pg-boss would otherwise count a
 * failed attempt against the retry limit). Only one job per payment is live at any time: the
 * successor is sent only if this attempt still held the job.
 */
function createRescheduler(deps: { boss: PgBoss; prisma: PrismaClient; queue: QueuePolicy }) {
  const { boss, prisma, queue } = deps;
  return async (job: Job<unknown>, data: SettlePaymentJob, deferred: Deferred, log: Logger): Promise<void> => {
    const retriesSpent = (data.retriesSpent ?? 0) + job.retryCount;
    const deferrals = (data.deferrals ?? 0) + 1;
    const delay = deferralDelaySeconds(queue.retry, deferred.resumeInSeconds, deferrals - 1);
    const next: SettlePaymentJob = { paymentId: data.paymentId, retriesSpent, deferrals, ...(data.trace ? { trace: data.trace } : {}) };
    const sent = await prisma.$transaction(async (tx) => {
      const db = fromPrisma(tx);
      const done = commandResponse.parse(await boss.complete(QUEUES.settle, { id: job.id, retryCount: job.retryCount }, { deferred: deferred.message }, { db }));
      if (done.affected !== 1) return false;
      await boss.send(QUEUES.settle, next, {
        ...settleJobOptions(queue),
        retryLimit: Math.max(0, queue.retry.limit - retriesSpent),
        startAfter: new Date(Date.now() + delay * 1000),
        db,
      });
      return true;
    });
    log.warn({ reason: deferred.message, delaySeconds: delay, retriesSpent, deferrals, rescheduled: sent }, 'provider not callable; settlement put off without spending a retry');
  };
}

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

/** Jobs fetched at once by one fetch loop. */
const BATCH_SIZE = 4;

/**
 * Subscribes the settlement and reconciliation handlers. Each fetch takes a small batch and
 * settles its payments concurrently; each job succeeds or fails on its own (a failed one is
 * retried with the queue's backoff). While fetches come back full, the loop fetches again at once,
 * so a backlog drains at the speed of settlement, not of polling.
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
  /** How often idle workers look for due retries (new jobs wake them at once). */
  pollingIntervalSeconds: number;
  /** The sweeper re-enqueues PENDING payments without a live job once they are this old. */
  sweepMinAgeSeconds: number;
}): Promise<void> {
  const { boss, settlement, logger } = deps;
  const reschedule = createRescheduler(deps);

  const runOne = async (queue: string, run: (paymentId: string) => Promise<void>, job: Job<unknown>): Promise<JobResult> => {
    const data = settlePaymentJob.safeParse(job.data);
    if (!data.success) {
      // A malformed payload can never succeed: log it loudly and send it to the dead letter queue.
      logger.error({ jobId: job.id, queue, issues: data.error.issues }, 'malformed job payload');
      return { id: job.id, status: 'deadletter', output: { error: 'malformed payload' } };
    }
    const log = logger.child({ jobId: job.id, paymentId: data.data.paymentId, queue, retryCount: job.retryCount });
    try {
      await withTraceFrom(data.data.trace, queue, { 'payment.id': data.data.paymentId, 'job.id': job.id }, () => run(data.data.paymentId));
      return { id: job.id, status: 'completed' };
    } catch (error) {
      if (error instanceof Deferred && queue === QUEUES.settle) {
        await reschedule(job, data.data, error, log);
        // Already completed (or, had its claim lapsed, left alone) by the rescheduling transaction.
        return { id: job.id, status: 'completed' };
      }
      if (error instanceof RetryLater) log.warn({ reason: error.message }, 'provider unavailable; will retry');
      else log.error({ err: error }, 'settlement attempt failed; will retry');
      return { id: job.id, status: 'failed', output: { error: error instanceof Error ? error.message : String(error) } };
    }
  };
  const handle = (queue: string, run: (paymentId: string) => Promise<void>) => (jobs: Job<unknown>[]) =>
    Promise.all(jobs.map((job) => runOne(queue, run, job)));

  const options = {
    batchSize: BATCH_SIZE,
    perJobResults: true,
    burstWhenBatchFull: true,
    localConcurrency: Math.max(1, Math.ceil(deps.concurrency / BATCH_SIZE)),
    pollingIntervalSeconds: deps.pollingIntervalSeconds,
    notifyPollingIntervalSeconds: deps.pollingIntervalSeconds,
  } as const;
  await boss.work(QUEUES.settle, options, handle(QUEUES.settle, settlement.settle));
  await boss.work(QUEUES.reconcile, { ...options, localConcurrency: 1 }, handle(QUEUES.reconcile, settlement.reconcile));

  // Every minute, one sweep (pg-boss sends one job per tick whoever schedules it; the sweep itself
  // holds an advisory lock) finds PENDING payments that lost their job.
  await boss.schedule(QUEUES.sweep, '* * * * *');
  await boss.work(QUEUES.sweep, { pollingIntervalSeconds: 30 }, async () => {
    await sweepOrphanedPayments({ prisma: deps.prisma, boss, queue: deps.queue, minAgeSeconds: deps.sweepMinAgeSeconds, clock: deps.clock ?? systemClock, logger });
  });
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
  const options = {
    batchSize: BATCH_SIZE,
    pollingIntervalSeconds: deps.pollingIntervalSeconds,
    localConcurrency: Math.max(1, Math.ceil(deps.concurrency / BATCH_SIZE)),
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

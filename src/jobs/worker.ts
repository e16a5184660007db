import type { Job, JobResult, PgBoss } from 'pg-boss';
import type { Logger } from '../logger.ts';
import { RetryLater, type Settlement } from '../payments/settlement.ts';
import { QUEUES, settlePaymentJob } from './queues.ts';

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
  settlement: Settlement;
  logger: Logger;
  concurrency: number;
  /** How often idle workers look for due retries (new jobs wake them at once). */
  pollingIntervalSeconds: number;
}): Promise<void> {
  const { boss, settlement, logger } = deps;

  const runOne = async (queue: string, run: (paymentId: string) => Promise<void>, job: Job<unknown>): Promise<JobResult> => {
    const data = settlePaymentJob.safeParse(job.data);
    if (!data.success) {
      // A malformed payload can never succeed: log it loudly and send it to the dead letter queue.
      logger.error({ jobId: job.id, queue, issues: data.error.issues }, 'malformed job payload');
      return { id: job.id, status: 'deadletter', output: { error: 'malformed payload' } };
    }
    const log = logger.child({ jobId: job.id, paymentId: data.data.paymentId, queue, retryCount: job.retryCount });
    try {
      await run(data.data.paymentId);
      return { id: job.id, status: 'completed' };
    } catch (error) {
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
}

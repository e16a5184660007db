import type { Job, PgBoss } from 'pg-boss';
import type { Logger } from '../logger.ts';
import { RetryLater, type Settlement } from '../payments/settlement.ts';
import { QUEUES, settlePaymentJob } from './queues.ts';

/**
 * Subscribes the settlement and reconciliation handlers. Errors thrown from a handler make
 * pg-boss retry the job with the queue's backoff; transient ones are expected and logged quietly.
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

  const handle = (queue: string, run: (paymentId: string) => Promise<void>) => async (jobs: Job<unknown>[]) => {
    for (const job of jobs) {
      const data = settlePaymentJob.safeParse(job.data);
      if (!data.success) {
        // A malformed payload can never succeed: log it loudly and let it fail.
        logger.error({ jobId: job.id, queue, issues: data.error.issues }, 'malformed job payload');
        throw new Error(`malformed ${queue} job ${job.id}`);
      }
      const log = logger.child({ jobId: job.id, paymentId: data.data.paymentId, queue, retryCount: job.retryCount });
      try {
        await run(data.data.paymentId);
      } catch (error) {
        if (error instanceof RetryLater) log.warn({ reason: error.message }, 'provider unavailable; will retry');
        else log.error({ err: error }, 'settlement attempt failed; will retry');
        throw error;
      }
    }
  };

  const options = {
    batchSize: 1,
    localConcurrency: deps.concurrency,
    pollingIntervalSeconds: deps.pollingIntervalSeconds,
    notifyPollingIntervalSeconds: deps.pollingIntervalSeconds,
  };
  await boss.work(QUEUES.settle, options, handle(QUEUES.settle, settlement.settle));
  await boss.work(QUEUES.reconcile, { ...options, localConcurrency: 1 }, handle(QUEUES.reconcile, settlement.reconcile));
}

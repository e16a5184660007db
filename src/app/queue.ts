import { PgBoss } from 'pg-boss';
import type { Config } from '../config.ts';
import { createQueues, JOBS, type QueuePolicy } from '../jobs/queues.ts';
import type { Logger } from '../logger.ts';

/** The retry and expiry policy of the money queues, from the configuration. */
export const queuePolicy = (config: Config): QueuePolicy => ({ retry: config.retry, jobExpireSeconds: config.queue.jobExpireSeconds });

/** A started pg-boss with every queue of the registry created. Both processes start one. */
export async function startQueue(options: { databaseUrl: string; config: Config; logger: Logger }): Promise<PgBoss> {
  const boss = new PgBoss({
    connectionString: options.databaseUrl,
    application_name: 'payments-queue',
    max: 4,
    // No LISTEN: no queue notifies (that NOTIFY would run inside the payment's transaction, ADR 0006).
    useListenNotify: false,
    superviseIntervalSeconds: options.config.queue.superviseSeconds,
    monitorIntervalSeconds: options.config.queue.superviseSeconds,
  });
  boss.on('error', (error: unknown) => options.logger.error({ err: error }, 'pg-boss error'));
  await boss.start();
  await createQueues(boss, queuePolicy(options.config));
  return boss;
}

/** True when pg-boss can read the settlement queue through its own connection pool. */
export async function queueAnswers(boss: PgBoss): Promise<boolean> {
  return (await boss.getQueue(JOBS.settle.name)) !== null;
}

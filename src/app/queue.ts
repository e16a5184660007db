import { type ConstructorOptions, PgBoss } from 'pg-boss';
import type { Config } from '../config.ts';
import { connectionOptions } from '../db/connection.ts';
import { createQueues, JOBS, type QueuePolicy } from '../jobs/queues.ts';
import type { Logger } from '../logger.ts';

/** The retry and expiry policy of the money queues, from the configuration. */
export const queuePolicy = (config: Config): QueuePolicy => ({ retry: config.retry, jobExpireSeconds: config.queue.jobExpireSeconds });

/** A started pg-boss with every queue of the registry created. Both processes start one. */
export async function startQueue(options: { databaseUrl: string; config: Config; logger: Logger }): Promise<PgBoss> {
  // pg-boss hands these to its pg.Pool as they are (keepalive and the startup timeouts included).
  // Through a transaction pooler it needs nothing else: no LISTEN (below), only transaction-scoped
  // advisory locks and SET LOCAL (platform-notes.md).
  const bossOptions: ConstructorOptions = {
    connectionString: options.databaseUrl,
    max: 4,
    ...connectionOptions(options.config.database, { applicationName: 'payments-queue' }),
    // No LISTEN: no queue notifies (that NOTIFY would run inside the payment's transaction, ADR 0006).
    useListenNotify: false,
    superviseIntervalSeconds: options.config.queue.superviseSeconds,
    monitorIntervalSeconds: options.config.queue.superviseSeconds,
  };
  const boss = new PgBoss(bossOptions);
  // Its pool's idle-connection errors arrive here too: logged, never an uncaught 'error' event.
  boss.on('error', (error: unknown) => options.logger.error({ err: error }, 'pg-boss error'));
  await boss.start();
  await createQueues(boss, queuePolicy(options.config));
  return boss;
}

/** True when pg-boss can read the settlement queue through its own connection pool. */
export async function queueAnswers(boss: PgBoss): Promise<boolean> {
  return (await boss.getQueue(JOBS.settle.name)) !== null;
}

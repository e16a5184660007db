import type { PgBoss } from 'pg-boss';
import type { Config } from '../config.ts';
import type { PrismaClient } from '../db/prisma.ts';
import { deliverWebhookJob, QUEUES, webhookJobOptions } from '../jobs/queues.ts';
import type { Logger } from '../logger.ts';
import { observeGauge, sharedRead, type Metrics } from '../ops/metrics.ts';
import { createAddressGuard, type Resolver } from './address.ts';
import { createWebhookDelivery } from './deliver.ts';
import { startDispatcher } from './dispatcher.ts';
import type { Clock } from '../calendar.ts';

/**
 * The worker's half of webhooks: the dispatcher (event stream -> deliveries) and the
 * `webhook.deliver` handlers. Deliveries run on their own queue and fetch loops, so they never
 * take a settlement slot; at most `endpointConcurrency` run for one endpoint in each worker process
 * (pg-boss local group concurrency, keyed by endpoint), so a hanging endpoint holds only its own
 * slots and every other endpoint keeps `concurrency - endpointConcurrency` or more.
 */
export async function startWebhookWorker(deps: {
  config: Config;
  prisma: PrismaClient;
  boss: PgBoss;
  logger: Logger;
  metrics: Metrics;
  resolve: Resolver;
  clock: Clock;
  pollingIntervalSeconds: number;
}): Promise<{ stop(): Promise<void> }> {
  const { config, prisma, boss, metrics } = deps;
  const settings = config.webhooks;
  const logger = deps.logger.child({ component: 'webhooks' });
  const jobOptions = webhookJobOptions({ timeoutMs: settings.timeoutMs, jobExpireSeconds: config.queue.jobExpireSeconds });
  const delivery = createWebhookDelivery({
    prisma,
    boss,
    logger,
    metrics,
    guard: createAddressGuard({ strict: settings.strictUrls, resolve: deps.resolve }),
    secretKey: settings.secretKey,
    settings,
    jobOptions,
    clock: deps.clock,
  });
  await boss.work(
    QUEUES.deliverWebhook,
    {
      batchSize: 1,
      localConcurrency: settings.concurrency,
      // Exact within this process (pg-boss tracks it in memory and skips full groups when fetching).
      // The database-tracked groupConcurrency was measured letting a third job through under
      // concurrent fetches, and pg-boss allows only one of the two.
      localGroupConcurrency: settings.endpointConcurrency,
      pollingIntervalSeconds: deps.pollingIntervalSeconds,
      notifyPollingIntervalSeconds: deps.pollingIntervalSeconds,
    },
    async ([job]) => {
      if (!job) return;
      const data = deliverWebhookJob.safeParse(job.data);
      if (!data.success) {
        logger.error({ jobId: job.id, issues: data.error.issues }, 'malformed webhook job payload');
        return;
      }
      try {
        await delivery.attempt(job.id, data.data);
      } catch (error) {
        // Ours, not the endpoint's (the database, a secret that does not decrypt): pg-boss tries the job again.
        logger.error({ err: error, jobId: job.id, deliveryId: data.data.deliveryId }, 'webhook attempt failed on our side; will retry');
        throw error;
      }
    },
  );
  const dispatcher = startDispatcher({ prisma, boss, logger, jobOptions, intervalMs: settings.dispatchIntervalMs });

  const oldest = sharedRead(
    () => prisma.$queryRaw<{ age: number | null }[]>`
      SELECT extract(epoch FROM now() - min(event_occurred_at))::float8 AS age FROM webhook_deliveries WHERE status = 'PENDING'`,
    1_000,
  );
  observeGauge(
    metrics.registry,
    { name: 'payments_webhook_oldest_undelivered_event_age_seconds', help: 'Age of the oldest event still owed to a webhook endpoint (PENDING delivery); 0 when none' },
    async () => [{ value: (await oldest())[0]?.age ?? 0 }],
  );
  return { stop: () => dispatcher.stop() };
}

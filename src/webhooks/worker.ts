import type { PgBoss } from 'pg-boss';
import type { Clock } from '../calendar.ts';
import type { Config } from '../config.ts';
import type { PrismaClient } from '../db/prisma.ts';
import { webhookJobOptions } from '../jobs/queues.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../ops/metrics.ts';
import { createAddressGuard, type Resolver } from './address.ts';
import { createWebhookDelivery, type WebhookDelivery } from './deliver.ts';
import { startDispatcher } from './dispatcher.ts';

/**
 * The worker's half of webhooks: the dispatcher (event stream -> deliveries) and the delivery
 * attempts that the `webhook.deliver` jobs run (src/jobs/queues.ts). Deliveries run on their own
 * queue and consumer, so they never take a settlement slot; at most `endpointConcurrency` run for
 * one endpoint in each worker process, so a hanging endpoint holds only its own slots and every
 * other endpoint keeps `concurrency - endpointConcurrency` or more.
 */
export function startWebhookWorker(deps: {
  config: Config;
  /** WEBHOOK_SECRET_KEY: the key the endpoints' signing secrets are encrypted under. */
  secretKey: Buffer;
  prisma: PrismaClient;
  boss: PgBoss;
  logger: Logger;
  metrics: Metrics;
  resolve: Resolver;
  clock: Clock;
}): Pick<WebhookDelivery, 'attempt'> & { stop(): Promise<void> } {
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
    secretKey: deps.secretKey,
    settings,
    jobOptions,
    clock: deps.clock,
  });
  const dispatcher = startDispatcher({ prisma, boss, logger, jobOptions, intervalMs: settings.dispatchIntervalMs });
  return { attempt: delivery.attempt, stop: () => dispatcher.stop() };
}

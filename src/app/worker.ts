import type { PgBoss } from 'pg-boss';
import type { Clock } from '../calendar.ts';
import { type Config, requireWebhookSecretKey } from '../config.ts';
import { createPrisma, type PrismaClient } from '../db/prisma.ts';
import { createFailpoints } from '../failpoints.ts';
import { createPaymentJobs } from '../jobs/enqueue.ts';
import { createJobHandlers } from '../jobs/handlers.ts';
import { startJobs } from '../jobs/worker.ts';
import type { Logger } from '../logger.ts';
import { observeWorkerGauges } from '../ops/gauges.ts';
import { startOpsServer } from '../ops/http.ts';
import { createMetrics, type Metrics } from '../ops/metrics.ts';
import { createHoldService } from '../payments/holds.ts';
import { createProviderEvents } from '../payments/provider-events.ts';
import { createScheduledExecution } from '../payments/scheduled.ts';
import { createSettlement } from '../payments/settlement.ts';
import { createStandingOrders } from '../payments/standing-orders.ts';
import { createProviderClient } from '../provider/client.ts';
import { startWebhookWorker } from '../webhooks/worker.ts';
import { type ProcessOptions, processDefaults } from './defaults.ts';
import { queueAnswers, startQueue } from './queue.ts';

/**
 * The worker process: every job of the registry (settlement, scheduled payments, standing
 * orders, the provider's feed, webhooks, hold expiry, retention), built from a Config and an
 * explicit database URL. src/main-worker.ts runs one; the all-in-one start and the tests compose it too.
 */

export interface WorkerProcess {
  prisma: PrismaClient;
  boss: PgBoss;
  /** The worker's own /healthz, /readyz and /metrics, when started with `opsPort`. */
  opsUrl: string | null;
  stop(): Promise<void>;
}

export async function startWorkerProcess(
  options: ProcessOptions & {
    config: Config;
    databaseUrl: string;
    providerUrl: string;
    logger: Logger;
    metrics?: Metrics;
    /** Serve /healthz, /readyz and /metrics on this port (0: any free one). */
    opsPort?: number;
    /** The clock of webhook signatures and retry windows, when not `clock` (tests move it alone). */
    webhookClock?: Clock;
  },
): Promise<WorkerProcess> {
  const { config, databaseUrl } = options;
  // Before anything is started: a worker without its own key must not come up at all.
  const webhookSecretKey = requireWebhookSecretKey(config);
  const { clock, queue, polling, resolveHost } = processDefaults(config, options);
  const logger = options.logger.child({ process: 'worker' });
  const metrics = options.metrics ?? createMetrics();
  const prisma = createPrisma({
    databaseUrl,
    poolSize: Math.min(config.databasePoolSize, config.workerConcurrency + 2),
    applicationName: 'payments-worker',
    session: config.database,
    onError: (error) => logger.warn({ err: error }, 'database connection lost; the pool replaces it'),
  });
  const boss = await startQueue({ databaseUrl, config, logger });
  const provider = createProviderClient({
    baseUrl: options.providerUrl,
    apiKey: config.providerApiKey,
    timeoutMs: config.providerTimeoutMs,
    maxConnections: config.providerMaxConnections,
    metrics,
  });
  const failpoints = createFailpoints(config.failpoints);
  const jobs = createPaymentJobs({ boss, policy: queue, clock });
  const webhooks = startWebhookWorker({
    config,
    secretKey: webhookSecretKey,
    prisma,
    boss,
    logger,
    metrics,
    resolve: resolveHost,
    clock: options.webhookClock ?? clock,
  });
  const running = await startJobs({
    boss,
    prisma,
    policy: queue,
    logger,
    concurrency: config.workerConcurrency,
    polling,
    providerEventsPollSeconds: config.queue.providerEventsPollSeconds,
    webhooks: { concurrency: config.webhooks.concurrency, endpointConcurrency: config.webhooks.endpointConcurrency },
    handlers: createJobHandlers({
      boss,
      prisma,
      policy: queue,
      clock,
      logger,
      settlement: createSettlement({ prisma, provider, logger, metrics, failpoints }),
      scheduled: createScheduledExecution({ prisma, jobs, clock, policy: config.payeeSafety, logger, metrics }),
      standingOrders: createStandingOrders({ prisma, jobs, clock, policy: config.payeeSafety, logger, metrics }),
      providerEvents: createProviderEvents({ prisma, jobs, provider, logger, metrics, failpoints }),
      holds: createHoldService({ prisma, jobs, policy: config.payeeSafety, clock, logger, metrics }),
      webhooks,
      sweepMinAgeSeconds: config.queue.sweepMinAgeSeconds,
      eventRetentionDays: config.events.retentionDays,
    }),
  });
  observeWorkerGauges(metrics, prisma, { circuitState: () => provider.circuitState(), inFlight: () => running.inFlight() });
  let stopping = false;
  // A circuit that has not closed for this long means the provider is down, not flapping: the
  // worker says so on /readyz (it keeps deferring settlements without spending retries meanwhile).
  const circuitStuckMs = config.workerCircuitUnreadySeconds * 1000;
  const ops =
    options.opsPort === undefined
      ? null
      : await startOpsServer({
          port: options.opsPort,
          registry: metrics.registry,
          ready: async () => {
            if (stopping) return false;
            if (circuitStuckMs > 0 && provider.circuitNotClosedForMs() > circuitStuckMs) return false;
            await prisma.$queryRaw`SELECT 1`;
            return queueAnswers(boss);
          },
        });
  logger.info({ providerUrl: options.providerUrl, opsUrl: ops?.url }, 'worker started');
  return {
    prisma,
    boss,
    opsUrl: ops?.url ?? null,
    async stop() {
      stopping = true;
      await running.stop();
      await webhooks.stop();
      // graceful: jobs in flight finish (or expire back to the queue) before the pool closes.
      await boss.stop({ graceful: true, close: true, timeout: 15_000 });
      await ops?.close();
      await provider.close();
      await prisma.$disconnect();
    },
  };
}

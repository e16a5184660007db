import { PgBoss } from 'pg-boss';
import pg from 'pg';
import { RateLimiterPostgres } from 'rate-limiter-flexible';
import { createAccountService } from './accounts/accounts.ts';
import { createTokenVerifier } from './auth.ts';
import { requireJwtSecret, type Config } from './config.ts';
import { createFailpoints } from './failpoints.ts';
import { createPrisma, type PrismaClient } from './db/prisma.ts';
import { startApi, type RunningApi } from './graphql/server.ts';
import { createQueues, QUEUES } from './jobs/queues.ts';
import { startWorkers } from './jobs/worker.ts';
import type { Logger } from './logger.ts';
import { startOpsServer } from './ops/http.ts';
import { createMetrics, observeGauge, type Metrics } from './ops/metrics.ts';
import { PAYMENT_STATUSES } from './payments/payment-status.ts';
import { createPaymentService } from './payments/send-payment.ts';
import { createSettlement } from './payments/settlement.ts';
import { createProviderClient } from './provider/client.ts';
import { startPaymentEventHub, type PaymentEventHub } from './pubsub/payment-events.ts';

/**
 * The roles a process can play (API, worker), each built from a Config and an explicit
 * database URL. The main-*.ts entry points and the tests compose these.
 */

export interface Stoppable {
  stop(): Promise<void>;
}

export const queuePolicy = (config: Config) => ({ retry: config.retry, jobExpireSeconds: config.queue.jobExpireSeconds });

/** A started pg-boss with the queues created. */
export async function startBoss(options: {
  databaseUrl: string;
  config: Config;
  logger: Logger;
  listen: boolean;
}): Promise<PgBoss> {
  const boss = new PgBoss({
    connectionString: options.databaseUrl,
    application_name: 'payments-queue',
    max: 4,
    useListenNotify: options.listen,
    superviseIntervalSeconds: options.config.queue.superviseSeconds,
    monitorIntervalSeconds: options.config.queue.superviseSeconds,
  });
  boss.on('error', (error: unknown) => options.logger.error({ err: error }, 'pg-boss error'));
  await boss.start();
  await createQueues(boss, queuePolicy(options.config));
  return boss;
}

export interface ApiRole extends Stoppable {
  api: RunningApi;
  prisma: PrismaClient;
  events: PaymentEventHub;
  metrics: Metrics;
}

export async function startApiRole(options: {
  config: Config;
  databaseUrl: string;
  logger: Logger;
  /** Shared with a worker in the same process (`npm start`), so /metrics shows both. */
  metrics?: Metrics;
  port?: number;
  ideToken?: string;
  listenReconnectDelayMs?: number;
}): Promise<ApiRole> {
  const { config, databaseUrl } = options;
  // Before anything is started: an API without its own secret must not come up at all.
  const tokens = createTokenVerifier(requireJwtSecret(config), { maxTokenSeconds: config.maxTokenSeconds });
  const logger = options.logger.child({ role: 'api' });
  const metrics = options.metrics ?? createMetrics();
  const prisma = createPrisma({ databaseUrl, poolSize: config.databasePoolSize, applicationName: 'payments-api' });
  const boss = await startBoss({ databaseUrl, config, logger, listen: false });
  const events = await startPaymentEventHub({
    databaseUrl,
    logger,
    ...(options.listenReconnectDelayMs ? { reconnectDelayMs: options.listenReconnectDelayMs } : {}),
  });
  observeApiGauges(metrics, prisma, events);
  const limit = config.sendPaymentRateLimitPerMinute;
  // The limiter's counters live in PostgreSQL (table rate_limits, created by our migration), so
  // the limit holds across every API process, not per process. A small pool of its own: a
  // limiter query never waits behind the money path's connections.
  const limiterPool = limit > 0 ? new pg.Pool({ connectionString: databaseUrl, max: 2, application_name: 'payments-ratelimit' }) : null;
  limiterPool?.on('error', (error) => logger.error({ err: error }, 'rate limiter pool error'));
  let stopping = false;
  const api = await startApi({
    services: {
      prisma,
      logger,
      metrics,
      payments: createPaymentService({ prisma, boss, queue: queuePolicy(config), logger, metrics }),
      accounts: createAccountService({ prisma, logger }),
      sendPaymentLimiter: limiterPool
        ? new RateLimiterPostgres({
            storeClient: limiterPool,
            storeType: 'pool',
            tableName: 'rate_limits',
            tableCreated: true,
            keyPrefix: 'send-payment',
            points: limit,
            duration: 60,
          })
        : null,
      events,
    },
    tokens,
    port: options.port ?? config.port,
    ide: config.ide,
    introspection: config.introspection,
    ...(options.ideToken ? { ideToken: options.ideToken } : {}),
    // Ready: not shutting down, the database answers, the queue answers (through pg-boss's own
    // pool: payments can be enqueued), and live updates can be delivered.
    ready: async () => {
      if (stopping) return false;
      await prisma.$queryRaw`SELECT 1`;
      return (await queueAnswers(boss)) && events.isConnected();
    },
  });
  return {
    api,
    prisma,
    events,
    metrics,
    async stop() {
      stopping = true;
      await api.close();
      await events.stop();
      await boss.stop({ graceful: true, close: true });
      await limiterPool?.end();
      await prisma.$disconnect();
    },
  };
}

export interface WorkerRole extends Stoppable {
  prisma: PrismaClient;
  boss: PgBoss;
  /** The worker's own /healthz, /readyz and /metrics, when started with `opsPort`. */
  opsUrl: string | null;
}

export async function startWorkerRole(options: {
  config: Config;
  databaseUrl: string;
  providerUrl: string;
  logger: Logger;
  metrics?: Metrics;
  /** Serve /healthz, /readyz and /metrics on this port (0: any free one). */
  opsPort?: number;
  pollingIntervalSeconds?: number;
}): Promise<WorkerRole> {
  const { config, databaseUrl } = options;
  const logger = options.logger.child({ role: 'worker' });
  const metrics = options.metrics ?? createMetrics();
  const prisma = createPrisma({
    databaseUrl,
    poolSize: Math.min(config.databasePoolSize, config.workerConcurrency + 2),
    applicationName: 'payments-worker',
  });
  const boss = await startBoss({ databaseUrl, config, logger, listen: true });
  const provider = createProviderClient({
    baseUrl: options.providerUrl,
    apiKey: config.providerApiKey,
    timeoutMs: config.providerTimeoutMs,
    metrics,
  });
  observeGauge(
    metrics.registry,
    { name: 'payments_provider_circuit_open', help: 'State of the circuit breaker around the provider', labelNames: ['state'] },
    () => [{ labels: { state: String(provider.circuitState()) }, value: 1 }],
  );
  await startWorkers({
    boss,
    prisma,
    queue: queuePolicy(config),
    logger,
    settlement: createSettlement({ prisma, provider, logger, metrics, failpoints: createFailpoints(config.failpoints) }),
    concurrency: config.workerConcurrency,
    pollingIntervalSeconds: options.pollingIntervalSeconds ?? 2,
    sweepMinAgeSeconds: config.queue.sweepMinAgeSeconds,
  });
  let stopping = false;
  const ops =
    options.opsPort === undefined
      ? null
      : await startOpsServer({
          port: options.opsPort,
          registry: metrics.registry,
          ready: async () => {
            if (stopping) return false;
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
      // graceful: jobs in flight finish (or expire back to the queue) before the pool closes.
      await boss.stop({ graceful: true, close: true, timeout: 15_000 });
      await ops?.close();
      await prisma.$disconnect();
    },
  };
}

/** True when pg-boss can read the settlement queue through its own connection pool. */
async function queueAnswers(boss: PgBoss): Promise<boolean> {
  return (await boss.getQueue(QUEUES.settle)) !== null;
}

/** Gauges read at scrape time from the database and the subscription hub. */
function observeApiGauges(metrics: Metrics, prisma: PrismaClient, events: PaymentEventHub): void {
  const { registry } = metrics;
  observeGauge(registry, { name: 'payments_by_status', help: 'Payments in the database, by status', labelNames: ['status'] }, async () => {
    const rows = await prisma.$queryRaw<{ status: string; n: bigint }[]>`SELECT status::text AS status, count(*) AS n FROM payments GROUP BY status`;
    const counts = new Map(rows.map((r) => [r.status, Number(r.n)]));
    return PAYMENT_STATUSES.map((status) => ({ labels: { status }, value: counts.get(status) ?? 0 }));
  });
  // Depth and age come from one query; both gauges of a scrape share it.
  let queueScan: { at: number; rows: Promise<{ name: string; depth: bigint; age: number }[]> } | null = null;
  const queueRows = () => {
    if (!queueScan || Date.now() - queueScan.at > 1_000) {
      queueScan = {
        at: Date.now(),
        rows: prisma.$queryRaw<{ name: string; depth: bigint; age: number }[]>`
          SELECT name, count(*) AS depth, coalesce(extract(epoch FROM now() - min(created_on)), 0)::float8 AS age
          FROM pgboss.job WHERE state IN ('created', 'retry') GROUP BY name`,
      };
    }
    return queueScan.rows;
  };
  observeGauge(registry, { name: 'payments_queue_depth', help: 'Jobs waiting (created or retry), by queue', labelNames: ['queue'] }, async () =>
    (await queueRows()).map((r) => ({ labels: { queue: r.name }, value: Number(r.depth) })),
  );
  observeGauge(
    registry,
    { name: 'payments_queue_oldest_job_age_seconds', help: 'Age of the oldest waiting job, by queue', labelNames: ['queue'] },
    async () => (await queueRows()).map((r) => ({ labels: { queue: r.name }, value: r.age })),
  );
  observeGauge(registry, { name: 'payments_subscriptions_active', help: 'Live subscriptions on this API process' }, () => [
    { value: events.size() },
  ]);
  observeGauge(registry, { name: 'payments_listen_connected', help: '1 when the LISTEN connection for live updates is up' }, () => [
    { value: events.isConnected() ? 1 : 0 },
  ]);
}

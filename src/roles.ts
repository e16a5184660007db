import { PgBoss } from 'pg-boss';
import pg from 'pg';
import { RateLimiterPostgres } from 'rate-limiter-flexible';
import { createAccountService } from './accounts/accounts.ts';
import { createTokenVerifier } from './auth.ts';
import { requireJwtSecret, type Config } from './config.ts';
import { createFailpoints } from './failpoints.ts';
import { createPrisma, type PrismaClient } from './db/prisma.ts';
import type { IdeDemo } from './graphql/ide/page.ts';
import { startApi, type RunningApi } from './graphql/server.ts';
import { createSubscriptionBudget, type SubscriptionBudget } from './graphql/subscription-budget.ts';
import { createQueues, PRUNE_EVENTS_CRON, QUEUES } from './jobs/queues.ts';
import { startMoneyMovementWorkers, startWorkers } from './jobs/worker.ts';
import type { Logger } from './logger.ts';
import { startOpsServer } from './ops/http.ts';
import { createMetrics, observeGauge, sharedRead, type Metrics } from './ops/metrics.ts';
import { PAYMENT_STATUSES } from './payments/lifecycle.ts';
import { createPaymentService } from './payments/send-payment.ts';
import { createSettlement } from './payments/settlement.ts';
import { createProviderClient, noPayeeChecks } from './provider/client.ts';
import { createPayeeService } from './payees/payees.ts';
import { createHoldService } from './payments/holds.ts';
import { createScreening } from './payments/screening.ts';
import { startHoldExpiry } from './jobs/hold-expiry.ts';
import { createCancellation } from './payments/cancel.ts';
import { createProviderFeed } from './payments/provider-feed.ts';
import { createScheduledExecution } from './payments/scheduled.ts';
import { createStandingOrders } from './payments/standing-orders.ts';
import { systemClock, type Clock } from './calendar.ts';
import { startEventFeed, type EventFeed } from './events/feed.ts';
import { createAccountEvents } from './events/stream.ts';
import { prismaSql, pruneEvents } from './events/store.ts';
import { createAddressGuard, systemResolver, type Resolver } from './webhooks/address.ts';
import { createWebhookService } from './webhooks/endpoints.ts';
import { startWebhookWorker } from './webhooks/worker.ts';
import { webhookJobOptions } from './jobs/queues.ts';

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
}): Promise<PgBoss> {
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

/** How long a scrape's database counts are reused by the next scrapes. */
export const METRICS_CACHE_MS = 15_000;

export interface ApiRole extends Stoppable {
  api: RunningApi;
  /** /healthz, /readyz and /metrics on the ops port (METRICS_PORT), when there is one. */
  opsUrl: string | null;
  prisma: PrismaClient;
  events: EventFeed;
  budget: SubscriptionBudget;
  metrics: Metrics;
}

export async function startApiRole(options: {
  config: Config;
  databaseUrl: string;
  logger: Logger;
  /** Shared with a worker in the same process (`npm start`), so /metrics shows both. */
  metrics?: Metrics;
  port?: number;
  /** The ops port; null for none. By default `config.metricsPort`. */
  metricsPort?: number | null;
  /** How long the database counts behind /metrics are reused (METRICS_CACHE_MS). */
  metricsCacheMs?: number;
  /** The demo token and account the IDE opens with (the all-in-one dev start only). */
  ideDemo?: IdeDemo;
  /** Where the event feed connects, when not `databaseUrl` (tests route it through a proxy). */
  eventsDatabaseUrl?: string;
  /** Sees every SQL statement of the API's Prisma client (tests count them). */
  onQuery?: (sql: string) => void;
  /** Resolves webhook hosts (the system resolver by default; tests give their own). */
  resolveHost?: Resolver;
  /** The provider, for payee checks and for voiding a PENDING payment the customer cancels. By default `config.providerUrl`. */
  providerUrl?: string;
  /** What time it is: London days (scheduled payments, standing orders, the daily limit), check validity, new payees. */
  clock?: Clock;
}): Promise<ApiRole> {
  const { config, databaseUrl } = options;
  // Before anything is started: an API without its own secret must not come up at all.
  const tokens = createTokenVerifier(requireJwtSecret(config), { maxTokenSeconds: config.maxTokenSeconds });
  const logger = options.logger.child({ role: 'api' });
  const metrics = options.metrics ?? createMetrics();
  const prisma = createPrisma({
    databaseUrl,
    poolSize: config.databasePoolSize,
    applicationName: 'payments-api',
    ...(options.onQuery ? { onQuery: options.onQuery } : {}),
  });
  const boss = await startBoss({ databaseUrl, config, logger });
  const events = await startEventFeed({
    databaseUrl: options.eventsDatabaseUrl ?? databaseUrl,
    prisma,
    logger,
    pollIntervalMs: config.events.pollIntervalMs,
    queryTimeoutMs: config.events.queryTimeoutMs,
  });
  observeApiGauges(metrics, prisma, events, options.metricsCacheMs ?? METRICS_CACHE_MS);
  const limit = config.sendPaymentRateLimitPerMinute;
  const budget = createSubscriptionBudget();
  // The limiter's counters live in PostgreSQL (table rate_limits, created by our migration), so
  // the limit holds across every API process, not per process. A small pool of its own: a
  // limiter query never waits behind the money path's connections.
  const limiterPool = limit > 0 ? new pg.Pool({ connectionString: databaseUrl, max: 2, application_name: 'payments-ratelimit' }) : null;
  limiterPool?.on('error', (error) => logger.error({ err: error }, 'rate limiter pool error'));
  const clock = options.clock ?? systemClock;
  const providerUrl = options.providerUrl ?? config.providerUrl;
  if (!providerUrl) logger.warn('PROVIDER_URL is unset: payee checks answer UNAVAILABLE and cancelPayment cannot void PENDING payments');
  const provider = providerUrl
    ? createProviderClient({ baseUrl: providerUrl, apiKey: config.providerApiKey, timeoutMs: config.providerTimeoutMs, metrics })
    : null;
  const queue = queuePolicy(config);
  let stopping = false;
  // Ready: not shutting down, the database answers, the queue answers (through pg-boss's own
  // pool: payments can be enqueued), and live updates can be delivered.
  const ready = async () => {
    if (stopping) return false;
    await prisma.$queryRaw`SELECT 1`;
    return (await queueAnswers(boss)) && events.isHealthy();
  };
  // Payee safety (issue 15): checks go to the provider from the API, behind this process's own breaker.
  const checker = provider ?? noPayeeChecks;
  const payees = createPayeeService({ prisma, checker, clock, logger });
  const screen = createScreening({ prisma, payees, clock, policy: config.payeeSafety });
  const holds = createHoldService({ prisma, boss, queue, policy: config.payeeSafety, clock, logger, metrics, afterCommit: () => events.wake() });
  const api = await startApi({
    services: {
      prisma,
      logger,
      metrics,
      payments: createPaymentService({ prisma, boss, queue, logger, metrics, screen, clock, afterCommit: () => events.wake() }),
      payees,
      holds,
      cancellation: createCancellation({ prisma, provider, holds, logger, metrics, afterCommit: () => events.wake() }),
      standingOrders: createStandingOrders({ prisma, boss, queue, clock, logger, metrics, afterCommit: () => events.wake() }),
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
      accountEvents: createAccountEvents({ feed: events, prisma }),
      subscriptionBudget: budget,
      webhooks: createWebhookService({
        prisma,
        boss,
        guard: createAddressGuard({ strict: config.webhooks.strictUrls, resolve: options.resolveHost ?? systemResolver }),
        secretKey: config.webhooks.secretKey,
        jobOptions: webhookJobOptions({ timeoutMs: config.webhooks.timeoutMs, jobExpireSeconds: config.queue.jobExpireSeconds }),
        logger,
      }),
    },
    tokens,
    port: options.port ?? config.port,
    ide: config.ide,
    introspection: config.introspection,
    metricsPublic: config.metricsPublic,
    ...(options.ideDemo ? { ideDemo: options.ideDemo } : {}),
    ready,
  });
  const metricsPort = options.metricsPort === undefined ? config.metricsPort : options.metricsPort;
  const ops = metricsPort === null ? null : await startOpsServer({ port: metricsPort, registry: metrics.registry, ready });
  return {
    api,
    opsUrl: ops?.url ?? null,
    prisma,
    events,
    budget,
    metrics,
    async stop() {
      stopping = true;
      await ops?.close();
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
  /** The clock of webhook signatures and retry windows, when not `clock` (tests move it alone). */
  webhookClock?: Clock;
  /** Resolves webhook hosts (the system resolver by default). */
  resolveHost?: Resolver;
  /** What time it is: scheduled payments, standing orders, hold expiry; the system clock by default. */
  clock?: Clock;
}): Promise<WorkerRole> {
  const { config, databaseUrl } = options;
  const logger = options.logger.child({ role: 'worker' });
  const metrics = options.metrics ?? createMetrics();
  const prisma = createPrisma({
    databaseUrl,
    poolSize: Math.min(config.databasePoolSize, config.workerConcurrency + 2),
    applicationName: 'payments-worker',
  });
  const boss = await startBoss({ databaseUrl, config, logger });
  const provider = createProviderClient({
    baseUrl: options.providerUrl,
    apiKey: config.providerApiKey,
    timeoutMs: config.providerTimeoutMs,
    maxConnections: config.providerMaxConnections,
    metrics,
  });
  observeGauge(
    metrics.registry,
    { name: 'payments_provider_circuit_open', help: 'State of the circuit breaker around the provider', labelNames: ['state'] },
    () => [{ labels: { state: String(provider.circuitState()) }, value: 1 }],
  );
  const clock = options.clock ?? systemClock;
  const queue = queuePolicy(config);
  const failpoints = createFailpoints(config.failpoints);
  const workers = await startWorkers({
    boss,
    prisma,
    queue,
    logger,
    settlement: createSettlement({ prisma, provider, logger, metrics, failpoints }),
    clock,
    concurrency: config.workerConcurrency,
    pollingIntervalSeconds: options.pollingIntervalSeconds ?? 0.5,
    sweepMinAgeSeconds: config.queue.sweepMinAgeSeconds,
  });
  await startMoneyMovementWorkers({
    boss,
    queue,
    logger,
    scheduled: createScheduledExecution({ prisma, boss, queue, clock, policy: config.payeeSafety, logger, metrics }),
    standingOrders: createStandingOrders({ prisma, boss, queue, clock, logger, metrics }),
    providerFeed: createProviderFeed({ prisma, boss, provider, queue, logger, metrics, failpoints }),
    providerEventsPollSeconds: config.queue.providerEventsPollSeconds,
    concurrency: config.workerConcurrency,
    pollingIntervalSeconds: options.pollingIntervalSeconds ?? 0.5,
  });
  observeGauge(
    metrics.registry,
    { name: 'payments_worker_jobs_in_flight', help: 'Jobs this worker process is running now, by queue (at most WORKER_CONCURRENCY for settlement)', labelNames: ['queue'] },
    () => Object.entries(workers.inFlight()).map(([queue, value]) => ({ labels: { queue }, value })),
  );
  await schedulePruning(boss, prisma, config, logger);
  const webhooks = await startWebhookWorker({
    config,
    prisma,
    boss,
    logger,
    metrics,
    resolve: options.resolveHost ?? systemResolver,
    clock: options.webhookClock ?? clock,
    pollingIntervalSeconds: options.pollingIntervalSeconds ?? 0.5,
  });
  const holds = createHoldService({
    prisma,
    boss,
    queue: queuePolicy(config),
    policy: config.payeeSafety,
    clock: options.clock ?? systemClock,
    logger,
    metrics,
  });
  await startHoldExpiry({ boss, holds, logger, pollingIntervalSeconds: options.pollingIntervalSeconds ?? 30 });
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
      await workers.stop();
      await webhooks.stop();
      // graceful: jobs in flight finish (or expire back to the queue) before the pool closes.
      await boss.stop({ graceful: true, close: true, timeout: 15_000 });
      await ops?.close();
      await provider.close();
      await prisma.$disconnect();
    },
  };
}

/** Retention of payment events: an hourly singleton job in whichever worker takes it. */
async function schedulePruning(boss: PgBoss, prisma: PrismaClient, config: Config, logger: Logger): Promise<void> {
  await boss.work(QUEUES.pruneEvents, async () => {
    const before = new Date(Date.now() - config.events.retentionDays * 24 * 3600 * 1000);
    const deleted = await pruneEvents(prismaSql(prisma), { before });
    logger.info({ deleted, before }, 'payment events past retention pruned');
  });
  await boss.schedule(QUEUES.pruneEvents, PRUNE_EVENTS_CRON);
}

/** True when pg-boss can read the settlement queue through its own connection pool. */
async function queueAnswers(boss: PgBoss): Promise<boolean> {
  return (await boss.getQueue(QUEUES.settle)) !== null;
}

/**
 * Gauges read at scrape time from the database and the subscription hub. The database counts are
 * shared by concurrent scrapes and reused for `cacheMs`, so scrapes (or someone hammering /metrics)
 * cost at most one count per window.
 */
function observeApiGauges(metrics: Metrics, prisma: PrismaClient, events: EventFeed, cacheMs: number): void {
  const { registry } = metrics;
  const statusCounts = sharedRead(
    () => prisma.$queryRaw<{ status: string; n: bigint }[]>`SELECT status::text AS status, count(*) AS n FROM payments GROUP BY status`,
    cacheMs,
  );
  observeGauge(registry, { name: 'payments_by_status', help: 'Payments in the database, by status', labelNames: ['status'] }, async () => {
    const counts = new Map((await statusCounts()).map((r) => [r.status, Number(r.n)]));
    return PAYMENT_STATUSES.map((status) => ({ labels: { status }, value: counts.get(status) ?? 0 }));
  });
  // Depth and age come from one query; both gauges of a scrape share it. The age is how long the
  // oldest job that is due (new, or a retry whose backoff has passed) has waited for a worker: a
  // retry waiting out its backoff is not a backlog. The predicate is exactly
  // that of pg-boss's fetch index (job_i11: name, priority, created_on, start_after WHERE state <
  // 'active' AND NOT blocked), so it is answered by an index-only scan of the waiting jobs' entries
  // whenever they are a small part of the table, never by reading the completed history.
  const queueRows = sharedRead(
    () => prisma.$queryRaw<{ name: string; depth: bigint; age: number }[]>`
          SELECT name, count(*) AS depth,
            coalesce(extract(epoch FROM now() - min(start_after) FILTER (WHERE start_after <= now())), 0)::float8 AS age
          FROM pgboss.job WHERE name IN (${QUEUES.settle}, ${QUEUES.reconcile}) AND state < 'active' AND NOT blocked GROUP BY name`,
    1_000,
  );
  observeGauge(registry, { name: 'payments_queue_depth', help: 'Jobs waiting (created or retry), by queue', labelNames: ['queue'] }, async () =>
    (await queueRows()).map((r) => ({ labels: { queue: r.name }, value: Number(r.depth) })),
  );
  observeGauge(
    registry,
    { name: 'payments_queue_oldest_job_age_seconds', help: 'How long the oldest job due to run has waited for a worker, by queue', labelNames: ['queue'] },
    async () => (await queueRows()).map((r) => ({ labels: { queue: r.name }, value: r.age })),
  );
  observeGauge(registry, { name: 'payments_subscriptions_active', help: 'Live subscriptions on this API process' }, () => [
    { value: events.size() },
  ]);
  observeGauge(registry, { name: 'payments_event_feed_up', help: '1 while this process follows the payment event stream (its polls succeed)' }, () => [
    { value: events.isHealthy() ? 1 : 0 },
  ]);
}

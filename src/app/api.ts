import pg from 'pg';
import { RateLimiterPostgres } from 'rate-limiter-flexible';
import { createAccountService } from '../accounts/accounts.ts';
import { createTokenVerifier } from '../auth.ts';
import { type Config, requireJwtSecret, requireWebhookSecretKey } from '../config.ts';
import { connectionOptions } from '../db/connection.ts';
import { openDatabase, type PrismaClient } from '../db/prisma.ts';
import { type EventFeed, startEventFeed } from '../events/feed.ts';
import { createAccountEvents } from '../events/stream.ts';
import { createFailpoints } from '../failpoints.ts';
import { createBudgets } from '../graphql/budgets.ts';
import type { IdeDemo } from '../graphql/ide/page.ts';
import { type RunningApi, startApi } from '../graphql/server.ts';
import { createSubscriptionBudget, type SubscriptionBudget } from '../graphql/subscription-budget.ts';
import { createPaymentJobs } from '../jobs/enqueue.ts';
import { webhookJobOptions } from '../jobs/queues.ts';
import { createReconciliation } from '../ledger/reconciliation.ts';
import { createLedgerReader } from '../ledger/statements.ts';
import type { Logger } from '../logger.ts';
import { METRICS_CACHE_MS, observeApiGauges } from '../ops/gauges.ts';
import { readyWithin, startOpsServer } from '../ops/http.ts';
import { createMetrics, type Metrics } from '../ops/metrics.ts';
import { createPayeeService } from '../payees/payees.ts';
import { createCancellation } from '../payments/cancel.ts';
import { createHoldService } from '../payments/holds.ts';
import { createPaymentService } from '../payments/payment-service.ts';
import { createQuarantine } from '../payments/quarantine.ts';
import { createScreening } from '../payments/screening.ts';
import { createStandingOrders } from '../payments/standing-orders.ts';
import { createProviderClient, noPayeeChecks } from '../provider/client.ts';
import { createAddressGuard } from '../webhooks/address.ts';
import { createWebhookService } from '../webhooks/endpoints.ts';
import { type ProcessOptions, processDefaults } from './defaults.ts';
import { queueAnswers, startQueue } from './queue.ts';

/**
 * The limiter's pool with its statements left unnamed: rate-limiter-flexible names them
 * (`rate_limits:rlflx-upsert`), and through a transaction pooler a name prepared on one server
 * connection is missing on the next (26000). It calls nothing but `query` on a pool.
 */
function withoutStatementNames(pool: pg.Pool): Pick<pg.Pool, 'query'> {
  return {
    query: ((config: pg.QueryConfig) => pool.query({ text: config.text, values: config.values ?? [] })) as pg.Pool['query'],
  };
}

/**
 * The API process (GraphQL over HTTP and WebSocket), built from a Config and an explicit database
 * URL. src/main-api.ts runs one; the all-in-one start and the tests compose it too.
 */

export interface ApiProcess {
  api: RunningApi;
  /** /healthz, /readyz and /metrics on the ops port (METRICS_PORT), when there is one. */
  opsUrl: string | null;
  prisma: PrismaClient;
  events: EventFeed;
  budget: SubscriptionBudget;
  metrics: Metrics;
  stop(): Promise<void>;
}

export async function startApiProcess(
  options: Omit<ProcessOptions, 'pollingIntervalSeconds'> & {
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
    /** The provider, for payee checks and for voiding a PENDING payment the customer cancels. By default `config.providerUrl`. */
    providerUrl?: string;
  },
): Promise<ApiProcess> {
  const { config, databaseUrl } = options;
  // Before anything is started: an API without its own secret and key must not come up at all.
  const tokens = createTokenVerifier(requireJwtSecret(config), { maxTokenSeconds: config.maxTokenSeconds });
  const webhookSecretKey = requireWebhookSecretKey(config);
  const { clock, queue, resolveHost } = processDefaults(config, options);
  const logger = options.logger.child({ process: 'api' });
  const metrics = options.metrics ?? createMetrics();
  const { prisma, transaction } = openDatabase({
    databaseUrl,
    poolSize: config.databasePoolSize,
    applicationName: 'payments-api',
    session: config.database,
    onError: (error) => logger.warn({ err: error }, 'database connection lost; the pool replaces it'),
    ...(options.onQuery ? { onQuery: options.onQuery } : {}),
  });
  const boss = await startQueue({ databaseUrl, config, logger });
  const events = await startEventFeed({
    databaseUrl: options.eventsDatabaseUrl ?? databaseUrl,
    prisma,
    logger,
    pollIntervalMs: config.events.pollIntervalMs,
    queryTimeoutMs: config.events.queryTimeoutMs,
    session: config.database,
  });
  observeApiGauges(metrics, prisma, events, options.metricsCacheMs ?? METRICS_CACHE_MS);
  // A commit wakes the feed (an immediate poll) only when this process has a live subscription to
  // deliver it to; otherwise its regular poll (EVENT_POLL_INTERVAL_MS) keeps the position moving.
  // Under load, waking on every payment kept the feed polling back to back: a round trip of this
  // process and of PostgreSQL per payment or so, for no listener.
  const wakeFeed = () => {
    if (events.size() > 0) events.wake();
  };
  const limit = config.sendPaymentRateLimitPerMinute;
  const budget = createSubscriptionBudget();
  // The limiter's counters live in PostgreSQL (table rate_limits, created by our migration), so
  // the limit holds across every API process, not per process. A small pool of its own: a
  // limiter query never waits behind the money path's connections.
  // One statement per check (an upsert), so it works through a transaction pooler unchanged.
  const budgetsOn = Object.values(config.budgets.perMinute).some((perMinute) => perMinute > 0);
  const limiterPool =
    limit > 0 || budgetsOn
      ? new pg.Pool({
          connectionString: databaseUrl,
          max: 2,
          ...connectionOptions(config.database, { applicationName: 'payments-ratelimit' }),
        })
      : null;
  // An idle client that loses its connection is dropped by the pool and replaced on next use.
  limiterPool?.on('error', (error) => logger.warn({ err: error }, 'rate limiter connection lost; the pool replaces it'));
  const limiterStore = limiterPool && !config.database.preparedStatements ? withoutStatementNames(limiterPool) : limiterPool;
  const providerUrl = options.providerUrl ?? config.providerUrl;
  if (!providerUrl) logger.warn('PROVIDER_URL is unset: payee checks answer UNAVAILABLE and cancelPayment cannot void PENDING payments');
  const provider = providerUrl
    ? createProviderClient({ baseUrl: providerUrl, apiKey: config.providerApiKey, timeoutMs: config.providerTimeoutMs, metrics })
    : null;
  let stopping = false;
  // Ready: not shutting down, the database answers, the queue answers (through pg-boss's own
  // pool: payments can be enqueued), and live updates can be delivered.
  const ready = readyWithin(async () => {
    if (stopping) return false;
    await prisma.$queryRaw`SELECT 1`;
    return (await queueAnswers(boss)) && events.isHealthy();
  });
  const jobs = createPaymentJobs({ boss, policy: queue, clock });
  // Payee safety: checks go to the provider from the API, behind this process's own breaker.
  const checker = provider ?? noPayeeChecks;
  const payees = createPayeeService({ prisma, checker, clock, logger, maxPayees: config.budgets.maxPayeesPerCustomer });
  const screen = createScreening({ payees, policy: config.payeeSafety });
  const holds = createHoldService({ prisma, jobs, policy: config.payeeSafety, clock, logger, metrics, afterCommit: wakeFeed });
  const api = await startApi({
    services: {
      prisma,
      logger,
      metrics,
      payments: createPaymentService({
        prisma,
        transaction,
        jobs,
        logger,
        metrics,
        screen,
        clock,
        afterCommit: wakeFeed,
        failpoints: createFailpoints(config.failpoints),
      }),
      payees,
      holds,
      quarantine: createQuarantine({ prisma, logger }),
      cancellation: createCancellation({ prisma, provider, holds, logger, metrics, afterCommit: wakeFeed }),
      standingOrders: createStandingOrders({
        prisma,
        jobs,
        clock,
        policy: config.payeeSafety,
        logger,
        metrics,
        afterCommit: wakeFeed,
        maxActivePerAccount: config.budgets.maxActiveStandingOrdersPerAccount,
      }),
      accounts: createAccountService({ prisma, logger }),
      ledger: createLedgerReader({ prisma }),
      reconciliation: createReconciliation({ prisma, provider, clock, logger, metrics }),
      sendPaymentLimiter:
        limiterStore && limit > 0
          ? new RateLimiterPostgres({
              storeClient: limiterStore,
              storeType: 'pool',
              tableName: 'rate_limits',
              tableCreated: true,
              keyPrefix: 'send-payment',
              points: limit,
              duration: 60,
            })
          : null,
      budgets: createBudgets({ pool: limiterStore, perMinute: config.budgets.perMinute }),
      events,
      accountEvents: createAccountEvents({ feed: events, prisma }),
      subscriptionBudget: budget,
      webhooks: createWebhookService({
        prisma,
        boss,
        guard: createAddressGuard({ strict: config.webhooks.strictUrls, resolve: resolveHost }),
        secretKey: webhookSecretKey,
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

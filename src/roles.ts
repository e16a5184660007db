import { PgBoss } from 'pg-boss';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import { createAccountService } from './accounts/accounts.ts';
import { createTokenVerifier } from './auth.ts';
import type { Config } from './config.ts';
import { createPrisma, type PrismaClient } from './db/prisma.ts';
import { startApi, type RunningApi } from './graphql/server.ts';
import { createQueues } from './jobs/queues.ts';
import { startWorkers } from './jobs/worker.ts';
import type { Logger } from './logger.ts';
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
  });
  boss.on('error', (error: unknown) => options.logger.error({ err: error }, 'pg-boss error'));
  await boss.start();
  await createQueues(boss, options.config.retry);
  return boss;
}

export interface ApiRole extends Stoppable {
  api: RunningApi;
  prisma: PrismaClient;
  events: PaymentEventHub;
}

export async function startApiRole(options: {
  config: Config;
  databaseUrl: string;
  logger: Logger;
  port?: number;
  ideToken?: string;
  listenReconnectDelayMs?: number;
}): Promise<ApiRole> {
  const { config, databaseUrl } = options;
  const logger = options.logger.child({ role: 'api' });
  const prisma = createPrisma({ databaseUrl, poolSize: config.databasePoolSize, applicationName: 'payments-api' });
  const boss = await startBoss({ databaseUrl, config, logger, listen: false });
  const events = await startPaymentEventHub({
    databaseUrl,
    logger,
    ...(options.listenReconnectDelayMs ? { reconnectDelayMs: options.listenReconnectDelayMs } : {}),
  });
  const limit = config.sendPaymentRateLimitPerMinute;
  const api = await startApi({
    services: {
      prisma,
      logger,
      payments: createPaymentService({ prisma, boss, retry: config.retry, logger }),
      accounts: createAccountService({ prisma, logger }),
      sendPaymentLimiter: limit > 0 ? new RateLimiterMemory({ points: limit, duration: 60 }) : null,
      events,
    },
    tokens: createTokenVerifier(config.jwtSecret),
    port: options.port ?? config.port,
    ide: config.ide,
    introspection: config.introspection,
    ...(options.ideToken ? { ideToken: options.ideToken } : {}),
    ready: async () => {
      await prisma.$queryRaw`SELECT 1`;
      return events.isConnected();
    },
  });
  return {
    api,
    prisma,
    events,
    async stop() {
      await api.close();
      await events.stop();
      await boss.stop({ graceful: true, close: true });
      await prisma.$disconnect();
    },
  };
}

export interface WorkerRole extends Stoppable {
  prisma: PrismaClient;
  boss: PgBoss;
}

export async function startWorkerRole(options: {
  config: Config;
  databaseUrl: string;
  providerUrl: string;
  logger: Logger;
  pollingIntervalSeconds?: number;
}): Promise<WorkerRole> {
  const { config, databaseUrl } = options;
  const logger = options.logger.child({ role: 'worker' });
  const prisma = createPrisma({ databaseUrl, poolSize: Math.min(config.databasePoolSize, config.workerConcurrency + 2), applicationName: 'payments-worker' });
  const boss = await startBoss({ databaseUrl, config, logger, listen: true });
  const provider = createProviderClient({
    baseUrl: options.providerUrl,
    apiKey: config.providerApiKey,
    timeoutMs: config.providerTimeoutMs,
  });
  await startWorkers({
    boss,
    logger,
    settlement: createSettlement({ prisma, provider, logger }),
    concurrency: config.workerConcurrency,
    pollingIntervalSeconds: options.pollingIntervalSeconds ?? 2,
  });
  logger.info({ providerUrl: options.providerUrl }, 'worker started');
  return {
    prisma,
    boss,
    async stop() {
      // graceful: running jobs finish (or expire back to the queue) before the pool closes.
      await boss.stop({ graceful: true, close: true, timeout: 15_000 });
      await prisma.$disconnect();
    },
  };
}

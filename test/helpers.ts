import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { expect, inject } from 'vitest';
import { type ApiProcess, startApiProcess } from '../src/app/api.ts';
import { startWorkerProcess, type WorkerProcess } from '../src/app/worker.ts';
import { signToken } from '../src/auth.ts';
import type { Clock } from '../src/calendar.ts';
import { type Config, loadConfig } from '../src/config.ts';
import { createPrisma, type PrismaClient } from '../src/db/prisma.ts';
import { type RunningEmulator, startEmulator } from '../src/emulator/server.ts';
import { createLogger, type Logger } from '../src/logger.ts';
import { withDatabase } from './global-setup.ts';

export const TEST_SECRET = 'test-secret-that-is-at-least-32-bytes-long!!';
/** The operator id in the tests' operator tokens. */
export const TEST_OPERATOR = 'test-operator@bank';
/** The webhook secrets' encryption key that production requires (32 bytes, hex). */
export const TEST_WEBHOOK_KEY = '7e'.repeat(32);

/** A fresh database cloned from the migrated template; dropped by `drop()`. */
export async function createTestDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const adminUrl = inject('adminUrl');
  const name = `payments_test_${randomUUID().replaceAll('-', '').slice(0, 16)}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name} TEMPLATE ${inject('templateDb')}`);
  } finally {
    await admin.end();
  }
  return {
    url: withDatabase(adminUrl, name),
    async drop() {
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

export function testConfig(env: Record<string, string> = {}): Config {
  return loadConfig({
    NODE_ENV: 'test',
    AUTH_JWT_SECRET: TEST_SECRET,
    WEBHOOK_SECRET_KEY: TEST_WEBHOOK_KEY,
    // The tests' webhook receivers listen on 127.0.0.1.
    WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
    PAYMENT_RETRY_LIMIT: '3',
    PAYMENT_RETRY_DELAY_SECONDS: '1',
    PAYMENT_RETRY_DELAY_MAX_SECONDS: '2',
    PROVIDER_TIMEOUT_MS: '2000',
    SEND_PAYMENT_RATE_LIMIT_PER_MINUTE: '0',
    DATABASE_POOL_SIZE: '10',
    PROVIDER_EVENTS_POLL_SECONDS: '1',
    ...env,
  });
}

/**
 * A logger that keeps error lines, so a test can fail on an unexpected one, and with
 * `keepAll` every line at `level`, so a test can read what operators would see.
 */
export function captureLogger(options: { level?: string; keepAll?: boolean } = {}): { logger: Logger; errors: string[]; lines: string[] } {
  const errors: string[] = [];
  const lines: string[] = [];
  const level = options.level ?? process.env.TEST_LOG_LEVEL ?? 'error';
  const logger = createLogger({
    level,
    name: 'test',
    destination: {
      write(line: string) {
        if (JSON.parse(line).level >= 50) errors.push(line);
        if (options.keepAll) lines.push(line);
        if (process.env.TEST_LOG_LEVEL) process.stdout.write(line);
      },
    },
  });
  return { logger, errors, lines };
}

export interface GraphQLResponse<T = Record<string, unknown>> {
  data?: T | null;
  errors?: Array<{ message: string; extensions?: { code?: string } & Record<string, unknown>; path?: unknown[] }>;
}

/** POSTs a GraphQL operation over real HTTP. */
export async function gql<T = Record<string, unknown>>(
  url: string,
  token: string | null,
  query: string,
  variables?: Record<string, unknown>,
): Promise<GraphQLResponse<T>> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  return (await response.json()) as GraphQLResponse<T>;
}

export const SEND_PAYMENT = /* GraphQL */ `
  mutation Send($input: SendPaymentInput!) {
    sendPayment(input: $input) {
      payment { id status amount idempotencyKey recipient { name sortCode accountNumber } reference }
      errors { code message field }
    }
  }
`;

export interface SendPaymentData {
  sendPayment: {
    payment: { id: string; status: string; amount: number; idempotencyKey: string } | null;
    errors: Array<{ code: string; message: string; field: string[] | null }>;
  };
}

export function paymentInput(accountId: string, overrides: Record<string, unknown> = {}) {
  return {
    idempotencyKey: `key-${randomUUID()}`,
    fromAccountId: accountId,
    amount: 1000,
    recipient: { name: 'Grace Hopper', sortCode: '12-34-56', accountNumber: '12345678' },
    reference: 'Invoice 42',
    ...overrides,
  };
}

export interface TestCustomer {
  customerId: string;
  accountId: string;
  token: string;
}

/**
 * A customer with one account holding `fundPence`, made through the API as an operator would,
 * and a token for that customer.
 */
export async function createFundedCustomer(apiUrl: string, operatorToken: string, fundPence: number): Promise<TestCustomer> {
  const created = await gql<{ createCustomer: { id: string } }>(
    apiUrl,
    operatorToken,
    'mutation($name: String!) { createCustomer(input: { name: $name }) { id } }',
    { name: 'Test Customer' },
  );
  const customerId = created.data?.createCustomer.id;
  if (!customerId) throw new Error(`createCustomer failed: ${JSON.stringify(created)}`);
  const opened = await gql<{ openAccount: { id: string } }>(
    apiUrl,
    operatorToken,
    'mutation($id: ID!) { openAccount(input: { customerId: $id, name: "Current" }) { id } }',
    { id: customerId },
  );
  const accountId = opened.data?.openAccount.id;
  if (!accountId) throw new Error(`openAccount failed: ${JSON.stringify(opened)}`);
  if (fundPence > 0) {
    const deposit = await gql(
      apiUrl,
      operatorToken,
      'mutation($id: ID!, $amount: Money!) { depositFunds(input: { accountId: $id, amount: $amount, idempotencyKey: "initial" }) { balance } }',
      { id: accountId, amount: fundPence },
    );
    if (deposit.errors) throw new Error(`depositFunds failed: ${JSON.stringify(deposit)}`);
  }
  const token = await signToken({ role: 'customer', customerId }, TEST_SECRET, 3600);
  return { customerId, accountId, token };
}

export interface Stack {
  config: Config;
  databaseUrl: string;
  apiUrl: string;
  emulator: RunningEmulator;
  /** A client of the test's own, for looking at the database. */
  db: PrismaClient;
  api: ApiProcess;
  worker: WorkerProcess | null;
  operatorToken: string;
  errorLogs: string[];
  /** Every log line, when started with `logLevel`. */
  logLines: string[];
  logger: Logger;
  startWorker(): Promise<WorkerProcess>;
  newCustomer(fundPence: number): Promise<TestCustomer>;
  send(token: string, input: Record<string, unknown>): Promise<SendPaymentData['sendPayment']>;
  stop(): Promise<void>;
}

/**
 * The whole service on real parts: a cloned PostgreSQL database, the provider emulator over
 * HTTP, the API over HTTP and (unless `worker: false`) a worker, all in this process.
 */
export async function startStack(
  options: {
    worker?: boolean;
    env?: Record<string, string>;
    logLevel?: string;
    /**
     * Routes every connection of the API and the worker (Prisma, pg-boss, the event feed, the rate
     * limiter) through another address: a proxy that can be cut, or PgBouncer. The test's own `db`
     * client stays direct.
     */
    via?: (databaseUrl: string) => string;
    /** Runs on the fresh database (its direct URL) before any process connects. */
    beforeStart?: (databaseUrl: string) => Promise<void>;
    /** Routes the API's event feed through another address (a proxy that can stall). */
    eventsDatabaseUrl?: (databaseUrl: string) => string;
    /** Sees every SQL statement the API sends. */
    onApiQuery?: (sql: string) => void;
    /** The worker's clock for webhook signatures and retry windows alone. */
    webhookClock?: Clock;
    /** The API's and the worker's clock (see `testClock`): London days, payee safety, hold expiry; the system clock by default. */
    clock?: Clock;
  } = {},
): Promise<Stack> {
  const database = await createTestDatabase();
  const config = testConfig(options.env);
  const serviceUrl = options.via ? options.via(database.url) : database.url;
  await options.beforeStart?.(database.url);
  const { logger, errors, lines } = captureLogger(options.logLevel ? { level: options.logLevel, keepAll: true } : {});
  const emulator = await startEmulator({ apiKey: config.providerApiKey, port: 0 });
  const api = await startApiProcess({
    config,
    databaseUrl: serviceUrl,
    logger,
    port: 0,
    ...(options.eventsDatabaseUrl ? { eventsDatabaseUrl: options.eventsDatabaseUrl(database.url) } : {}),
    ...(options.onApiQuery ? { onQuery: options.onApiQuery } : {}),
    providerUrl: emulator.url,
    ...(options.clock ? { clock: options.clock } : {}),
  });
  const db = createPrisma({ databaseUrl: database.url, poolSize: 4 });
  const operatorToken = await signToken({ role: 'operator', operatorId: TEST_OPERATOR }, TEST_SECRET, 3600);

  const stack: Stack = {
    config,
    databaseUrl: database.url,
    apiUrl: api.api.url.replace('localhost', '127.0.0.1'),
    emulator,
    db,
    api,
    worker: null,
    operatorToken,
    errorLogs: errors,
    logLines: lines,
    logger,
    async startWorker() {
      stack.worker = await startWorkerProcess({
        config,
        databaseUrl: serviceUrl,
        providerUrl: emulator.url,
        logger,
        pollingIntervalSeconds: 0.5,
        ...(options.webhookClock ? { webhookClock: options.webhookClock } : {}),
        ...(options.clock ? { clock: options.clock } : {}),
      });
      return stack.worker;
    },
    newCustomer: (fundPence) => createFundedCustomer(stack.apiUrl, operatorToken, fundPence),
    async send(token, input) {
      const response = await gql<SendPaymentData>(stack.apiUrl, token, SEND_PAYMENT, { input });
      if (!response.data?.sendPayment) throw new Error(`sendPayment failed: ${JSON.stringify(response)}`);
      return response.data.sendPayment;
    },
    async stop() {
      await stack.worker?.stop();
      await api.stop();
      await emulator.close();
      await db.$disconnect();
      await database.drop();
    },
  };
  if (options.worker !== false) await stack.startWorker();
  return stack;
}

/** The environment of a worker process (`startProcess('main-worker.ts', ...)`) on the stack's database and emulator. */
export function workerProcessEnv(
  stack: Pick<Stack, 'databaseUrl' | 'emulator' | 'config'>,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    DATABASE_URL: stack.databaseUrl,
    AUTH_JWT_SECRET: TEST_SECRET,
    WEBHOOK_SECRET_KEY: TEST_WEBHOOK_KEY,
    WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
    PROVIDER_URL: stack.emulator.url,
    PROVIDER_API_KEY: stack.config.providerApiKey,
    WORKER_PORT: '0',
    QUEUE_SUPERVISE_SECONDS: '1',
    PAYMENT_RETRY_DELAY_SECONDS: '1',
    PROVIDER_TIMEOUT_MS: String(stack.config.providerTimeoutMs),
    ...extra,
  };
}

/** Fails the test if the service logged an error it did not expect. */
export function expectNoErrorLogs(stack: Stack): void {
  expect(stack.errorLogs, 'unexpected error logs').toEqual([]);
}

/** Row counts of the money tables, to show that a refused request wrote nothing. */
export async function rowCounts(db: PrismaClient) {
  const [payments, ledger, jobs, accounts] = await Promise.all([
    db.payment.count(),
    db.ledgerEntry.count(),
    db.$queryRaw<{ n: bigint }[]>`SELECT count(*) AS n FROM pgboss.job WHERE name = 'payment.settle'`,
    db.account.findMany({ select: { id: true, balance: true }, orderBy: { id: 'asc' } }),
  ]);
  return { payments, ledger, jobs: Number(jobs[0]?.n ?? 0), balances: accounts.map((a) => `${a.id}:${a.balance}`) };
}

/**
 * A clock for tests that runs at the speed of real time from a moment the test chooses: `set` jumps
 * to another moment (e.g. a second before midnight in London), and time flows on from there, so a
 * job due "at midnight" becomes due a second later in real time.
 */
export function testClock(start: Date = new Date()): Clock & { set(moment: Date): void } {
  let offset = start.getTime() - Date.now();
  return {
    now: () => new Date(Date.now() + offset),
    set(moment: Date) {
      offset = moment.getTime() - Date.now();
    },
  };
}

/** Calls the emulator's admin and provider endpoints (returns, credits) over HTTP. */
export async function emulatorCall(
  stack: Pick<Stack, 'emulator' | 'config'>,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: unknown }> {
  const response = await fetch(`${stack.emulator.url}${path}`, {
    method,
    headers: { 'x-api-key': stack.config.providerApiKey, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, json: await response.json() };
}

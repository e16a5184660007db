import { z } from 'zod';
import type { DatabaseSession } from './db/connection.ts';

/**
 * Every setting of the service, parsed once from the environment at start-up.
 * Nothing else reads `process.env`: composition roots call `loadConfig` and pass the result on.
 */
export type Config = z.infer<typeof configSchema>;

// Known to everyone who reads this repository: only `npm start` (the local all-in-one demo, which
// passes `allowDevSecret`) may sign with it, and never in production. Every other process that
// signs or verifies tokens refuses to start without AUTH_JWT_SECRET (`requireJwtSecret`).
const DEV_JWT_SECRET = 'dev-only-secret-change-me-dev-only-secret';
/**
 * Known to everyone too: only `npm start` (`allowDevSecret`) encrypts webhook secrets with it. Every
 * other API or worker process refuses to start without WEBHOOK_SECRET_KEY (`requireWebhookSecretKey`).
 */
const DEV_WEBHOOK_SECRET_KEY = Buffer.from('dev-only-webhook-key-change-me!!', 'utf8');

/** 32 bytes, as 64 hex digits or base64: the AES-256 key that encrypts webhook secrets at rest. */
const aesKey = z
  .string()
  .trim()
  .transform((raw, ctx) => {
    const bytes = /^[0-9a-fA-F]{64}$/.test(raw)
      ? Buffer.from(raw, 'hex')
      : /^[A-Za-z0-9+/_-]{43}=?$/.test(raw)
        ? Buffer.from(raw, 'base64')
        : null;
    if (bytes?.length !== 32) {
      ctx.addIssue({ code: 'custom', message: 'must be 32 bytes as 64 hex digits or base64 (openssl rand -hex 32)' });
      return z.NEVER;
    }
    return bytes;
  })
  .optional();

const wholeNumber = (min: number, max: number) =>
  z.string().trim().regex(/^\d+$/, 'must be a whole number').transform(Number).pipe(z.number().int().min(min).max(max));

const intFromEnv = (fallback: number, min: number, max: number) =>
  wholeNumber(min, max)
    .optional()
    .transform((v) => v ?? fallback);

const booleanFromEnv = z
  .enum(['true', 'false', '1', '0'], { message: 'must be true or false' })
  .transform((v) => v === 'true' || v === '1')
  .optional();

const faultsJson = z
  .string()
  .optional()
  .transform((raw, ctx) => {
    if (raw === undefined || raw.trim() === '') return undefined;
    try {
      return JSON.parse(raw) as unknown;
    } catch {
      ctx.addIssue({ code: 'custom', message: 'must be JSON' });
      return z.NEVER;
    }
  });

const configSchema = z
  .object({
    NODE_ENV: z.enum(['development', 'test', 'production']).default('development'),
    DATABASE_URL: z
      .string()
      .trim()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgresql:// URL')
      .optional(),
    DATABASE_POOL_SIZE: intFromEnv(10, 1, 200),
    DIRECT_DATABASE_URL: z
      .string()
      .trim()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgresql:// URL')
      .optional(),
    DATABASE_POOL_MODE: z.enum(['direct', 'transaction'], { message: 'must be direct or transaction' }).optional(),
    DATABASE_PREPARED_STATEMENTS: booleanFromEnv,
    DATABASE_CONNECT_TIMEOUT_MS: intFromEnv(10_000, 100, 120_000),
    DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS: intFromEnv(15_000, 0, 3_600_000),
    DATABASE_LOCK_TIMEOUT_MS: intFromEnv(5_000, 0, 3_600_000),
    DATABASE_STATEMENT_TIMEOUT_MS: intFromEnv(30_000, 0, 3_600_000),
    PORT: intFromEnv(4000, 0, 65535),
    AUTH_JWT_SECRET: z.string().optional(),
    AUTH_MAX_TOKEN_HOURS: intFromEnv(24, 1, 24 * 365),
    PROVIDER_URL: z.url({ protocol: /^https?$/ }).optional(),
    PROVIDER_API_KEY: z.string().min(1).default('dev-provider-key'),
    PROVIDER_PORT: intFromEnv(4100, 0, 65535),
    PROVIDER_TIMEOUT_MS: intFromEnv(5000, 50, 120_000),
    PROVIDER_FAULTS: faultsJson,
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    PAYMENT_RETRY_LIMIT: intFromEnv(8, 0, 1000),
    PAYMENT_RETRY_DELAY_SECONDS: intFromEnv(2, 1, 86_400),
    PAYMENT_RETRY_DELAY_MAX_SECONDS: intFromEnv(300, 1, 86_400),
    SEND_PAYMENT_RATE_LIMIT_PER_MINUTE: intFromEnv(600, 0, 1_000_000),
    WORKER_CONCURRENCY: intFromEnv(256, 1, 4096),
    PROVIDER_MAX_CONNECTIONS: wholeNumber(1, 4096).optional(),
    WORKER_CIRCUIT_UNREADY_SECONDS: intFromEnv(60, 0, 86_400),
    WORKER_PORT: intFromEnv(4200, 0, 65535),
    METRICS_PORT: wholeNumber(0, 65535).optional(),
    METRICS_PUBLIC: booleanFromEnv,
    PAYMENT_JOB_EXPIRE_SECONDS: intFromEnv(30, 1, 3600),
    QUEUE_SUPERVISE_SECONDS: intFromEnv(10, 1, 3600),
    EVENT_RETENTION_DAYS: intFromEnv(30, 1, 3650),
    EVENT_POLL_INTERVAL_MS: intFromEnv(100, 10, 60_000),
    EVENT_QUERY_TIMEOUT_MS: intFromEnv(5000, 100, 120_000),
    PAYMENT_SWEEP_MIN_AGE_SECONDS: intFromEnv(300, 0, 30 * 86_400),
    OTEL_EXPORTER_OTLP_ENDPOINT: z.url({ protocol: /^https?$/ }).optional(),
    WEBHOOK_SECRET_KEY: aesKey,
    WEBHOOK_ALLOW_PRIVATE_URLS: booleanFromEnv,
    WEBHOOK_TIMEOUT_MS: intFromEnv(5000, 50, 60_000),
    WEBHOOK_RETRY_HOURS: intFromEnv(72, 1, 24 * 30),
    WEBHOOK_RETRY_DELAY_MS: intFromEnv(10_000, 10, 3_600_000),
    WEBHOOK_RETRY_DELAY_MAX_MS: intFromEnv(3_600_000, 10, 24 * 3_600_000),
    WEBHOOK_CONCURRENCY: intFromEnv(16, 1, 256),
    WEBHOOK_ENDPOINT_CONCURRENCY: intFromEnv(2, 1, 64),
    WEBHOOK_DISPATCH_INTERVAL_MS: intFromEnv(250, 10, 60_000),
    PROVIDER_EVENTS_POLL_SECONDS: intFromEnv(5, 1, 3600),
    FAILPOINTS: z.string().optional(),
    PAYEE_CHECK_THRESHOLD: intFromEnv(100_000, 0, 100_000_000),
    DAILY_PAYMENT_LIMIT: intFromEnv(2_500_000, 1, 1_000_000_000_000),
    REVIEW_THRESHOLD: intFromEnv(1_000_000, 1, 1_000_000_000_000),
    NEW_PAYEE_HOURS: intFromEnv(24, 0, 24 * 365),
    HOLD_MAX_HOURS: intFromEnv(96, 1, 24 * 365),
    GRAPHQL_IDE: booleanFromEnv,
    GRAPHQL_INTROSPECTION: booleanFromEnv,
  })
  .superRefine((env, ctx) => {
    const secret = env.AUTH_JWT_SECRET;
    if (env.NODE_ENV === 'production' && (secret === undefined || Buffer.byteLength(secret) < 32)) {
      ctx.addIssue({
        code: 'custom',
        path: ['AUTH_JWT_SECRET'],
        message: 'must be set to at least 32 bytes in production',
      });
    }
    if (secret !== undefined && Buffer.byteLength(secret) < 32) {
      ctx.addIssue({ code: 'custom', path: ['AUTH_JWT_SECRET'], message: 'must be at least 32 bytes' });
    }
    if (env.METRICS_PUBLIC === false && env.METRICS_PORT === undefined && env.NODE_ENV !== 'production') {
      ctx.addIssue({
        code: 'custom',
        path: ['METRICS_PORT'],
        message: 'must be set when METRICS_PUBLIC is false, or metrics are served nowhere',
      });
    }
    // A job must outlive the provider call it makes, with room to record the answer: otherwise
    // it expires mid-call and a second worker settles the same payment at the same time.
    if (env.PAYMENT_JOB_EXPIRE_SECONDS * 1000 < 2 * env.PROVIDER_TIMEOUT_MS) {
      ctx.addIssue({
        code: 'custom',
        path: ['PAYMENT_JOB_EXPIRE_SECONDS'],
        message: `must be at least twice PROVIDER_TIMEOUT_MS (${env.PROVIDER_TIMEOUT_MS} ms), i.e. ${Math.ceil((2 * env.PROVIDER_TIMEOUT_MS) / 1000)} or more`,
      });
    }
    if (env.NODE_ENV === 'production' && env.WEBHOOK_SECRET_KEY === undefined) {
      ctx.addIssue({ code: 'custom', path: ['WEBHOOK_SECRET_KEY'], message: 'must be set in production (openssl rand -hex 32)' });
    }
    if (env.NODE_ENV === 'production' && env.WEBHOOK_ALLOW_PRIVATE_URLS === true) {
      ctx.addIssue({ code: 'custom', path: ['WEBHOOK_ALLOW_PRIVATE_URLS'], message: 'is for local development only, never production' });
    }
    if (
      (env.DATABASE_POOL_MODE ?? (env.DIRECT_DATABASE_URL ? 'transaction' : 'direct')) === 'transaction' &&
      env.DATABASE_PREPARED_STATEMENTS
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['DATABASE_PREPARED_STATEMENTS'],
        message: 'must be false through a transaction pooler (PgBouncer before 1.21 cannot keep named statements across transactions)',
      });
    }
    // A frozen client's statements already waiting for a lock must give up before the session
    // holding it is ended for idling; otherwise the next one takes the lock and freezes with it, and
    // everyone behind waits one more idle timeout per queued statement.
    if (
      env.DATABASE_LOCK_TIMEOUT_MS > 0 &&
      env.DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS > 0 &&
      env.DATABASE_LOCK_TIMEOUT_MS >= env.DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['DATABASE_LOCK_TIMEOUT_MS'],
        message:
          'must be less than DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS, so a frozen client cannot queue up its waiting statements behind its own lock',
      });
    }
    if (env.WEBHOOK_ENDPOINT_CONCURRENCY >= env.WEBHOOK_CONCURRENCY) {
      ctx.addIssue({
        code: 'custom',
        path: ['WEBHOOK_ENDPOINT_CONCURRENCY'],
        message: 'must be less than WEBHOOK_CONCURRENCY, so one endpoint never takes every slot',
      });
    }
    if (env.WEBHOOK_RETRY_DELAY_MAX_MS < env.WEBHOOK_RETRY_DELAY_MS) {
      ctx.addIssue({ code: 'custom', path: ['WEBHOOK_RETRY_DELAY_MAX_MS'], message: 'must not be less than WEBHOOK_RETRY_DELAY_MS' });
    }
    if (env.PAYMENT_RETRY_DELAY_MAX_SECONDS < env.PAYMENT_RETRY_DELAY_SECONDS) {
      ctx.addIssue({
        code: 'custom',
        path: ['PAYMENT_RETRY_DELAY_MAX_SECONDS'],
        message: 'must not be less than PAYMENT_RETRY_DELAY_SECONDS',
      });
    }
  })
  .transform((env) => ({
    nodeEnv: env.NODE_ENV,
    databaseUrl: env.DATABASE_URL,
    databasePoolSize: env.DATABASE_POOL_SIZE,
    /**
     * A direct connection for what needs a session (migrations' advisory lock, role settings, the
     * audit's long reads) when DATABASE_URL is a pooler; DATABASE_URL otherwise.
     */
    directDatabaseUrl: env.DIRECT_DATABASE_URL ?? env.DATABASE_URL,
    database: databaseSession(env),
    port: env.PORT,
    /** Undefined unless AUTH_JWT_SECRET is set (or `allowDevSecret`): see `requireJwtSecret`. */
    jwtSecret: env.AUTH_JWT_SECRET,
    /** Tokens whose `exp` is further ahead than this are refused, whoever signed them. */
    maxTokenSeconds: env.AUTH_MAX_TOKEN_HOURS * 3600,
    providerUrl: env.PROVIDER_URL?.replace(/\/+$/, ''),
    providerApiKey: env.PROVIDER_API_KEY,
    providerPort: env.PROVIDER_PORT,
    providerTimeoutMs: env.PROVIDER_TIMEOUT_MS,
    providerFaults: env.PROVIDER_FAULTS,
    logLevel: env.LOG_LEVEL,
    retry: {
      limit: env.PAYMENT_RETRY_LIMIT,
      delaySeconds: env.PAYMENT_RETRY_DELAY_SECONDS,
      delayMaxSeconds: env.PAYMENT_RETRY_DELAY_MAX_SECONDS,
    },
    sendPaymentRateLimitPerMinute: env.SEND_PAYMENT_RATE_LIMIT_PER_MINUTE,
    // Payments a worker process settles at once (each waits on the provider most of its time).
    workerConcurrency: env.WORKER_CONCURRENCY,
    // Keep-alive sockets to the provider per worker process: by default one per payment in flight.
    providerMaxConnections: env.PROVIDER_MAX_CONNECTIONS ?? env.WORKER_CONCURRENCY,
    // A worker's /readyz says 503 once the provider circuit has not been closed for this long (0: never).
    workerCircuitUnreadySeconds: env.WORKER_CIRCUIT_UNREADY_SECONDS,
    workerPort: env.WORKER_PORT,
    // The API's /metrics, /healthz and /readyz on a port of their own (for the scraper, not the
    // internet): 4300 by default in production, none otherwise.
    metricsPort: env.METRICS_PORT ?? (env.NODE_ENV === 'production' ? 4300 : null),
    // /metrics on the public port too: the contract's one-port layout, except in production.
    metricsPublic: env.METRICS_PUBLIC ?? env.NODE_ENV !== 'production',
    queue: {
      // A job whose worker died is retried after it expires, found by a supervisor pass:
      // at most expire + supervise seconds, under the contract's minute with the defaults.
      jobExpireSeconds: env.PAYMENT_JOB_EXPIRE_SECONDS,
      superviseSeconds: env.QUEUE_SUPERVISE_SECONDS,
      // The sweeper re-enqueues a PENDING payment with no live job once it is this old.
      sweepMinAgeSeconds: env.PAYMENT_SWEEP_MIN_AGE_SECONDS,
      // How long after one poll of the provider's event feed (returns, inbound credits) the next one runs.
      providerEventsPollSeconds: env.PROVIDER_EVENTS_POLL_SECONDS,
    },
    events: {
      retentionDays: env.EVENT_RETENTION_DAYS,
      // How often each API process looks for new events (at once after its own writes).
      pollIntervalMs: env.EVENT_POLL_INTERVAL_MS,
      // A poll that hangs this long means a dead connection: it is replaced and /readyz says so.
      queryTimeoutMs: env.EVENT_QUERY_TIMEOUT_MS,
    },
    // Traces over OTLP/HTTP to this collector (its base URL; /v1/traces is added); off when unset.
    telemetry: { endpoint: env.OTEL_EXPORTER_OTLP_ENDPOINT },
    webhooks: {
      /** Undefined unless WEBHOOK_SECRET_KEY is set (or `allowDevSecret`): see `requireWebhookSecretKey`. */
      secretKey: env.WEBHOOK_SECRET_KEY,
      // The SSRF guard, whatever NODE_ENV says: https only, and only public addresses (checked at
      // registration and on each delivery), unless WEBHOOK_ALLOW_PRIVATE_URLS=true (local development).
      strictUrls: env.WEBHOOK_ALLOW_PRIVATE_URLS !== true,
      timeoutMs: env.WEBHOOK_TIMEOUT_MS,
      retryHours: env.WEBHOOK_RETRY_HOURS,
      retryDelayMs: env.WEBHOOK_RETRY_DELAY_MS,
      retryDelayMaxMs: env.WEBHOOK_RETRY_DELAY_MAX_MS,
      // Deliveries one worker process makes at once, and at most this many of them to one endpoint.
      concurrency: env.WEBHOOK_CONCURRENCY,
      endpointConcurrency: env.WEBHOOK_ENDPOINT_CONCURRENCY,
      dispatchIntervalMs: env.WEBHOOK_DISPATCH_INTERVAL_MS,
    },
    // Payee safety, amounts in pence: see src/payees/ and src/payments/limits.ts, holds.ts.
    payeeSafety: {
      /** A payment above this to a recipient that is not a saved payee needs a payee check. */
      checkThreshold: env.PAYEE_CHECK_THRESHOLD,
      /** Per customer per London calendar day, over PENDING, COMPLETED and HELD payments. */
      dailyLimit: env.DAILY_PAYMENT_LIMIT,
      /** A payment of this much or more is HELD for an operator's review. */
      reviewThreshold: env.REVIEW_THRESHOLD,
      /** The first payment to a payee saved less than this long ago is HELD. */
      newPayeeSeconds: env.NEW_PAYEE_HOURS * 3600,
      /** A payment HELD this long is rejected automatically, money back. */
      holdMaxSeconds: env.HOLD_MAX_HOURS * 3600,
    },
    // Crash injection for the crash-safety tests and the chaos run; never honoured in production.
    failpoints:
      env.NODE_ENV === 'production'
        ? []
        : (env.FAILPOINTS ?? '')
            .split(',')
            .map((f) => f.trim())
            .filter(Boolean),
    // Off in production unless asked for: the schema and a console are a map for attackers.
    ide: env.GRAPHQL_IDE ?? env.NODE_ENV !== 'production',
    introspection: env.GRAPHQL_INTROSPECTION ?? env.GRAPHQL_IDE ?? env.NODE_ENV !== 'production',
  }));

/**
 * How every pool connects (src/db/connection.ts). DATABASE_URL is taken to be a transaction pooler
 * when DIRECT_DATABASE_URL is set (the direct address is there because DATABASE_URL cannot hold a
 * session), unless DATABASE_POOL_MODE says otherwise.
 */
function databaseSession(env: {
  DIRECT_DATABASE_URL?: string | undefined;
  DATABASE_POOL_MODE?: 'direct' | 'transaction' | undefined;
  DATABASE_PREPARED_STATEMENTS?: boolean | undefined;
  DATABASE_CONNECT_TIMEOUT_MS: number;
  DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS: number;
  DATABASE_LOCK_TIMEOUT_MS: number;
  DATABASE_STATEMENT_TIMEOUT_MS: number;
}): DatabaseSession {
  const pooled = (env.DATABASE_POOL_MODE ?? (env.DIRECT_DATABASE_URL ? 'transaction' : 'direct')) === 'transaction';
  return {
    pooled,
    // Named statements save a parse and plan per query on a direct connection (bench/README.md);
    // through a pooler a name made on one server connection is missing on the next (26000) or
    // clashes with another client's (42P05).
    preparedStatements: env.DATABASE_PREPARED_STATEMENTS ?? !pooled,
    connectTimeoutMs: env.DATABASE_CONNECT_TIMEOUT_MS,
    timeouts: {
      idleInTransactionMs: env.DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS,
      lockMs: env.DATABASE_LOCK_TIMEOUT_MS,
      statementMs: env.DATABASE_STATEMENT_TIMEOUT_MS,
    },
  };
}

/** Raised when the environment is unusable; the message names every bad variable. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

export interface LoadConfigOptions {
  /**
   * Sign and verify with the repository's development secret when AUTH_JWT_SECRET is unset, and
   * encrypt webhook secrets with its development key when WEBHOOK_SECRET_KEY is unset (never in
   * production). Only the local all-in-one demo (`npm start`, tools/start.ts) and `npm run token --
   * --dev` pass this.
   */
  allowDevSecret?: boolean;
}

/** Parses the environment (by default `process.env`) into a `Config`, or throws a `ConfigError`. */
export function loadConfig(env: Record<string, string | undefined> = process.env, options: LoadConfigOptions = {}): Config {
  // Empty strings mean "unset", as they do for most twelve-factor tools.
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = configSchema.safeParse(cleaned);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.') || '(environment)'}: ${i.message}`);
    throw new ConfigError(`Invalid environment:\n${lines.join('\n')}`);
  }
  const config = parsed.data;
  // Production without a secret or a key was refused above, so the fallbacks are for development only.
  if (!options.allowDevSecret) return config;
  return {
    ...config,
    jwtSecret: config.jwtSecret ?? DEV_JWT_SECRET,
    webhooks: { ...config.webhooks, secretKey: config.webhooks.secretKey ?? DEV_WEBHOOK_SECRET_KEY },
  };
}

/** The JWT secret of a process that signs or verifies tokens; a `ConfigError` naming AUTH_JWT_SECRET without one. */
export function requireJwtSecret(config: Pick<Config, 'jwtSecret'>): string {
  if (config.jwtSecret === undefined) {
    throw new ConfigError(
      'Invalid environment:\n  AUTH_JWT_SECRET: is required (32+ random bytes); only `npm start`, the local demo, has a built-in one',
    );
  }
  return config.jwtSecret;
}

/**
 * The key that encrypts webhook secrets, for an API or worker process; a `ConfigError` naming
 * WEBHOOK_SECRET_KEY without one, whatever NODE_ENV says (secrets encrypted under a key everyone
 * knows are not secret).
 */
export function requireWebhookSecretKey(config: Pick<Config, 'webhooks'>): Buffer {
  if (config.webhooks.secretKey === undefined) {
    throw new ConfigError(
      'Invalid environment:\n  WEBHOOK_SECRET_KEY: is required (32 random bytes: openssl rand -hex 32); only `npm start`, the local demo, has a built-in one',
    );
  }
  return config.webhooks.secretKey;
}

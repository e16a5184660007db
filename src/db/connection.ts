import type pg from 'pg';

/**
 * How every `pg` client and pool of the service connects: the same rules for Prisma's pool,
 * pg-boss's, the event feed's client and the rate limiter's pool (README, "PgBouncer").
 */

/** Server-side bounds on every session of the service (0 turns one off, as in PostgreSQL). */
export interface SessionTimeouts {
  /** A session idle inside a transaction this long is ended by the server, releasing its locks and the event horizon. */
  idleInTransactionMs: number;
  /** A statement waiting this long for a lock fails (55P03) instead of queueing behind a stuck holder. */
  lockMs: number;
  /** A statement running this long is cancelled (57014). */
  statementMs: number;
}

export interface DatabaseSession {
  /**
   * DATABASE_URL is a transaction pooler (PgBouncer `pool_mode = transaction`): the startup packet
   * carries nothing but `application_name` (1.18 refuses every parameter it does not track), so the
   * timeouts come from the role's settings in the database, which `npm run migrate` writes.
   */
  pooled: boolean;
  /** Name each SQL text so it is parsed and planned once per connection; never through a transaction pooler before PgBouncer 1.21. */
  preparedStatements: boolean;
  /** Giving up on opening a connection: an unreachable database answers quickly instead of hanging a request. */
  connectTimeoutMs: number;
  timeouts: SessionTimeouts;
}

/** What a test or tool client gets when it does not say: a direct connection, no server-side bounds. */
export const UNBOUNDED_SESSION: DatabaseSession = {
  pooled: false,
  preparedStatements: true,
  connectTimeoutMs: 10_000,
  timeouts: { idleInTransactionMs: 0, lockMs: 0, statementMs: 0 },
};

// A peer that vanished (a VM paused, a network partition, a failover) is found by TCP keepalive
// within about a minute rather than the kernel's two hours.
const KEEPALIVE_INITIAL_DELAY_MS = 10_000;

/**
 * The connection options of one pool or client. On a direct connection the timeouts travel in the
 * startup packet (free: no statement per transaction), tighter per pool where `statementMs` says so;
 * through a pooler they are left to the role settings (`roleTimeoutStatements`).
 */
export function connectionOptions(
  session: DatabaseSession,
  options: { applicationName: string; statementMs?: number },
): Pick<
  pg.ClientConfig,
  | 'application_name'
  | 'keepAlive'
  | 'keepAliveInitialDelayMillis'
  | 'connectionTimeoutMillis'
  | 'statement_timeout'
  | 'lock_timeout'
  | 'idle_in_transaction_session_timeout'
> {
  const common = {
    application_name: options.applicationName,
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_INITIAL_DELAY_MS,
    connectionTimeoutMillis: session.connectTimeoutMs,
  };
  if (session.pooled) return common;
  const { timeouts } = session;
  return {
    ...common,
    statement_timeout: options.statementMs ?? timeouts.statementMs,
    lock_timeout: timeouts.lockMs,
    idle_in_transaction_session_timeout: timeouts.idleInTransactionMs,
  };
}

/**
 * The statements that make the timeouts the defaults of every new session of the connecting role in
 * the current database, whatever it connects through (PgBouncer's server connections included). An
 * `ALTER ROLE ... IN DATABASE` needs the names as identifiers, so it is built with format() in the
 * server; run by `npm run migrate` on its direct connection. Existing sessions keep their values.
 */
export function roleTimeoutStatements(timeouts: SessionTimeouts): string[] {
  const settings: Array<[string, number]> = [
    ['idle_in_transaction_session_timeout', timeouts.idleInTransactionMs],
    ['lock_timeout', timeouts.lockMs],
    ['statement_timeout', timeouts.statementMs],
  ];
  return settings.map(
    ([name, ms]) => `DO $$ BEGIN
  EXECUTE format('ALTER ROLE %I IN DATABASE %I SET ${name} = %L', current_user, current_database(), '${Math.trunc(ms)}ms');
END $$`,
  );
}

// SQLSTATEs that mean "the database is unreachable, went away or could not serve in time; nothing
// was written, try again": the connection classes (08xxx), shutdowns and start-ups (57P01-57P03),
// too many connections, a session ended for idling in its transaction (25P03, which only a frozen or
// partitioned client sees), and the bounded waits above giving up (55P03 lock_timeout, 57014
// statement_timeout): the transaction rolled back, so the same idempotency key is safe to retry.
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300', '25P03', '55P03', '57014']);
// Node's socket errors and node-postgres's own messages when it has no connection.
const UNAVAILABLE_ERRNOS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
const UNAVAILABLE_MESSAGES =
  /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|Connection ended|server closed the connection|terminating connection|the database system is (starting up|shutting down|in recovery)|Can't reach database server|Server has closed the connection|Timed out fetching a new connection|ConnectionClosed|DatabaseNotReachable|SocketTimeout|TooManyConnections/i;
// Prisma's own codes for the same: P1001 cannot reach, P1002 timed out, P1008 operation timed out,
// P1017 server closed the connection, P2024 no connection from the pool in time.
const UNAVAILABLE_PRISMA_CODES = new Set(['P1001', 'P1002', 'P1008', 'P1017', 'P2024']);

/**
 * True when `error` (or anything in its `cause` chain) says the database could not be reached or
 * dropped the connection: a retryable outage, not a bug. Clients get 503 SERVICE_UNAVAILABLE.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  const seen = new Set<unknown>();
  // Prisma wraps the driver's error: PrismaClientKnownRequestError.meta.driverAdapterError.cause
  // carries the SQLSTATE (originalCode) or the adapter's kind.
  const pending: unknown[] = [error];
  while (pending.length > 0) {
    const current = pending.shift();
    if (typeof current !== 'object' || current === null || seen.has(current)) continue;
    seen.add(current);
    const e = current as {
      code?: unknown;
      message?: unknown;
      cause?: unknown;
      originalCode?: unknown;
      kind?: unknown;
      meta?: { driverAdapterError?: unknown };
    };
    for (const code of [e.code, e.originalCode]) {
      if (typeof code !== 'string') continue;
      if (code.startsWith('08') && code.length === 5) return true;
      if (UNAVAILABLE_SQLSTATES.has(code) || UNAVAILABLE_ERRNOS.has(code) || UNAVAILABLE_PRISMA_CODES.has(code)) return true;
    }
    if (typeof e.kind === 'string' && /^(DatabaseNotReachable|ConnectionClosed|SocketTimeout|TooManyConnections)$/.test(e.kind))
      return true;
    if (typeof e.message === 'string' && UNAVAILABLE_MESSAGES.test(e.message)) return true;
    if (current instanceof AggregateError) pending.push(...current.errors);
    pending.push(e.cause, e.meta?.driverAdapterError);
  }
  return false;
}

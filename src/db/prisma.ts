import { createHash } from 'node:crypto';
import { PrismaPg } from '@prisma/adapter-pg';
import { type Prisma, PrismaClient } from '../generated/prisma/client.ts';
import { connectionOptions, type DatabaseSession, UNBOUNDED_SESSION } from './connection.ts';

export type {
  Account,
  Customer,
  LedgerEntry,
  OperatorAction,
  Payee,
  PayeeCheck,
  Payment,
  PaymentAttempt,
  ProviderCredit,
  ProviderEventQuarantine,
  ReconciliationBreak,
  StandingOrder,
  WebhookDelivery,
  WebhookEndpoint,
} from '../generated/prisma/client.ts';
export { PrismaClient };

/** The client handed to `prisma.$transaction(async (tx) => ...)`. */
export type Tx = Prisma.TransactionClient;

/** Distinct SQL texts that get a server-side prepared statement; any beyond run unnamed. */
const MAX_PREPARED_STATEMENTS = 500;

/**
 * Names each distinct SQL text so node-postgres prepares it once per connection and then only
 * binds and executes it: PostgreSQL skips parsing and planning on every later run (measured in
 * bench/README.md). Bounded, so queries with varying text cannot grow every connection's cache.
 */
function preparedStatementNames(): (query: { sql: string }) => string | undefined {
  const names = new Map<string, string>();
  return ({ sql }) => {
    let name = names.get(sql);
    if (name === undefined && names.size < MAX_PREPARED_STATEMENTS) {
      name = `p_${createHash('sha1').update(sql).digest('hex').slice(0, 20)}`;
      names.set(sql, name);
    }
    return name;
  };
}

/**
 * A Prisma client on a node-postgres pool of `poolSize` connections. `session` says how it connects
 * (config.database: timeouts, keepalive, named statements or not; a direct, unbounded connection
 * when omitted, for tests and tools). `onError` hears a connection lost while idle or inside a
 * transaction (the pool replaces it; the query that used it fails on its own). `onQuery` sees the
 * text of every SQL statement it sends (tests count them to prove that nested reads are batched).
 */
export function createPrisma(options: {
  databaseUrl: string;
  poolSize: number;
  applicationName?: string;
  session?: DatabaseSession;
  onError?: (error: Error) => void;
  onQuery?: (sql: string) => void;
}): PrismaClient {
  const session = options.session ?? UNBOUNDED_SESSION;
  const onError = options.onError ?? (() => undefined);
  const adapter = new PrismaPg(
    {
      connectionString: options.databaseUrl,
      max: options.poolSize,
      ...connectionOptions(session, { applicationName: options.applicationName ?? 'payments' }),
    },
    {
      // The adapter listens to its pool's and its transactions' connections anyway (a lost idle
      // connection never crashes the process); these make the loss visible in the log.
      onPoolError: onError,
      onConnectionError: onError,
      ...(session.preparedStatements ? { statementNameGenerator: preparedStatementNames() as (query: { sql: string }) => string } : {}),
    },
  );
  const { onQuery } = options;
  // 'minimal': Prisma's other formats capture a stack (`new Error()`) on every query to point an
  // error at its caller (bench/README.md has what it costs); our logs carry the error's own stack.
  const errorFormat = 'minimal';
  if (!onQuery) return new PrismaClient({ adapter, errorFormat });
  const client = new PrismaClient({ adapter, errorFormat, log: [{ emit: 'event', level: 'query' }] });
  client.$on('query', (event) => onQuery(event.query));
  return client;
}

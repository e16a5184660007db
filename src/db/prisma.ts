import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash } from 'node:crypto';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
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

/** Runs one SQL statement with `$n` parameters and returns its rows. */
export type Sql = <T>(text: string, params: unknown[]) => Promise<T[]>;

/** The `Sql` runner of a Prisma client or transaction client (its raw queries). */
export function prismaSql(prisma: { $queryRawUnsafe<T>(query: string, ...values: unknown[]): Promise<T> }): Sql {
  return <T>(text: string, params: unknown[]) => prisma.$queryRawUnsafe<T[]>(text, ...params);
}

/** Options of an interactive transaction, as `prisma.$transaction` takes them. */
export interface TransactionOptions {
  maxWait?: number;
  timeout?: number;
}

/**
 * Runs `work` in one interactive Prisma transaction. Besides the transaction client, `work` gets
 * `sql`, which runs a statement on that transaction's own `pg` connection: inside the same
 * transaction, but without Prisma's request pipeline, query interpreter and row conversion (the
 * hot path's one statement; bench/README.md has what it costs). Its rows carry the types Prisma's
 * raw queries give for int8 (`bigint`), date (a `Date` at UTC midnight) and timestamptz (a `Date`);
 * other types come as node-postgres gives them, so a statement run through `sql` returns none that
 * Prisma converts otherwise (timestamp without time zone, numeric, bytea).
 */
export type RunTransaction = <T>(work: (tx: Tx, sql: Sql) => Promise<T>, options?: TransactionOptions) => Promise<T>;

export interface Database {
  prisma: PrismaClient;
  transaction: RunTransaction;
}

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

// Prisma's raw queries give int8 as bigint and a date as UTC midnight; node-postgres's defaults
// give a string and local midnight. A timestamptz is the same Date either way.
const INT8 = 20;
const DATE = 1082;
const PRISMA_TYPES = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === INT8
      ? (text: string) => BigInt(text)
      : oid === DATE
        ? (text: string) => new Date(`${text}T00:00:00.000Z`)
        : pg.types.getTypeParser(oid, format === 'binary' ? 'binary' : 'text')) as typeof pg.types.getTypeParser,
};

/** Where a transaction begun in this async scope records the connection it took from the pool. */
interface ConnectionSlot {
  client: pg.PoolClient | null;
  taken: number;
}

/**
 * The pool Prisma's adapter draws from. A transaction's connection is taken with `connect()` in
 * the async scope of the `$transaction` call, so a scope opened around that call (`slots.run`)
 * learns which connection the transaction holds. Queries outside a transaction use
 * `pool.query`, which takes its connection through the callback form and is never recorded.
 */
class TransactionPool extends pg.Pool {
  readonly #slots: AsyncLocalStorage<ConnectionSlot>;

  constructor(config: pg.PoolConfig, slots: AsyncLocalStorage<ConnectionSlot>) {
    super(config);
    this.#slots = slots;
  }

  override connect(): Promise<pg.PoolClient>;
  override connect(callback: (err: Error | undefined, client: pg.PoolClient | undefined, done: (release?: unknown) => void) => void): void;
  override connect(
    callback?: (err: Error | undefined, client: pg.PoolClient | undefined, done: (release?: unknown) => void) => void,
  ): Promise<pg.PoolClient> | undefined {
    if (callback) {
      super.connect(callback);
      return undefined;
    }
    const slot = this.#slots.getStore();
    const connecting = super.connect();
    if (!slot) return connecting;
    slot.taken += 1;
    return connecting.then((client) => {
      slot.client = client;
      return client;
    });
  }
}

/**
 * A Prisma client on a node-postgres pool of `poolSize` connections. `session` says how it connects
 * (config.database: timeouts, keepalive, named statements or not; a direct, unbounded connection
 * when omitted, for tests and tools). `onError` hears a connection lost while idle or inside a
 * transaction (the pool replaces it; the query that used it fails on its own). `onQuery` sees the
 * text of every SQL statement it sends (tests count them to prove that nested reads are batched),
 * those `transaction` sends on a transaction's own connection included.
 */
export function openDatabase(options: {
  databaseUrl: string;
  poolSize: number;
  applicationName?: string;
  session?: DatabaseSession;
  onError?: (error: Error) => void;
  onQuery?: (sql: string) => void;
}): Database {
  const session = options.session ?? UNBOUNDED_SESSION;
  const onError = options.onError ?? (() => undefined);
  const slots = new AsyncLocalStorage<ConnectionSlot>();
  const pool = new TransactionPool(
    {
      connectionString: options.databaseUrl,
      max: options.poolSize,
      ...connectionOptions(session, { applicationName: options.applicationName ?? 'payments' }),
    },
    slots,
  );
  const statementName = session.preparedStatements ? preparedStatementNames() : () => undefined;
  const adapter = new PrismaPg(pool, {
    // The adapter listens to its pool's and its transactions' connections anyway (a lost idle
    // connection never crashes the process); these make the loss visible in the log.
    onPoolError: onError,
    onConnectionError: onError,
    // The pool is ours, so Prisma's $disconnect must end it. A client is disconnected only at
    // shutdown: used again, the adapter would open a plain pool, and `transaction` would refuse to
    // run (it finds no connection recorded) rather than run outside the transaction.
    disposeExternalPool: true,
    ...(session.preparedStatements ? { statementNameGenerator: statementName as (query: { sql: string }) => string } : {}),
  });
  const { onQuery } = options;
  // 'minimal': Prisma's other formats capture a stack (`new Error()`) on every query to point an
  // error at its caller (bench/README.md has what it costs); our logs carry the error's own stack.
  const errorFormat = 'minimal';
  let prisma: PrismaClient;
  if (onQuery) {
    const logging = new PrismaClient({ adapter, errorFormat, log: [{ emit: 'event', level: 'query' }] });
    logging.$on('query', (event) => onQuery(event.query));
    prisma = logging;
  } else {
    prisma = new PrismaClient({ adapter, errorFormat });
  }

  const transaction: RunTransaction = (work, transactionOptions) => {
    const slot: ConnectionSlot = { client: null, taken: 0 };
    return slots.run(slot, () =>
      prisma.$transaction(async (tx) => {
        const { client } = slot;
        // Exactly the connection this transaction began on, or the statement could run outside it.
        if (!client || slot.taken !== 1) throw new Error(`the transaction's connection is unknown (${slot.taken} taken in its scope)`);
        const sql: Sql = async <R>(text: string, params: unknown[]) => {
          onQuery?.(text);
          const name = statementName({ sql: text });
          const result = await client.query<R & pg.QueryResultRow>({
            text,
            values: params,
            types: PRISMA_TYPES,
            ...(name ? { name } : {}),
          });
          return result.rows;
        };
        return work(tx, sql);
      }, transactionOptions),
    );
  };
  return { prisma, transaction };
}

/** A Prisma client alone (`openDatabase` without its transaction runner): for tools and tests. */
export function createPrisma(options: Parameters<typeof openDatabase>[0]): PrismaClient {
  return openDatabase(options).prisma;
}

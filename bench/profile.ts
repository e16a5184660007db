import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { mkdir, mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { signToken } from '../src/auth.ts';
import { loadConfig } from '../src/config.ts';
import { startEmulator } from '../src/emulator/server.ts';
import { freePort } from '../tools/free-port.ts';
import { startProcess } from '../tools/processes.ts';
import { cleanupOnSignals } from './cleanup.ts';
import { ACCOUNTS, accountIdOf, customerIdOf, prepareDatabase, queryOnce, startBenchDatabase } from './database.ts';
import { runLoad, runOpenLoop, type Sender } from './load.ts';
import { BENCH_DAILY_LIMIT, benchApiEnv, cpuSeconds, sampleRss, startScriptFlags } from './processes.ts';
import { loadProfile, summarize, summaryMarkdown } from './profile-summary.ts';
import { drain, queueDepth, settledSoFar } from './steady.ts';

/**
 * `node bench/profile.ts`: a CPU profile of the API under sendPayment load, and its start-up.
 * The API runs as the bench runs it (bench/process-api.ts, the node flags of `npm run start:api`,
 * NODE_ENV=production, LOG_LEVEL=warn, rate limit off) with `--cpu-prof`, on a fresh embedded
 * PostgreSQL with the bench's 10,000 funded accounts. It measures the time to /readyz 200, then
 * PROFILE_CLIENTS (32) closed loops for PROFILE_SECONDS (20) after a warm-up, stops the API (which
 * writes the profile on exit) and prints: API CPU time per accepted payment (from /proc, not the
 * profile), peak RSS, and the profile's top frames by package and by function for the load window
 * and for start-up. The .cpuprofile is kept (PROFILE_DIR, default bench/profiles/) for Chrome's
 * DevTools or speedscope.
 *
 * PROFILE_RATE=200 instead runs the steady state: the API and a worker (its defaults, 50 ms
 * provider latency, PROFILE_PROVIDER_MS) under an open loop at that rate (latency from when each
 * request was due), and reports both processes' CPU per payment, peak RSS and JS heap, and
 * settlement.
 */
const CLIENTS = Number(process.env.PROFILE_CLIENTS ?? 32);
const SECONDS = Number(process.env.PROFILE_SECONDS ?? 20);
const WARMUP_SECONDS = 3;
const DIR = process.env.PROFILE_DIR ?? fileURLToPath(new URL('./profiles/', import.meta.url));
const log = (line: string) => process.stderr.write(`[profile] ${line}\n`);

async function main(): Promise<void> {
  const cleanup = cleanupOnSignals(log);
  try {
    const loadAtStart = os.loadavg().map((l) => l.toFixed(2));
    const config = loadConfig({ DATABASE_URL: process.env.DATABASE_URL, DAILY_PAYMENT_LIMIT: BENCH_DAILY_LIMIT });
    const db = await startBenchDatabase(config, log);
    cleanup.add('database', () => db.stop());
    await prepareDatabase(db.url, config);
    const secret = randomBytes(48).toString('base64url');
    const senders: Sender[] = await Promise.all(
      Array.from({ length: ACCOUNTS }, async (_, i) => ({
        accountId: accountIdOf(i + 1),
        token: await signToken({ role: 'customer', customerId: customerIdOf(i + 1) }, secret, 3600),
      })),
    );
    await mkdir(DIR, { recursive: true });
    const profileDir = await mkdtemp(path.join(DIR, 'run-'));
    const port = await freePort();
    const spawnedAt = performance.now();
    const api = await startProcess(
      'bench/process-api.ts',
      benchApiEnv({ databaseUrl: db.url, port, jwtSecret: secret, webhookSecretKey: randomBytes(32).toString('hex') }),
      { url: `http://127.0.0.1:${port}/readyz` },
      { nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, ...(process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean)] },
    );
    cleanup.add('API', () => api.stop());
    const readyMs = performance.now() - spawnedAt;
    const startupCpu = cpuSeconds(api.pid);
    log(
      `API ready (/readyz 200) after ${readyMs.toFixed(0)} ms, ${(startupCpu * 1000).toFixed(0)} ms of CPU; load average ${loadAtStart.join(' ')}`,
    );

    const url = `http://127.0.0.1:${port}/graphql`;
    const pickSender = () => senders[Math.floor(Math.random() * senders.length)] as Sender;
    const rate = Number(process.env.PROFILE_RATE ?? 0);
    if (rate > 0) {
      const emulator = await startEmulator({ apiKey: config.providerApiKey, port: 0, host: '127.0.0.1' });
      cleanup.add('emulator', () => emulator.close());
      emulator.setFaults({ latencyMs: Number(process.env.PROFILE_PROVIDER_MS ?? 50) });
      const workerPort = await freePort();
      const workerSpawned = performance.now();
      const worker = await startProcess(
        'bench/process-worker.ts',
        {
          DATABASE_URL: db.url,
          WEBHOOK_SECRET_KEY: randomBytes(32).toString('hex'),
          PROVIDER_URL: emulator.url,
          PROVIDER_API_KEY: config.providerApiKey,
          LOG_LEVEL: 'warn',
          WORKER_PORT: String(workerPort),
          NODE_OPTIONS: process.env.BENCH_WORKER_NODE_OPTIONS ?? startScriptFlags('start:worker'),
        },
        { url: `http://127.0.0.1:${workerPort}/readyz` },
      );
      cleanup.add('worker', () => worker.stop());
      const workerReadyMs = performance.now() - workerSpawned;
      const ops = `http://127.0.0.1:${workerPort}`;
      await runOpenLoop({ url, rate, seconds: WARMUP_SECONDS, keyPrefix: `warm-${Date.now()}-`, pickSender });
      await drain(db.url, 30);
      const rss = { api: sampleRss(api.pid), worker: sampleRss(worker.pid) };
      const cpu = { api: cpuSeconds(api.pid), worker: cpuSeconds(worker.pid) };
      const settledBefore = await settledSoFar(ops);
      const started = performance.now();
      const load = await runOpenLoop({ url, rate, seconds: SECONDS, keyPrefix: `steady-${Date.now()}-`, pickSender });
      const elapsed = (performance.now() - started) / 1000;
      const settled = (await settledSoFar(ops)) - settledBefore;
      const apiCpu = (cpuSeconds(api.pid) - cpu.api) * 1000;
      const workerCpu = (cpuSeconds(worker.pid) - cpu.worker) * 1000;
      const depth = await queueDepth(db.url);
      const drained = await drain(db.url, 60);
      const heap = (await (await fetch(`${ops}/metrics`)).text()).match(/^payments_nodejs_heap_size_used_bytes (\S+)$/m)?.[1];
      process.stdout.write(
        `## open loop at ${rate}/s for ${SECONDS} s, provider ${process.env.PROFILE_PROVIDER_MS ?? 50} ms\n\n` +
          `offered ${load.offered}, accepted ${load.accepted} (${(load.accepted / elapsed).toFixed(0)}/s), errors ${load.errors}${load.errorSamples.length ? ` (${load.errorSamples.join(' | ')})` : ''}; ` +
          `latency from due time p50/p95/p99 ${load.p50Ms.toFixed(1)}/${load.p95Ms.toFixed(1)}/${load.p99Ms.toFixed(1)} ms; ` +
          `settled ${settled} (${(settled / elapsed).toFixed(0)}/s), queue at the end ${depth}, drained in ${drained === null ? '-' : drained.toFixed(1)} s\n` +
          `API: CPU ${(apiCpu / load.accepted).toFixed(3)} ms per accepted payment, peak RSS ${rss.api.stop().toFixed(0)} MB, ready after ${readyMs.toFixed(0)} ms\n` +
          `worker: CPU ${(workerCpu / Math.max(1, settled)).toFixed(3)} ms per settled payment, peak RSS ${rss.worker.stop().toFixed(0)} MB, heap used at the end ${heap ? (Number(heap) / 1048576).toFixed(0) : '-'} MB, ready after ${workerReadyMs.toFixed(0)} ms\n` +
          `load average ${loadAtStart.join(' ')} at the start, ${os
            .loadavg()
            .map((l) => l.toFixed(2))
            .join(' ')} at the end\n`,
      );
      return;
    }
    await runLoad({ url, clients: CLIENTS, seconds: WARMUP_SECONDS, keyPrefix: `warm-${Date.now()}-`, pickSender });
    // Transactions PostgreSQL committed in the window (each autocommit statement counts as one):
    // per payment, a count that the machine's load does not move.
    const transactions = async () =>
      Number(
        (
          await queryOnce<{ n: string }>(
            db.url,
            'SELECT (xact_commit + xact_rollback)::text AS n FROM pg_stat_database WHERE datname = current_database()',
          )
        )[0]?.n,
      );
    const xactBefore = await transactions();
    const rss = sampleRss(api.pid);
    const cpuBefore = cpuSeconds(api.pid);
    const loadFrom = (performance.now() - spawnedAt) / 1000;
    const result = await runLoad({ url, clients: CLIENTS, seconds: SECONDS, keyPrefix: `profile-${Date.now()}-`, pickSender });
    const loadTo = (performance.now() - spawnedAt) / 1000;
    const cpuMs = (cpuSeconds(api.pid) - cpuBefore) * 1000;
    const peakRss = rss.stop();
    // pg_stat_database is updated when a backend reports (at most every second or so): let it.
    await new Promise((r) => setTimeout(r, 1_500));
    const xactPerPayment = ((await transactions()) - xactBefore) / result.accepted;
    const loadAtEnd = os.loadavg().map((l) => l.toFixed(2));
    await api.stop();

    const file = readdirSync(profileDir).find((f) => f.endsWith('.cpuprofile'));
    if (!file) throw new Error(`no .cpuprofile in ${profileDir}`);
    const profile = loadProfile(path.join(profileDir, file));
    const top = Number(process.env.PROFILE_TOP ?? 25);
    process.stdout.write(
      [
        `## sendPayment at ${CLIENTS} clients, ${SECONDS} s (profile ${path.relative(process.cwd(), path.join(profileDir, file))})`,
        '',
        `accepted ${result.accepted} (${result.acceptedPerSec.toFixed(0)}/s), errors ${result.errors}${result.errorSamples.length ? ` (${result.errorSamples.join(' | ')})` : ''}, ` +
          `p50/p99 ${result.p50Ms.toFixed(1)}/${result.p99Ms.toFixed(1)} ms; API CPU ${(cpuMs / result.accepted).toFixed(3)} ms per accepted payment (/proc); ` +
          `database transactions per payment ${xactPerPayment.toFixed(2)}; peak API RSS ${peakRss.toFixed(0)} MB; ready after ${readyMs.toFixed(0)} ms (${(startupCpu * 1000).toFixed(0)} ms CPU); ` +
          `load average ${loadAtStart.join(' ')} at the start, ${loadAtEnd.join(' ')} at the end`,
        '',
        summaryMarkdown(summarize(profile, { fromSeconds: loadFrom, toSeconds: loadTo, top }), { count: result.accepted, what: 'payment' }),
        '',
        `## start-up, until /readyz answered 200 (${readyMs.toFixed(0)} ms)`,
        '',
        summaryMarkdown(summarize(profile, { toSeconds: readyMs / 1000, top: 15 })),
        '',
      ].join('\n'),
    );
  } finally {
    await cleanup.run();
    cleanup.dispose();
  }
}

main().catch((error: unknown) => {
  log(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exitCode = 1;
});

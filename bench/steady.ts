import type { RunningEmulator } from '../src/emulator/server.ts';
import { QUEUES } from '../src/jobs/queues.ts';
import type { StartedProcess } from '../tools/processes.ts';
import { queryOnce } from './database.ts';
import { runOpenLoop, type Sender } from './load.ts';
import { cpuSeconds, sampleRss } from './processes.ts';
import type { SteadyResult } from './report.ts';

/**
 * Steady state: the API and a worker running together while an open loop offers a fixed rate, the
 * provider answering after a fixed latency. Acceptance and settlement are measured over the same
 * window, so a worker that cannot keep up shows as settled/s below accepted/s and a queue at the end.
 */

/** Settlement jobs waiting (created or retry), read through pg-boss's fetch index as /metrics does. */
export async function queueDepth(url: string): Promise<number> {
  const rows = await queryOnce<{ n: string }>(
    url,
    `SELECT count(*)::text AS n FROM pgboss.job WHERE name = $1 AND state < 'active' AND NOT blocked`,
    [QUEUES.settle],
  );
  return Number(rows[0]?.n ?? 0);
}

/** Payments the worker has moved out of PENDING so far: its own counter, so no table is scanned. */
export async function settledSoFar(workerOpsUrl: string): Promise<number> {
  const text = await (await fetch(`${workerOpsUrl}/metrics`)).text();
  let total = 0;
  for (const match of text.matchAll(/^payments_settled_total\{[^}]*\} (\d+(?:\.\d+)?)$/gm)) total += Number(match[1]);
  return total;
}

/** Waits until the settlement queue is empty, up to `capSeconds`; seconds taken, or null. */
export async function drain(url: string, capSeconds: number): Promise<number | null> {
  const started = performance.now();
  while (performance.now() - started < capSeconds * 1000) {
    if ((await queueDepth(url)) === 0) return (performance.now() - started) / 1000;
    await new Promise((r) => setTimeout(r, 250));
  }
  return null;
}

export async function steadyPoint(options: {
  name: string;
  databaseUrl: string;
  apiUrl: string;
  api: StartedProcess;
  worker: StartedProcess;
  workerOpsUrl: string;
  emulator: RunningEmulator;
  providerLatencyMs: number;
  loadShare: number;
  maxRate: number;
  seconds: number;
  warmupSeconds: number;
  drainCapSeconds: number;
  pickSender: () => Sender;
}): Promise<SteadyResult> {
  const { name, databaseUrl } = options;
  const rate = Math.max(1, Math.round(options.maxRate * options.loadShare));
  options.emulator.setFaults({ latencyMs: options.providerLatencyMs });
  // Warm-up at the same rate, then start from an empty queue.
  await runOpenLoop({
    url: options.apiUrl,
    rate,
    seconds: options.warmupSeconds,
    keyPrefix: `${name}-warm-`,
    pickSender: options.pickSender,
  });
  await drain(databaseUrl, options.drainCapSeconds);

  const apiRss = sampleRss(options.api.pid);
  const workerRss = sampleRss(options.worker.pid);
  const settledBefore = await settledSoFar(options.workerOpsUrl);
  const cpuBefore = { api: cpuSeconds(options.api.pid), worker: cpuSeconds(options.worker.pid) };
  const started = performance.now();
  const load = await runOpenLoop({
    url: options.apiUrl,
    rate,
    seconds: options.seconds,
    keyPrefix: `${name}-`,
    pickSender: options.pickSender,
  });
  const settledAfter = await settledSoFar(options.workerOpsUrl);
  const elapsedSeconds = (performance.now() - started) / 1000;
  const apiCpu = cpuSeconds(options.api.pid) - cpuBefore.api;
  const workerCpu = cpuSeconds(options.worker.pid) - cpuBefore.worker;
  const queueDepthAtEnd = await queueDepth(databaseUrl);
  const drainSeconds = await drain(databaseUrl, options.drainCapSeconds);
  return {
    name,
    providerLatencyMs: options.providerLatencyMs,
    loadShare: options.loadShare,
    offeredPerSec: rate,
    acceptedPerSec: load.accepted / elapsedSeconds,
    offeredCount: load.offered,
    acceptedCount: load.accepted,
    settledPerSec: (settledAfter - settledBefore) / elapsedSeconds,
    queueDepthAtEnd,
    drainSeconds,
    p50Ms: load.p50Ms,
    p95Ms: load.p95Ms,
    p99Ms: load.p99Ms,
    errors: load.errors,
    errorSamples: load.errorSamples,
    apiCpuMsPerPayment: (apiCpu * 1000) / load.accepted,
    workerCpuMsPerPayment: (workerCpu * 1000) / (settledAfter - settledBefore),
    apiRssMb: apiRss.stop(),
    workerRssMb: workerRss.stop(),
  };
}

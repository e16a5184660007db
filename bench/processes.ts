/**
 * Measuring the bench's processes from the outside (/proc, Linux): memory and CPU time. They are
 * started by the repository's one launcher, tools/processes.ts.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * The node flags `npm run start:api` (or `start:worker`) starts its process with (package.json),
 * so the bench measures what ships.
 */
export function startScriptFlags(script: 'start:api' | 'start:worker'): string {
  const pkg = JSON.parse(readFileSync(fileURLToPath(new URL('../package.json', import.meta.url)), 'utf8')) as {
    scripts?: Record<string, string>;
  };
  const line = pkg.scripts?.[script]?.trim() ?? '';
  const file = script === 'start:api' ? 'main-api' : 'main-worker';
  const match = new RegExp(`^node\\s+(.*?)\\s*src/${file}\\.ts$`).exec(line);
  if (!match) throw new Error(`package.json ${script} is not "node [flags] src/${file}.ts": ${line}`);
  return match[1] ?? '';
}

/** A daily payment limit no bench payment meets: the bench measures payments, not refusals. */
export const BENCH_DAILY_LIMIT = '1000000000000';

/** The variables of `names` that are set in `env`: knobs passed through to a child process. */
export function pick(env: NodeJS.ProcessEnv, names: string[]): Record<string, string> {
  return Object.fromEntries(names.flatMap((n) => (env[n] ? [[n, env[n]]] : [])));
}

/**
 * The environment of the API as every bench script starts it (`bench/process-api.ts`): production,
 * the rate limit off, the bench's daily limit, and the heap settings `npm run start:api` uses unless
 * an experiment replaces them (BENCH_API_NODE_OPTIONS).
 */
export function benchApiEnv(options: {
  databaseUrl: string;
  port: number;
  jwtSecret: string;
  webhookSecretKey: string;
}): Record<string, string> {
  return {
    NODE_ENV: 'production',
    DATABASE_URL: options.databaseUrl,
    PORT: String(options.port),
    AUTH_JWT_SECRET: options.jwtSecret,
    WEBHOOK_SECRET_KEY: options.webhookSecretKey,
    SEND_PAYMENT_RATE_LIMIT_PER_MINUTE: '0',
    DAILY_PAYMENT_LIMIT: BENCH_DAILY_LIMIT,
    // Production keeps /metrics off the public port and serves it on METRICS_PORT: any free one.
    METRICS_PORT: '0',
    LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
    NODE_OPTIONS: process.env.BENCH_API_NODE_OPTIONS ?? startScriptFlags('start:api'),
    ...pick(process.env, ['DATABASE_POOL_SIZE', 'DATABASE_PREPARED_STATEMENTS']),
  };
}

/** Resident memory of a process in MB, from /proc (Linux). */
export function rssMb(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN);
    return kb / 1024;
  } catch {
    return NaN;
  }
}

/** User and system CPU time a process has used so far, in seconds, from /proc (Linux); NaN elsewhere. */
export function cpuTimes(pid: number): { user: number; system: number } {
  try {
    // Fields after the command name (which may hold spaces, hence the last ')'): utime is the 12th, stime the 13th.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { user: Number(fields[11]) / CLOCK_TICKS_PER_SECOND, system: Number(fields[12]) / CLOCK_TICKS_PER_SECOND };
  } catch {
    return { user: NaN, system: NaN };
  }
}

/** CPU time (user + system) a process has used so far, in seconds, from /proc (Linux); NaN elsewhere. */
export function cpuSeconds(pid: number): number {
  const { user, system } = cpuTimes(pid);
  return user + system;
}

/** Linux's USER_HZ: 100 on every mainstream architecture. */
const CLOCK_TICKS_PER_SECOND = 100;

/** Samples a process's RSS every 200 ms; `stop()` returns the peak seen. */
export function sampleRss(pid: number): { stop(): number } {
  let peak = rssMb(pid);
  const timer = setInterval(() => {
    const now = rssMb(pid);
    if (now > peak) peak = now;
  }, 200);
  return {
    stop() {
      clearInterval(timer);
      const now = rssMb(pid);
      return Math.max(peak, Number.isNaN(now) ? 0 : now);
    },
  };
}

import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

export interface Child {
  proc: ChildProcess;
  pid: number;
  /** stderr and error-level stdout lines, for the report when something goes wrong. */
  output(): string;
  stop(): Promise<void>;
}

/**
 * Runs `node <script>` (a path from the repository root) in its own process, as `npm run start:*` does. Extra node flags
 * (e.g. --cpu-prof) come from BENCH_NODE_FLAGS so a profile can be taken without code changes.
 */
export function spawnRole(script: string, env: Record<string, string>, nodeFlags: string[] = []): Child {
  const proc = spawn(process.execPath, [...nodeFlags, script], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  const keep = (c: Buffer) => {
    text = (text + c.toString()).slice(-20_000);
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  if (proc.pid === undefined) throw new Error(`could not start ${script}`);
  return {
    proc,
    pid: proc.pid,
    output: () => text,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Polls `url` until it answers 200, or fails after `timeoutMs` or when the child exits. */
export async function waitReady(url: string, child: Child, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.proc.exitCode !== null) throw new Error(`process exited before it was ready:\n${child.output()}`);
    const ok = await fetch(url)
      .then((r) => r.status === 200)
      .catch(() => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} not ready after ${timeoutMs} ms:\n${child.output()}`);
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

/** CPU time (user + system) a process has used so far, in seconds, from /proc (Linux); NaN elsewhere. */
export function cpuSeconds(pid: number): number {
  try {
    // Fields after the command name (which may hold spaces, hence the last ')'): utime is the 12th, stime the 13th.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return NaN;
  }
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

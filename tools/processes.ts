import { type ChildProcess, spawn } from 'node:child_process';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** A node process started by `startProcess`: its output, and how to stop or kill it. */
export interface StartedProcess {
  proc: ChildProcess;
  pid: number;
  /** The API URL, for API processes. */
  url: string | null;
  /** Log lines at level error or above. */
  errors: string[];
  /** Every JSON log line the process wrote. */
  logs: Array<Record<string, unknown>>;
  /** What the process wrote to stderr (a crash's stack trace lands here). */
  stderr(): string;
  /** stderr and the error log lines, for a report when something went wrong. */
  output(): string;
  /** Resolves when the process has exited, with its code or the signal that ended it. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Sends SIGTERM and resolves with the exit code (SIGKILL after 20 s if it has not exited). */
  stop(): Promise<number | null>;
  /** Sends SIGKILL: a crash, no clean-up. */
  kill(): Promise<void>;
}

/** When a started process counts as ready: it logged this message, or this URL answers 200. */
export type Readiness = string | { url: string };

/**
 * The one process launcher of the repository (tests, the chaos run, the bench). Starts
 * `node src/<script>` (or `node <script>` for a path from the repository root, such as
 * `bench/process-api.ts`) as its own process, the way `npm run start:*` does, and resolves once it is
 * ready: its log says `ready` (at the default LOG_LEVEL info), or `ready.url` answers 200.
 * `nodeFlags` go before the script (e.g. --cpu-prof for the bench); `readyTimeoutMs` (60 s by default)
 * is how long it may take to become ready.
 */
export async function startProcess(
  script: string,
  env: Record<string, string>,
  ready: Readiness,
  options: { nodeFlags?: string[]; readyTimeoutMs?: number } = {},
): Promise<StartedProcess> {
  const proc = spawn(process.execPath, [...(options.nodeFlags ?? []), script.includes('/') ? script : `src/${script}`], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const errors: string[] = [];
  const logs: Array<Record<string, unknown>> = [];
  const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const exited = ended.then((e) => e.code);
  let stderr = '';
  proc.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  if (proc.pid === undefined || !proc.stdout) throw new Error(`could not start ${script}`);
  const { pid } = proc;
  let logged: ((url: string | null) => void) | null = null;
  readline.createInterface({ input: proc.stdout }).on('line', (line) => {
    let entry: { level?: number; msg?: string; url?: string };
    try {
      entry = JSON.parse(line);
    } catch {
      return;
    }
    logs.push(entry);
    if ((entry.level ?? 0) >= 50) errors.push(line);
    if (typeof ready === 'string' && entry.msg === ready) logged?.(entry.url ?? null);
  });
  const what = typeof ready === 'string' ? `log "${ready}"` : `answer 200 at ${ready.url}`;
  let readyTimer: NodeJS.Timeout | undefined;
  const url = await new Promise<string | null>((resolve, reject) => {
    logged = resolve;
    void exited.then((code) => reject(new Error(`${script} exited with ${code} before it was ready:\n${stderr}`)));
    const limit = options.readyTimeoutMs ?? 60_000;
    readyTimer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`${script} did not ${what} within ${limit / 1000} s:\n${stderr}`));
    }, limit);
    if (typeof ready !== 'string')
      void answers(ready.url, () => proc.exitCode === null && proc.signalCode === null).then(() => resolve(null));
  }).finally(() => clearTimeout(readyTimer));
  return {
    proc,
    pid,
    output: () => [stderr, ...errors].join('\n'),
    url: url?.replace('localhost', '127.0.0.1') ?? null,
    errors,
    logs,
    stderr: () => stderr,
    exited: ended,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
    async kill() {
      if (proc.exitCode !== null) return;
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

/** Polls `url` until it answers 200, while `alive()` holds. */
async function answers(url: string, alive: () => boolean): Promise<void> {
  while (alive()) {
    const ok = await fetch(url).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import readline from 'node:readline';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface RoleProcess {
  proc: ChildProcess;
  /** The API URL, for API processes. */
  url: string | null;
  /** Log lines at level error or above. */
  errors: string[];
  /** Every JSON log line the process wrote. */
  logs: Array<Record<string, unknown>>;
  /** What the process wrote to stderr (a crash's stack trace lands here). */
  stderr(): string;
  /** Resolves when the process has exited, with its code or the signal that ended it. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Sends SIGTERM and resolves with the exit code. */
  stop(): Promise<number | null>;
  /** Sends SIGKILL: a crash, no clean-up. */
  kill(): Promise<void>;
}

/**
 * Starts `node src/<script>` as its own process (the way `npm run start:*` does) and resolves
 * once its log says it is ready.
 */
export async function startRole(script: string, env: Record<string, string>, readyMessage: string): Promise<RoleProcess> {
  const proc = spawn(process.execPath, [`src/${script}`], {
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
  let readyTimer: NodeJS.Timeout | undefined;
  const url = await new Promise<string | null>((resolve, reject) => {
    if (!proc.stdout) throw new Error(`${script}: no stdout to read`);
    const lines = readline.createInterface({ input: proc.stdout });
    lines.on('line', (line) => {
      let entry: { level?: number; msg?: string; url?: string };
      try {
        entry = JSON.parse(line);
      } catch {
        return;
      }
      logs.push(entry);
      if ((entry.level ?? 0) >= 50) errors.push(line);
      if (entry.msg === readyMessage) resolve(entry.url ?? null);
    });
    void exited.then((code) => reject(new Error(`${script} exited with ${code} before it was ready:\n${stderr}`)));
    readyTimer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`${script} did not log "${readyMessage}" within 60 s:\n${stderr}`));
    }, 60_000);
  }).finally(() => clearTimeout(readyTimer));
  return {
    proc,
    url: url?.replace('localhost', '127.0.0.1') ?? null,
    errors,
    logs,
    stderr: () => stderr,
    exited: ended,
    async stop() {
      if (proc.exitCode !== null) return proc.exitCode;
      proc.kill('SIGTERM');
      return exited;
    },
    async kill() {
      if (proc.exitCode !== null) return;
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

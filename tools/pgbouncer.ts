import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from './free-port.ts';

/**
 * A real PgBouncer (Debian's /usr/sbin/pgbouncer, or PGBOUNCER_PATH) in front of one PostgreSQL
 * server, for tests and the failover run: a generated ini on a free port, stock settings except
 * what is named here (`pool_mode = transaction` by default), every database name passed through
 * (`* = host=... port=...`), clients trusted, and `repoint()` to move it to another server the way
 * an HA manager does on failover.
 */
export interface PgBouncer {
  host: string;
  port: number;
  /** The URL of `database` through PgBouncer (user and password as given to `startPgBouncer`). */
  urlFor(database: string): string;
  /** `urlFor(options.database ?? 'postgres')`. */
  url: string;
  /** The admin console (`SHOW POOLS`, `SHOW SERVERS`, `RELOAD`, ...): simple queries only. */
  adminUrl: string;
  /**
   * Points every database at another server: rewrites the ini, RELOADs it, and RECONNECTs, so each
   * server connection is closed once its client's transaction ends and the next one goes to the new
   * address. Clients stay connected to PgBouncer.
   */
  repoint(host: string, port: number): Promise<void>;
  /** What PgBouncer wrote to its log, for a report when something went wrong. */
  log(): string;
  stop(): Promise<void>;
}

export interface PgBouncerOptions {
  serverHost: string;
  serverPort: number;
  /** The server login PgBouncer uses (and clients give); `postgres` / `postgres` by default. */
  user?: string;
  password?: string;
  /** The database `url` names. */
  database?: string;
  poolMode?: 'transaction' | 'session' | 'statement';
  /** Further [pgbouncer] settings, e.g. `{ default_pool_size: 10 }`. */
  settings?: Record<string, string | number>;
}

/** The pgbouncer binary, or null when it is not installed (tests then say so and skip). */
export function pgBouncerBinary(env: Record<string, string | undefined> = process.env): string | null {
  const candidates = [env.PGBOUNCER_PATH, '/usr/sbin/pgbouncer', '/usr/bin/pgbouncer', '/usr/local/bin/pgbouncer'];
  return candidates.find((p): p is string => p !== undefined && p !== '' && existsSync(p)) ?? null;
}

export async function startPgBouncer(options: PgBouncerOptions): Promise<PgBouncer> {
  const binary = pgBouncerBinary();
  if (!binary) throw new Error('pgbouncer is not installed (apt-get install pgbouncer, or set PGBOUNCER_PATH)');
  const user = options.user ?? 'postgres';
  const password = options.password ?? 'postgres';
  const host = '127.0.0.1';
  const port = await freePort();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'payments-pgbouncer-'));
  // As root PgBouncer refuses to run; it drops to `postgres` (-u), which must read these files.
  await chmod(dir, 0o755);
  const ini = path.join(dir, 'pgbouncer.ini');
  const authFile = path.join(dir, 'userlist.txt');
  const quote = (s: string) => `"${s.replaceAll('"', '""')}"`;
  await writeFile(authFile, `${quote(user)} ${quote(password)}\n`, { mode: 0o644 });

  let server = { host: options.serverHost, port: options.serverPort };
  const writeIni = () => {
    const settings: Record<string, string | number> = {
      listen_addr: host,
      listen_port: port,
      unix_socket_dir: '',
      // Clients are trusted (they must still be in auth_file); PgBouncer logs in to the server
      // with the password there, by SCRAM or md5 as the server asks.
      auth_type: 'trust',
      auth_file: authFile,
      admin_users: user,
      pool_mode: options.poolMode ?? 'transaction',
      ...options.settings,
    };
    const lines = [
      '[databases]',
      `* = host=${server.host} port=${server.port}`,
      '',
      '[pgbouncer]',
      ...Object.entries(settings).map(([k, v]) => `${k} = ${v}`),
      '',
    ];
    return writeFile(ini, lines.join('\n'), { mode: 0o644 });
  };
  await writeIni();

  const args = process.getuid?.() === 0 ? ['-u', 'postgres', ini] : [ini];
  const proc: ChildProcess = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  proc.stderr?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));

  const credentials = `${encodeURIComponent(user)}:${encodeURIComponent(password)}`;
  const urlFor = (database: string) => `postgresql://${credentials}@${host}:${port}/${encodeURIComponent(database)}`;
  const adminUrl = urlFor('pgbouncer');
  const admin = async (...commands: string[]) => {
    const client = new pg.Client({ connectionString: adminUrl });
    client.on('error', () => undefined);
    await client.connect();
    try {
      for (const command of commands) await client.query(command);
    } finally {
      await client.end().catch(() => undefined);
    }
  };

  const deadline = Date.now() + 10_000;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      await rm(dir, { recursive: true, force: true });
      throw new Error(`pgbouncer exited at start:\n${output}`);
    }
    const up = await admin('SHOW VERSION').then(
      () => true,
      () => false,
    );
    if (up) break;
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
      throw new Error(`pgbouncer did not answer on ${host}:${port} within 10 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }

  return {
    host,
    port,
    urlFor,
    url: urlFor(options.database ?? 'postgres'),
    adminUrl,
    async repoint(newHost, newPort) {
      server = { host: newHost, port: newPort };
      await writeIni();
      // RELOAD reads the new address; RECONNECT closes each server connection as soon as it is
      // released, so no client keeps talking to the old server after its transaction.
      await admin('RELOAD', 'RECONNECT');
    },
    log: () => output,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        // SIGTERM: immediate shutdown (SIGINT would wait for every client to leave).
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

import { execFile, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { access, appendFile, chmod, chown, constants, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort } from './free-port.ts';

/**
 * A PostgreSQL primary with synchronous standbys, built from the machine's own PostgreSQL binaries
 * (Debian's `postgresql-15`), and the steps a failover manager (Patroni, pg_auto_failover) takes
 * when the primary dies: find the standby that received the most WAL, promote it, and attach the
 * other standby to it. The writer address in front (PgBouncer) is re-pointed by the caller.
 *
 * Settings chosen for a test of replication and promotion, not of the disk:
 * - `synchronous_standby_names = 'ANY 1 (s1, s2)'` with `synchronous_commit = on`: a COMMIT is
 *   acknowledged only once at least one standby has flushed it, which is the durability claim a
 *   promotion relies on (docs/operations.md).
 * - `fsync = off` on every node: the test kills PostgreSQL's processes (SIGKILL), never the
 *   operating system, so WAL written to the page cache survives and "flushed" means what it would
 *   with fsync on. It keeps setup to a few seconds on a shared 2-core machine. Never in production.
 */

export const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';

const exec = promisify(execFile);

export interface PgNode {
  /** `primary`, `s1`, `s2`: also each standby's application_name. */
  readonly name: string;
  readonly port: number;
  readonly dataDir: string;
  /** A connection URL to `database` on this node. */
  url(database?: string): string;
}

export interface PromotionReport {
  promoted: PgNode;
  /** Each standby's last received WAL position when the choice was made. */
  received: Record<string, string>;
  promoteMs: number;
}

export interface ReplicatedCluster {
  readonly nodes: readonly PgNode[];
  /** The node currently taking writes. */
  primary(): PgNode;
  /** The standbys that follow the current primary. */
  standbys(): PgNode[];
  /** The primary dies: every one of its processes is SIGKILLed at once (no shutdown, no clean-up). */
  killPrimary(): Promise<void>;
  /**
   * Promotes the standby that received the most WAL and lets it take writes at once: it commits
   * without waiting for a standby until `reattachStandbys` has one streaming to it (Patroni's
   * non-strict synchronous mode does the same).
   */
  promoteMostAdvanced(): Promise<PromotionReport>;
  /**
   * Points the remaining standbys at the new primary and, once one streams from it, makes
   * replication synchronous again. Resolves with the standbys that follow it within `timeoutMs`.
   */
  reattachStandbys(timeoutMs?: number): Promise<string[]>;
  /** Stops every node still running and deletes the data folders. */
  stop(): Promise<void>;
}

/** Why replicas cannot be built here, or null when they can. */
export async function replicationUnavailable(): Promise<string | null> {
  for (const tool of ['initdb', 'pg_ctl', 'pg_basebackup', 'postgres']) {
    const ok = await access(path.join(PG_BIN, tool), constants.X_OK).then(
      () => true,
      () => false,
    );
    if (!ok) return `${path.join(PG_BIN, tool)} is missing (install Debian's postgresql-15, or set PG_BIN)`;
  }
  if (process.getuid?.() === 0) {
    try {
      execFileSync('id', ['-u', 'postgres']);
    } catch {
      return 'running as root but there is no "postgres" user to run PostgreSQL as';
    }
  }
  return null;
}

const asRoot = () => process.getuid?.() === 0;

/** Runs a PostgreSQL tool, as the `postgres` user when we are root (the server refuses root). */
export async function runAsPostgres(binary: string, args: string[], options: { daemon?: boolean } = {}): Promise<string> {
  const [file, argv] = asRoot() ? ['runuser', ['-u', 'postgres', '--', binary, ...args]] : [binary, args];
  try {
    // A daemon (pg_ctl start) inherits our pipes and would hold them open for its whole life.
    if (options.daemon) return await daemonize(file, argv);
    const { stdout } = await exec(file, argv, { maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const e = error as { stderr?: string; message: string };
    throw new Error(`${path.basename(binary)} ${args.join(' ')} failed: ${e.stderr || e.message}`, { cause: error });
  }
}

function daemonize(file: string, argv: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { stdio: 'ignore' });
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve('') : reject(new Error(`exited with ${code}`))));
  });
}

/** A folder of our own under the temp dir, owned by the `postgres` user when we are root. */
export async function postgresOwnedTempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  await chmod(dir, 0o755);
  if (asRoot()) {
    const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres']).toString().trim());
    await chown(dir, id('-u'), id('-g'));
  }
  return dir;
}

const SERVER_SETTINGS = [
  "listen_addresses = '127.0.0.1'",
  "unix_socket_directories = ''",
  'max_connections = 300',
  'shared_buffers = 32MB',
  'wal_level = replica',
  'max_wal_senders = 10',
  'max_replication_slots = 10',
  'wal_keep_size = 256MB',
  'hot_standby = on',
  'synchronous_commit = on',
  // See the module comment: SIGKILL of PostgreSQL, never of the machine.
  'fsync = off',
  'full_page_writes = off',
  'wal_receiver_status_interval = 1s',
  'wal_retrieve_retry_interval = 200ms',
  "log_min_messages = 'warning'",
  'logging_collector = off',
];

export async function startReplicatedCluster(
  options: { standbys?: number; database?: string; log?: (line: string) => void } = {},
): Promise<ReplicatedCluster> {
  const unavailable = await replicationUnavailable();
  if (unavailable) throw new Error(`cannot build PostgreSQL replicas: ${unavailable}`);
  const log = options.log ?? (() => undefined);
  const standbyCount = options.standbys ?? 2;
  const root = await postgresOwnedTempDir('payments-replication-');
  const names = ['primary', ...Array.from({ length: standbyCount }, (_, i) => `s${i + 1}`)];
  const nodes: PgNode[] = [];
  for (const name of names) {
    const port = await freePort();
    nodes.push({
      name,
      port,
      dataDir: path.join(root, name),
      url: (database = 'postgres') => `postgresql://postgres@127.0.0.1:${port}/${database}`,
    });
  }
  const node = (i: number): PgNode => {
    const n = nodes[i];
    if (!n) throw new Error(`no node ${i}`);
    return n;
  };
  const standbyNames = names.slice(1);
  const running = new Set<PgNode>();
  let primary = node(0);
  let followers = nodes.slice(1);

  const pgCtl = (n: PgNode, ...args: string[]) => runAsPostgres(path.join(PG_BIN, 'pg_ctl'), ['-D', n.dataDir, ...args]);
  const start = async (n: PgNode) => {
    await runAsPostgres(
      path.join(PG_BIN, 'pg_ctl'),
      ['-D', n.dataDir, '-w', '-t', '60', '-l', path.join(root, `${n.name}.log`), '-o', `-p ${n.port}`, 'start'],
      { daemon: true },
    );
    running.add(n);
  };
  const query = async <T extends pg.QueryResultRow>(n: PgNode, sql: string): Promise<T[]> => {
    const client = new pg.Client({ connectionString: n.url(), connectionTimeoutMillis: 5_000 });
    client.on('error', () => undefined); // a node killed under us: the query below rejects
    await client.connect();
    try {
      return (await client.query<T>(sql)).rows;
    } finally {
      await client.end().catch(() => undefined);
    }
  };

  try {
    const t0 = Date.now();
    await runAsPostgres(path.join(PG_BIN, 'initdb'), ['-D', node(0).dataDir, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']);
    await appendFile(path.join(node(0).dataDir, 'postgresql.conf'), [...SERVER_SETTINGS, ''].join('\n'));
    await start(node(0));
    if (options.database) await query(node(0), `CREATE DATABASE ${pg.escapeIdentifier(options.database)}`);
    // Each standby: a base backup of the primary with the standby settings written (-R), under its
    // own application_name, which is how synchronous_standby_names knows it.
    await Promise.all(
      nodes.slice(1).map(async (s) => {
        await runAsPostgres(path.join(PG_BIN, 'pg_basebackup'), [
          '-D',
          s.dataDir,
          '-d',
          `host=127.0.0.1 port=${node(0).port} user=postgres application_name=${s.name}`,
          '-R',
          '-X',
          'stream',
          '-c',
          'fast',
          '--no-sync',
        ]);
        await start(s);
      }),
    );
    await waitFor(
      async () => {
        const rows = await query<{ n: string }>(node(0), "SELECT count(*)::text AS n FROM pg_stat_replication WHERE state = 'streaming'");
        return Number(rows[0]?.n) === standbyCount;
      },
      30_000,
      'the standbys to stream from the primary',
    );
    // Synchronous only now: a commit waits for a standby, and until they stream there is none.
    await query(node(0), `ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (${standbyNames.join(', ')})'`);
    await query(node(0), 'SELECT pg_reload_conf()');
    log(
      `replication: primary :${node(0).port}, standbys ${nodes
        .slice(1)
        .map((s) => `${s.name} :${s.port}`)
        .join(', ')} in ${Date.now() - t0} ms`,
    );
  } catch (error) {
    await stopAll();
    throw error;
  }

  async function stopAll() {
    await Promise.all(
      [...running].map((n) => pgCtl(n, '-m', 'immediate', '-w', 'stop').catch(() => killTree(n.dataDir).catch(() => undefined))),
    );
    running.clear();
    await rm(root, { recursive: true, force: true }).catch(() => undefined);
  }

  return {
    nodes,
    primary: () => primary,
    standbys: () => [...followers],
    async killPrimary() {
      await killTree(primary.dataDir);
      running.delete(primary);
      log(`replication: primary ${primary.name} SIGKILLed`);
    },
    async promoteMostAdvanced() {
      const received: Record<string, string> = {};
      const candidates: Array<{ n: PgNode; lsn: bigint }> = [];
      for (const s of followers) {
        const rows = await query<{ received: string | null; replayed: string | null }>(
          s,
          'SELECT pg_last_wal_receive_lsn()::text AS received, pg_last_wal_replay_lsn()::text AS replayed',
        ).catch(() => []);
        const lsn = rows[0]?.received ?? rows[0]?.replayed ?? null;
        received[s.name] = lsn ?? 'unreachable';
        if (lsn) candidates.push({ n: s, lsn: lsnValue(lsn) });
      }
      candidates.sort((a, b) => (a.lsn === b.lsn ? 0 : a.lsn > b.lsn ? -1 : 1));
      const chosen = candidates[0]?.n;
      if (!chosen) throw new Error(`no standby can be promoted: ${JSON.stringify(received)}`);
      const t0 = Date.now();
      // Promotion first replays every WAL record the standby received, then opens for writes.
      await query(chosen, 'SELECT pg_promote(true, 60)');
      // Until a standby streams from it, commits must not wait for one (reattachStandbys restores it).
      await query(chosen, "ALTER SYSTEM SET synchronous_standby_names = ''");
      await query(chosen, 'SELECT pg_reload_conf()');
      const promoteMs = Date.now() - t0;
      primary = chosen;
      followers = followers.filter((s) => s !== chosen);
      log(`replication: promoted ${chosen.name} (received ${JSON.stringify(received)}) in ${promoteMs} ms`);
      return { promoted: chosen, received, promoteMs };
    },
    async reattachStandbys(timeoutMs = 15_000) {
      const target = primary;
      for (const s of followers) {
        // primary_conninfo is reloadable (PostgreSQL 13+); with recovery_target_timeline 'latest'
        // the standby follows the new primary's timeline. A setting appended last wins.
        await appendFile(
          path.join(s.dataDir, 'postgresql.auto.conf'),
          `primary_conninfo = 'host=127.0.0.1 port=${target.port} user=postgres application_name=${s.name}'\n`,
        );
        await pgCtl(s, 'reload');
      }
      const streaming = async () =>
        (
          await query<{ application_name: string }>(
            target,
            "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
          ).catch(() => [])
        ).map((r) => r.application_name);
      const deadline = Date.now() + timeoutMs;
      let names: string[] = await streaming();
      while (names.length < followers.length && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        names = await streaming();
      }
      if (names.length > 0) {
        await query(target, `ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (${names.join(', ')})'`);
        await query(target, 'SELECT pg_reload_conf()');
      }
      log(`replication: standbys streaming from ${target.name}: ${names.join(', ') || 'none'}`);
      return names;
    },
    stop: stopAll,
  };
}

/** A pg_lsn such as `0/3000148` as a number, to compare. */
export function lsnValue(lsn: string): bigint {
  const [hi = '0', lo = '0'] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
}

/**
 * SIGKILLs the postmaster of `dataDir` and every process it started, at once. The postmaster is
 * stopped first so it can neither fork nor restart a child; each child is its own process group
 * leader (PostgreSQL calls setsid), so a group kill would miss them.
 */
async function killTree(dataDir: string): Promise<void> {
  const pidFile = await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8').catch(() => '');
  const pid = Number(pidFile.split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0) return;
  try {
    process.kill(pid, 'SIGSTOP');
  } catch {
    return; // already gone
  }
  const children = await childrenOf(pid);
  for (const child of children) {
    try {
      process.kill(child, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  process.kill(pid, 'SIGKILL');
  await waitFor(async () => !alive(pid) && children.every((c) => !alive(c)), 10_000, `PostgreSQL ${pid} to die`);
}

async function childrenOf(pid: number): Promise<number[]> {
  // The kernel's own list when it keeps one (CONFIG_PROC_CHILDREN); else a scan of /proc.
  const listed = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => null);
  if (listed !== null) return listed.split(' ').filter(Boolean).map(Number);
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    // Fields after the command's closing parenthesis: state, ppid, ...
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[1]) === pid) found.push(Number(entry));
  }
  return found;
}

function alive(pid: number): boolean {
  try {
    // A zombie is dead for our purpose: it holds no socket and runs nothing.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

async function waitFor(condition: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

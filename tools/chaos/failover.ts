import path from 'node:path';
import { startQueue } from '../../src/app/queue.ts';
import { loadConfig } from '../../src/config.ts';
import { applyRoleTimeouts, migrate } from '../../src/db/migrate.ts';
import { createLogger } from '../../src/logger.ts';
import { ensureDatabase, startEmbeddedPostgres } from '../embedded-postgres.ts';
import { freePort } from '../free-port.ts';
import { type PgBouncer, pgBouncerBinary, startPgBouncer } from '../pgbouncer.ts';
import { PG_BIN, type ReplicatedCluster, replicationUnavailable, runAsPostgres, startReplicatedCluster } from '../replication.ts';

/**
 * The chaos run's database. When this machine can build PostgreSQL replicas (tools/replication.ts)
 * and has PgBouncer, it is what docs/operations.md describes for production: a primary with two
 * synchronous standbys behind PgBouncer in transaction pooling, every process on PgBouncer
 * (`DATABASE_URL`) and migrations on the primary (`DIRECT_DATABASE_URL`); the run's `failover`
 * fault SIGKILLs the primary mid-load, promotes the most advanced standby and re-points PgBouncer,
 * as Patroni or pg_auto_failover would. Otherwise it is today's single embedded PostgreSQL and the
 * fault is skipped, with the reason printed and shown in the table: never silently.
 */
export interface ChaosDatabase {
  /** The variables every process is started with: DATABASE_URL and, behind PgBouncer, the rest. */
  readonly env: Record<string, string>;
  /** A direct connection to the current primary: for the runner's own audit at the end. */
  directUrl(): string;
  /** The `restart-postgres` fault: the (primary) server stops and starts again on the same port. */
  restart(): Promise<void>;
  /** Why the failover fault cannot be run here; null when it can. */
  readonly failoverSkipped: string | null;
  /** The `failover` fault; `env.DIRECT_DATABASE_URL` names the new primary afterwards. */
  failover(): Promise<FailoverReport>;
  /** The table's row for the failover fault. */
  row(): [string, string];
  stop(): Promise<void>;
}

export interface FailoverReport {
  /** From the SIGKILL of the primary to PgBouncer pointing at the promoted standby. */
  seconds: number;
  promoted: string;
  reattached: string[];
}

const DATABASE = 'chaos';
/** The outage left on purpose before the promotion, so requests, polls and readiness meet a dead primary. */
const OUTAGE_MS = 1_000;
const ROW = 'database failover';

/** Why the chaos run cannot build replicas here, or null when it can. */
export async function failoverUnavailable(): Promise<string | null> {
  return (await replicationUnavailable()) ?? (pgBouncerBinary() ? null : 'pgbouncer is not installed (apt-get install pgbouncer)');
}

export async function startChaosDatabase(options: {
  /** A folder of the run's own (the embedded server's data goes there). */
  dir: string;
  /** false: today's embedded PostgreSQL even where replicas could be built (a faster run). */
  failover: boolean;
  log: (line: string) => void;
}): Promise<ChaosDatabase> {
  const unavailable = options.failover ? await failoverUnavailable() : null;
  if (options.failover && unavailable === null) return startReplicated(options.log);
  const why = unavailable === null ? 'disabled for this run (--no-failover)' : `cannot build replicas here: ${unavailable}`;
  options.log(`  database failover fault SKIPPED: ${why}; one embedded PostgreSQL instead`);
  return startEmbedded(options.dir, why);
}

async function startEmbedded(dir: string, why: string): Promise<ChaosDatabase> {
  const dataDir = path.join(dir, 'data');
  const port = await freePort();
  let database = await startEmbeddedPostgres({ dataDir, port });
  try {
    await ensureDatabase(database.adminUrl, DATABASE);
    const url = database.urlFor(DATABASE);
    await migrate(url);
    return {
      env: { DATABASE_URL: url },
      directUrl: () => url,
      async restart() {
        await database.stop();
        database = await startEmbeddedPostgres({ dataDir, port });
      },
      failoverSkipped: why,
      failover: () => Promise.reject(new Error(`no failover: ${why}`)),
      row: () => [ROW, `SKIPPED: ${why}`],
      stop: () => database.stop(),
    };
  } catch (error) {
    await database.stop().catch(() => undefined);
    throw error;
  }
}

async function startReplicated(log: (line: string) => void): Promise<ChaosDatabase> {
  const cluster: ReplicatedCluster = await startReplicatedCluster({ database: DATABASE, log: (line) => log(`  ${line}`) });
  let bouncer: PgBouncer | null = null;
  try {
    const direct = cluster.primary().url(DATABASE);
    await migrate(direct);
    // What `npm run migrate` does on its direct connection: pg-boss's schema (made under a session
    // lock) and the service's timeouts as the role's defaults, since the startup packet through
    // PgBouncer carries none.
    const config = loadConfig({});
    const boss = await startQueue({ databaseUrl: direct, config, logger: createLogger({ level: 'silent', name: 'chaos-db' }) });
    await boss.stop({ graceful: false, close: true });
    await applyRoleTimeouts(direct, config.database.timeouts);
    // Stock transaction pooling; a server login retried after 1 s rather than 15 s, as
    // docs/operations.md sets it for a writer address that is re-pointed on failover.
    bouncer = await startPgBouncer({
      serverHost: '127.0.0.1',
      serverPort: cluster.primary().port,
      database: DATABASE,
      settings: { server_login_retry: 1, server_connect_timeout: 2, max_client_conn: 1000, default_pool_size: 40 },
    });
  } catch (error) {
    await cluster.stop().catch(() => undefined);
    throw error;
  }
  const pooler = bouncer;
  log(`  database: primary + 2 synchronous standbys behind PgBouncer (transaction pooling) on :${pooler.port}`);
  const env: Record<string, string> = {
    DATABASE_URL: pooler.urlFor(DATABASE),
    DIRECT_DATABASE_URL: cluster.primary().url(DATABASE),
    DATABASE_POOL_MODE: 'transaction',
    // Four processes starting on two busy cores can take longer than the default to log in.
    DATABASE_CONNECT_TIMEOUT_MS: '20000',
  };
  let done: FailoverReport | null = null;
  return {
    env,
    directUrl: () => cluster.primary().url(DATABASE),
    async restart() {
      // A fast shutdown and start of the primary, on its port and options (postmaster.opts).
      await runAsPostgres(path.join(PG_BIN, 'pg_ctl'), ['-D', cluster.primary().dataDir, '-w', '-t', '60', '-m', 'fast', 'restart'], {
        daemon: true,
      });
    },
    failoverSkipped: null,
    async failover() {
      const killedAt = Date.now();
      await cluster.killPrimary();
      await new Promise((r) => setTimeout(r, OUTAGE_MS));
      const promotion = await cluster.promoteMostAdvanced();
      await pooler.repoint('127.0.0.1', promotion.promoted.port);
      const seconds = (Date.now() - killedAt) / 1000;
      env.DIRECT_DATABASE_URL = promotion.promoted.url(DATABASE);
      const reattached = await cluster.reattachStandbys();
      done = { seconds, promoted: `${promotion.promoted.name} ${JSON.stringify(promotion.received)}`, reattached };
      log(
        `  failover: ${done.promoted} promoted, PgBouncer re-pointed ${seconds.toFixed(1)} s after the kill; following: ${reattached.join(', ') || 'none'}`,
      );
      return done;
    },
    row: () => [ROW, done ? `primary killed, standby promoted in ${done.seconds.toFixed(1)} s` : 'planned, not reached'],
    async stop() {
      await pooler.stop().catch(() => undefined);
      await cluster.stop();
    },
  };
}

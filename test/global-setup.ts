import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { startQueue } from '../src/app/queue.ts';
import { loadConfig } from '../src/config.ts';
import { migrate } from '../src/db/migrate.ts';
import { createLogger } from '../src/logger.ts';
import { startEmbeddedPostgres } from '../tools/embedded-postgres.ts';
import { freePort } from '../tools/free-port.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** A connection URL with rights to CREATE DATABASE, with any database name. */
    adminUrl: string;
    /** A migrated database (pg-boss schema included) that each test file clones. */
    templateDb: string;
  }
}

/**
 * One PostgreSQL for the whole run: embedded when DATABASE_URL is unset, otherwise that server.
 * It holds a migrated template database; each test file clones it (CREATE DATABASE ... TEMPLATE),
 * which takes milliseconds and isolates the files from each other.
 */
export default async function setup(project: TestProject) {
  const env = loadConfig(process.env);
  let adminUrl: string;
  let stopServer = async (): Promise<void> => undefined;

  if (env.databaseUrl) {
    adminUrl = env.databaseUrl;
  } else {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'payments-test-pg-'));
    await chmod(dir, 0o755); // the server runs as the "postgres" user when we are root
    const server = await startEmbeddedPostgres({ dataDir: path.join(dir, 'data'), port: await freePort() });
    adminUrl = server.adminUrl;
    stopServer = async () => {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    };
  }

  const templateDb = `payments_template_${process.pid}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${templateDb}`);
  await admin.query(`CREATE DATABASE ${templateDb}`);
  const templateUrl = withDatabase(adminUrl, templateDb);
  await migrate(templateUrl);
  // Install pg-boss's schema and our queues once, so clones start with them.
  const boss = await startQueue({
    databaseUrl: templateUrl,
    config: loadConfig({}),
    logger: createLogger({ level: 'silent', name: 'test-setup' }),
  });
  await boss.stop({ graceful: false, close: true });

  project.provide('adminUrl', adminUrl);
  project.provide('templateDb', templateDb);

  return async () => {
    // Clones were dropped by their files; the template goes last.
    await admin.query(`DROP DATABASE IF EXISTS ${templateDb} WITH (FORCE)`).catch(() => undefined);
    await admin.end();
    await stopServer();
  };
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

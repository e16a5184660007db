import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BANK_SORT_CODE, createAccountService } from '../src/accounts/accounts.ts';
import { startApiProcess } from '../src/app/api.ts';
import { startWorkerProcess } from '../src/app/worker.ts';
import { type Config, requireJwtSecret } from '../src/config.ts';
import { applyRoleTimeouts, migrate } from '../src/db/migrate.ts';
import { startEmulator } from '../src/emulator/server.ts';
import type { Logger } from '../src/logger.ts';
import { createMetrics } from '../src/ops/metrics.ts';
import { demoAllowed, demoTokens, seedDemo } from './demo.ts';
import { ensureDatabase, startEmbeddedPostgres } from './embedded-postgres.ts';

/**
 * Everything in one process, for a newcomer's machine: embedded PostgreSQL (unless
 * DATABASE_URL is set), migrations, the provider emulator (unless PROVIDER_URL is set),
 * the API, the worker and demo data. Prints where the IDE is and tokens to use in it.
 */
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const EMBEDDED_PORT = 54329;

/** Starts everything; `stops` gets what must be stopped, in order. */
export async function runAllInOne(config: Config, logger: Logger, stops: Array<() => Promise<void>>): Promise<void> {
  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    const dataDir = path.join(ROOT, '.data', 'postgres');
    logger.info({ dataDir, port: EMBEDDED_PORT }, 'DATABASE_URL is unset: starting embedded PostgreSQL');
    const pg = await startEmbeddedPostgres({ dataDir, port: EMBEDDED_PORT, onLog: (line) => logger.debug({ postgres: line.trim() }) });
    stops.push(() => pg.stop());
    await ensureDatabase(pg.adminUrl, 'payments');
    databaseUrl = pg.urlFor('payments');
  }
  // Migrations and the role's timeouts need a session: DIRECT_DATABASE_URL when DATABASE_URL is a pooler.
  const directUrl = config.databaseUrl ? (config.directDatabaseUrl ?? databaseUrl) : databaseUrl;
  const applied = await migrate(directUrl);
  await applyRoleTimeouts(directUrl, config.database.timeouts);
  logger.info({ applied }, 'migrations up to date');

  let providerUrl = config.providerUrl;
  if (!providerUrl) {
    const emulator = await startEmulator({
      apiKey: config.providerApiKey,
      port: config.providerPort,
      faults: config.providerFaults,
      logger: logger.child({ process: 'provider' }),
    });
    stops.push(() => emulator.close());
    providerUrl = emulator.url;
  }

  // In production: no demo money and no printed operator token, whatever else this process runs.
  const demo = demoAllowed(config);
  if (!demo) logger.warn('NODE_ENV is production: no demo data is seeded and no tokens are printed');
  const tokens = demo ? await demoTokens(requireJwtSecret(config)) : null;
  const alice = tokens?.customers[0];
  // One metrics registry for both processes, so the API's /metrics shows the worker's too.
  const metrics = createMetrics();
  const worker = await startWorkerProcess({ config, databaseUrl, providerUrl, logger, metrics });
  stops.unshift(() => worker.stop());
  const api = await startApiProcess({
    config,
    databaseUrl,
    logger,
    metrics,
    providerUrl,
    ...(alice ? { ideDemo: { token: alice.token, accountId: alice.account.id } } : {}),
  });
  stops.unshift(() => api.stop());

  if (tokens) await seedDemo(api.prisma, createAccountService({ prisma: api.prisma, logger }), BANK_SORT_CODE);

  const lines = [
    '',
    `  Payments API is running. Open the IDE: ${api.api.url}`,
    `  Metrics: ${config.metricsPublic ? api.api.url.replace(/\/graphql$/, '/metrics') : `${api.opsUrl ?? '(none)'}/metrics`}   Provider emulator: ${providerUrl}`,
    '',
    ...(tokens
      ? [
          `  Operator token:\n    ${tokens.operator}`,
          ...tokens.customers.flatMap((c) => [
            `  ${c.name} (customer ${c.id}, account ${c.account.id}, £${(c.account.funding / 100).toFixed(2)} at first start):`,
            `    ${c.token}`,
          ]),
          '',
          "  The IDE opens with Alice's token in its Headers tab. Ctrl-C stops everything.",
        ]
      : ['  Production mode: no demo data, no tokens. Ctrl-C stops everything.']),
    '',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

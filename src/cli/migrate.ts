import { loadConfig } from '../config.ts';
import { applyRoleTimeouts, migrate } from '../db/migrate.ts';
import { requireSetting, runMain } from '../run-main.ts';

/**
 * Applies pending migrations (what `prisma migrate deploy` would do) on DIRECT_DATABASE_URL, or
 * DATABASE_URL when that is unset, then writes the session timeouts as the role's defaults in the
 * database (so they hold through a transaction pooler too).
 */
runMain(async () => {
  const config = loadConfig();
  const url = requireSetting(config.directDatabaseUrl, 'DATABASE_URL');
  const applied = await migrate(url);
  process.stdout.write(applied.length ? `Applied: ${applied.join(', ')}\n` : 'No pending migrations.\n');
  await applyRoleTimeouts(url, config.database.timeouts);
  const t = config.database.timeouts;
  process.stdout.write(
    `Role defaults in this database: idle_in_transaction_session_timeout=${t.idleInTransactionMs}ms lock_timeout=${t.lockMs}ms statement_timeout=${t.statementMs}ms\n`,
  );
});

import { loadConfig } from '../config.ts';
import { migrate } from '../db/migrate.ts';
import { requireSetting, runMain } from '../run-main.ts';

/** Applies pending migrations to DATABASE_URL (what `prisma migrate deploy` would do). */
runMain(async () => {
  const config = loadConfig();
  const applied = await migrate(requireSetting(config.databaseUrl, 'DATABASE_URL'));
  process.stdout.write(applied.length ? `Applied: ${applied.join(', ')}\n` : 'No pending migrations.\n');
});

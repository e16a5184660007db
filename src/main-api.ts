import { loadConfig } from './config.ts';
import { createLogger } from './logger.ts';
import { requireSetting, runMain } from './run-main.ts';
import { onShutdown } from './shutdown.ts';
import { startApiRole } from './roles.ts';

/** One API process (GraphQL over HTTP and WebSocket). Run as many as you like. */
runMain(async () => {
  const config = loadConfig();
  const logger = createLogger({ level: config.logLevel, name: 'payments' });
  const api = await startApiRole({ config, databaseUrl: requireSetting(config.databaseUrl, 'DATABASE_URL'), logger });
  onShutdown(logger, () => api.stop());
});

import { loadConfig } from './config.ts';
import { createLogger } from './logger.ts';
import { requireSetting, runMain } from './run-main.ts';
import { onShutdown } from './shutdown.ts';
import { startTracing } from './telemetry/tracing.ts';

/** One API process (GraphQL over HTTP and WebSocket). Run as many as you like. */
runMain(async () => {
  const config = loadConfig();
  const logger = createLogger({ level: config.logLevel, name: 'payments' });
  const tracing = await startTracing({ serviceName: 'payments-api', endpoint: config.telemetry.endpoint });
  // Imported once tracing has started, so what it instruments (http, pg, graphql) is patched as it loads.
  const { startApiProcess } = await import('./app/api.ts');
  const api = await startApiProcess({ config, databaseUrl: requireSetting(config.databaseUrl, 'DATABASE_URL'), logger });
  onShutdown(logger, async () => {
    await api.stop();
    await tracing?.shutdown();
  });
});

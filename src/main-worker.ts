import { loadConfig } from './config.ts';
import { createLogger } from './logger.ts';
import { requireSetting, runMain } from './run-main.ts';
import { onShutdown } from './shutdown.ts';
import { startTracing } from './telemetry/tracing.ts';

/** One settlement worker process, with /healthz, /readyz and /metrics on WORKER_PORT. Run as many as you like. */
runMain(async () => {
  const config = loadConfig();
  const logger = createLogger({ level: config.logLevel, name: 'payments' });
  const tracing = await startTracing({ serviceName: 'payments-worker', endpoint: config.telemetry.endpoint });
  // Imported once tracing has started, so what it instruments (pg, fetch) is patched as it loads.
  const { startWorkerProcess } = await import('./app/worker.ts');
  const worker = await startWorkerProcess({
    config,
    databaseUrl: requireSetting(config.databaseUrl, 'DATABASE_URL'),
    providerUrl: requireSetting(config.providerUrl, 'PROVIDER_URL'),
    logger,
    opsPort: config.workerPort,
  });
  onShutdown(logger, async () => {
    await worker.stop();
    await tracing?.shutdown();
  });
});

import { loadConfig } from './config.ts';
import { createLogger } from './logger.ts';
import { requireSetting, runMain } from './run-main.ts';
import { onShutdown } from './shutdown.ts';
import { startWorkerRole } from './roles.ts';

/** One settlement worker process, with /healthz, /readyz and /metrics on WORKER_PORT. Run as many as you like. */
runMain(async () => {
  const config = loadConfig();
  const logger = createLogger({ level: config.logLevel, name: 'payments' });
  const worker = await startWorkerRole({
    config,
    databaseUrl: requireSetting(config.databaseUrl, 'DATABASE_URL'),
    providerUrl: requireSetting(config.providerUrl, 'PROVIDER_URL'),
    logger,
    opsPort: config.workerPort,
  });
  onShutdown(logger, () => worker.stop());
});

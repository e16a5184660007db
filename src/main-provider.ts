import { loadConfig } from './config.ts';
import { startEmulator } from './emulator/server.ts';
import { createLogger } from './logger.ts';
import { runMain } from './run-main.ts';
import { onShutdown } from './shutdown.ts';

/** The payment provider emulator on PROVIDER_PORT. */
runMain(async () => {
  const config = loadConfig();
  const logger = createLogger({ level: config.logLevel, name: 'provider' });
  const emulator = await startEmulator({
    apiKey: config.providerApiKey,
    port: config.providerPort,
    host: '0.0.0.0',
    faults: config.providerFaults,
    logger,
  });
  onShutdown(logger, () => emulator.close());
});

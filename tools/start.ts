import { createLogger } from '../src/logger.ts';
import { runMain } from '../src/run-main.ts';
import { onShutdown } from '../src/shutdown.ts';
import { startTracing } from '../src/telemetry/tracing.ts';
import { loadDemoConfig } from './demo.ts';

/**
 * `npm start`: everything in one process for a newcomer's machine (all-in-one.ts): embedded
 * PostgreSQL, migrations, the emulator, the API, the worker and demo data. A development tool, not
 * product code: embedded PostgreSQL is a development dependency, absent from the production image.
 */
runMain(async () => {
  // The one entry point allowed the repository's development secret and key: a local demo.
  const config = loadDemoConfig(process.env);
  const logger = createLogger({ level: config.logLevel, name: 'payments' });
  const tracing = await startTracing({ serviceName: 'payments', endpoint: config.telemetry.endpoint });
  // Imported once tracing has started, so what it instruments is patched as it loads.
  const { runAllInOne } = await import('./all-in-one.ts');
  const stops: Array<() => Promise<void>> = [];
  await runAllInOne(config, logger, stops);
  // After starting: this takes the signals over from the libraries that registered their own
  // (embedded PostgreSQL would stop itself under a draining API), see src/shutdown.ts.
  onShutdown(logger, async () => {
    for (const stop of stops) await stop();
    await tracing?.shutdown();
  });
});

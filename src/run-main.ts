import { ConfigError } from './config.ts';

/** Runs an entry point; a bad environment prints its message, anything else its stack, and exits 1. */
export function runMain(main: () => Promise<void>): void {
  main().catch((error: unknown) => {
    const text = error instanceof ConfigError ? error.message : error instanceof Error ? (error.stack ?? error.message) : String(error);
    process.stderr.write(`${text}\n`);
    process.exit(1);
  });
}

/** A setting that this process cannot run without. */
export function requireSetting<T>(value: T | undefined, name: string): T {
  if (value === undefined) throw new ConfigError(`Invalid environment:\n  ${name}: is required for this process`);
  return value;
}

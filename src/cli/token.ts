import { parseArgs } from 'node:util';
import { signToken } from '../auth.ts';
import { loadConfig } from '../config.ts';
import { runMain } from '../run-main.ts';

/**
 * Prints a signed JWT:  npm run token -- --customer <id>  |  npm run token -- --operator
 * Options: --ttl <seconds> (default 3600). Signed with AUTH_JWT_SECRET (or the dev default).
 */
runMain(async () => {
  const { values } = parseArgs({
    options: { customer: { type: 'string' }, operator: { type: 'boolean' }, ttl: { type: 'string', default: '3600' } },
  });
  const config = loadConfig();
  const ttl = Number(values.ttl);
  if (!Number.isInteger(ttl) || ttl <= 0) throw new Error('--ttl must be a positive number of seconds');
  if (values.operator === Boolean(values.customer)) {
    throw new Error('Usage: npm run token -- --customer <customer id>   or   npm run token -- --operator');
  }
  const token = values.operator
    ? await signToken({ role: 'operator' }, config.jwtSecret, ttl)
    : await signToken({ role: 'customer', customerId: values.customer ?? '' }, config.jwtSecret, ttl);
  process.stdout.write(`${token}\n`);
});

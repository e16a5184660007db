import os from 'node:os';
import { parseArgs } from 'node:util';
import { operatorId, signToken, type Viewer } from '../auth.ts';
import { loadConfig, requireJwtSecret } from '../config.ts';
import { runMain } from '../run-main.ts';

/**
 * Prints a signed JWT:
 *   npm run token -- --customer <id>
 *   npm run token -- --operator [<operator id, e.g. alice@bank>]   (default: operator:<OS user name>)
 * Options: --ttl <seconds> (default 3600, at most AUTH_MAX_TOKEN_HOURS). Signed with AUTH_JWT_SECRET;
 * `--dev` signs with the built-in secret of `npm start`'s local demo instead (never in production).
 */
const USAGE = 'Usage: npm run token -- --customer <customer id> | --operator [<operator id>]  [--ttl SECONDS] [--dev]';

runMain(async () => {
  // `--operator` takes an optional value, which parseArgs cannot express: take it out first.
  const args = process.argv.slice(2);
  const at = args.indexOf('--operator');
  let operator: string | undefined;
  if (at >= 0) {
    const next = args[at + 1];
    const named = next !== undefined && !next.startsWith('--');
    operator = named ? next : `operator:${os.userInfo().username}`;
    args.splice(at, named ? 2 : 1);
  }
  const { values } = parseArgs({
    args,
    options: { customer: { type: 'string' }, ttl: { type: 'string', default: '3600' }, dev: { type: 'boolean', default: false } },
  });
  const config = loadConfig(process.env, { allowDevSecret: values.dev });
  const secret = requireJwtSecret(config);
  const ttl = Number(values.ttl);
  if (!Number.isInteger(ttl) || ttl <= 0) throw new Error('--ttl must be a positive number of seconds');
  if (ttl > config.maxTokenSeconds)
    throw new Error(`--ttl must not exceed AUTH_MAX_TOKEN_HOURS (${config.maxTokenSeconds} s): the API would refuse the token`);
  if ((operator === undefined) === (values.customer === undefined)) throw new Error(USAGE);

  let viewer: Viewer;
  if (operator !== undefined) {
    const parsed = operatorId.safeParse(operator);
    if (!parsed.success) throw new Error(`--operator ${parsed.error.issues[0]?.message ?? 'is invalid'}`);
    viewer = { role: 'operator', operatorId: parsed.data };
  } else {
    viewer = { role: 'customer', customerId: values.customer ?? '' };
  }
  process.stdout.write(`${await signToken(viewer, secret, ttl)}\n`);
});

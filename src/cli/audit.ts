import { parseArgs } from 'node:util';
import { audit, DEFAULT_HORIZON_LAG_MAX_SECONDS, DEFAULT_PENDING_MAX_AGE_SECONDS, formatAudit } from '../audit.ts';
import { loadConfig } from '../config.ts';
import { createPrisma } from '../db/prisma.ts';
import { requireSetting, runMain } from '../run-main.ts';

/**
 * Checks the bank's invariants in DIRECT_DATABASE_URL or DATABASE_URL (and at the provider with --provider URL or
 * PROVIDER_URL). Prints a report; exits 1 on any violation. `--pending-max-age MINUTES` (default
 * 60): a payment PENDING for longer is a violation. `--horizon-lag-max SECONDS` (default 60): a
 * transaction anywhere on the cluster holding the event horizon back longer is a violation.
 */
runMain(async () => {
  const { values } = parseArgs({
    options: {
      provider: { type: 'string' },
      'pending-max-age': { type: 'string', default: String(DEFAULT_PENDING_MAX_AGE_SECONDS / 60) },
      'horizon-lag-max': { type: 'string', default: String(DEFAULT_HORIZON_LAG_MAX_SECONDS) },
    },
  });
  const pendingMinutes = Number(values['pending-max-age']);
  if (!Number.isInteger(pendingMinutes) || pendingMinutes < 0) throw new Error('--pending-max-age must be a whole number of minutes');
  const horizonLagMax = Number(values['horizon-lag-max']);
  if (!Number.isInteger(horizonLagMax) || horizonLagMax < 0) throw new Error('--horizon-lag-max must be a whole number of seconds');
  const config = loadConfig();
  const url = requireSetting(config.directDatabaseUrl, 'DATABASE_URL');
  // Long reads over the whole ledger: on a direct connection (DIRECT_DATABASE_URL when set) without
  // the service's statement timeout; through a pooler only if that is all there is.
  const direct = !config.database.pooled || url !== config.databaseUrl;
  const prisma = createPrisma({
    databaseUrl: url,
    poolSize: 2,
    applicationName: 'payments-audit',
    ...(direct ? {} : { session: config.database }),
  });
  try {
    const providerUrl = values.provider ?? config.providerUrl;
    const report = await audit({
      prisma,
      pendingMaxAgeSeconds: pendingMinutes * 60,
      horizonLagMaxSeconds: horizonLagMax,
      dailyLimit: config.payeeSafety.dailyLimit,
      ...(providerUrl ? { provider: { url: providerUrl, apiKey: config.providerApiKey } } : {}),
    });
    process.stdout.write(`${formatAudit(report)}\n`);
    process.exitCode = report.ok ? 0 : 1;
  } finally {
    await prisma.$disconnect();
  }
});

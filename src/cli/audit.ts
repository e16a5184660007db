import { parseArgs } from 'node:util';
import { audit, formatAudit } from '../audit.ts';
import { loadConfig } from '../config.ts';
import { createPrisma } from '../db/prisma.ts';
import { requireSetting, runMain } from '../run-main.ts';

/**
 * Checks the bank's invariants in DATABASE_URL (and at the provider with --provider URL or
 * PROVIDER_URL). Prints a report; exits 1 on any violation.
 */
runMain(async () => {
  const { values } = parseArgs({ options: { provider: { type: 'string' } } });
  const config = loadConfig();
  const prisma = createPrisma({ databaseUrl: requireSetting(config.databaseUrl, 'DATABASE_URL'), poolSize: 2 });
  try {
    const providerUrl = values.provider ?? config.providerUrl;
    const report = await audit({ prisma, ...(providerUrl ? { provider: { url: providerUrl, apiKey: config.providerApiKey } } : {}) });
    process.stdout.write(`${formatAudit(report)}\n`);
    process.exitCode = report.ok ? 0 : 1;
  } finally {
    await prisma.$disconnect();
  }
});

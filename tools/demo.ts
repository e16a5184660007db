import type { AccountService } from '../src/accounts/accounts.ts';
import { signToken, type Viewer } from '../src/auth.ts';
import { type Config, loadConfig } from '../src/config.ts';
import type { PrismaClient } from '../src/db/prisma.ts';

/**
 * Demo data for `npm start`: two customers with funded accounts. Fixed ids, so the printed
 * tokens keep working across restarts, and idempotent, so restarting never deposits twice.
 */
export const DEMO = {
  customers: [
    {
      id: '00000000-0000-4000-8000-00000000a11c',
      name: 'Alice Example',
      account: { id: '00000000-0000-4000-8000-0000000acc01', name: 'Everyday', accountNumber: '10000001', funding: 250_000 },
    },
    {
      id: '00000000-0000-4000-8000-000000000b0b',
      name: 'Bob Example',
      account: { id: '00000000-0000-4000-8000-0000000acc02', name: 'Everyday', accountNumber: '10000002', funding: 100_000 },
    },
  ],
} as const;

/** The operator named in the demo's operator token; recorded on what it changes. */
export const DEMO_OPERATOR = 'operator:demo';

/**
 * Demo money and tokens are for a developer's machine: never seeded into, or printed for, a
 * production environment (where they would be real money and a real operator token).
 */
export function demoAllowed(config: Pick<Config, 'nodeEnv'>): boolean {
  return config.nodeEnv !== 'production';
}

/**
 * The config of `npm start`, the local demo: the repository's development JWT secret and webhook key
 * when none is given, and webhooks allowed to private addresses (a receiver on this machine) unless
 * WEBHOOK_ALLOW_PRIVATE_URLS says otherwise. With NODE_ENV=production, none of these: it needs its
 * own secret and key, like any API or worker, and keeps the SSRF guard.
 */
export function loadDemoConfig(env: Record<string, string | undefined>): Config {
  const production = env.NODE_ENV === 'production';
  return loadConfig(production ? env : { WEBHOOK_ALLOW_PRIVATE_URLS: 'true', ...env }, { allowDevSecret: !production });
}

export async function seedDemo(prisma: PrismaClient, accounts: AccountService, sortCode: string): Promise<void> {
  for (const c of DEMO.customers) {
    await prisma.customer.upsert({ where: { id: c.id }, update: {}, create: { id: c.id, name: c.name } });
    await prisma.account.upsert({
      where: { id: c.account.id },
      update: {},
      create: { id: c.account.id, customerId: c.id, name: c.account.name, sortCode, accountNumber: c.account.accountNumber },
    });
    await accounts.depositFunds(
      { accountId: c.account.id, amount: c.account.funding, idempotencyKey: 'demo-initial-funding' },
      DEMO_OPERATOR,
    );
  }
}

export async function demoTokens(secret: string, ttlSeconds = 24 * 3600) {
  const sign = (v: Viewer) => signToken(v, secret, ttlSeconds);
  return {
    operator: await sign({ role: 'operator', operatorId: DEMO_OPERATOR }),
    customers: await Promise.all(DEMO.customers.map(async (c) => ({ ...c, token: await sign({ role: 'customer', customerId: c.id }) }))),
  };
}

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signToken } from '../src/auth.ts';
import { createPrisma, type PrismaClient } from '../src/db/prisma.ts';
import { type RunningEmulator, startEmulator } from '../src/emulator/server.ts';
import { type StartedProcess, startProcess } from '../tools/processes.ts';
import {
  createFundedCustomer,
  createTestDatabase,
  gql,
  paymentInput,
  SEND_PAYMENT,
  type SendPaymentData,
  TEST_SECRET,
  TEST_WEBHOOK_KEY,
} from './helpers.ts';
import { ACCOUNT_PAYMENTS_UPDATED, type AccountUpdate, collect, PAYMENT_UPDATED, type PaymentUpdate, wsClient } from './ws-helpers.ts';

/** The element at `i`, which must be there. */
function at<T>(list: readonly T[], i: number): T {
  const value = list[i];
  if (value === undefined) throw new Error(`nothing at ${i}`);
  return value;
}

/**
 * The API and the worker as separate operating-system processes, started the way `npm run start:api` and
 * `npm run start:worker` start them: two API processes and two workers on one PostgreSQL,
 * with the provider emulator.
 */
const API_KEY = 'process-test-key';
let database: { url: string; drop(): Promise<void> };
let db: PrismaClient;
let emulator: RunningEmulator;
let apis: StartedProcess[] = [];
let workers: StartedProcess[] = [];
let operatorToken: string;

const env = () => ({
  DATABASE_URL: database.url,
  AUTH_JWT_SECRET: TEST_SECRET,
  WEBHOOK_SECRET_KEY: TEST_WEBHOOK_KEY,
  PROVIDER_URL: emulator.url,
  PROVIDER_API_KEY: API_KEY,
  PORT: '0',
  WORKER_PORT: '0',
  PAYMENT_RETRY_DELAY_SECONDS: '1',
  SEND_PAYMENT_RATE_LIMIT_PER_MINUTE: '0',
  DATABASE_POOL_SIZE: '5',
});

beforeAll(async () => {
  database = await createTestDatabase();
  db = createPrisma({ databaseUrl: database.url, poolSize: 2 });
  emulator = await startEmulator({ apiKey: API_KEY, port: 0 });
  const started = await Promise.all([
    startProcess('main-api.ts', env(), 'API listening'),
    startProcess('main-api.ts', env(), 'API listening'),
    startProcess('main-worker.ts', env(), 'worker started'),
    startProcess('main-worker.ts', env(), 'worker started'),
  ]);
  apis = started.slice(0, 2);
  workers = started.slice(2);
  operatorToken = await signToken({ role: 'operator', operatorId: 'ops@bank' }, TEST_SECRET, 600);
});

afterAll(async () => {
  await Promise.all([...apis, ...workers].map((p) => p.stop()));
  await emulator?.close();
  await db?.$disconnect();
  await database?.drop();
});

const apiUrl = (i: number) => apis[i]?.url ?? '';

const fundedCustomer = (url: string, pence: number) => createFundedCustomer(url, operatorToken, pence);

/** Payment ids each worker process logged as completed. */
function completedBy(worker: StartedProcess): Set<string> {
  return new Set(worker.logs.filter((l) => l.msg === 'payment completed' && l.applied === true).map((l) => String(l.paymentId)));
}

describe('many processes on one database', () => {
  it('pushes to a subscriber on one API process a payment sent through another and settled by a separate worker', async () => {
    const dana = await fundedCustomer(apiUrl(0), 100_000);
    // A slow provider keeps the payment PENDING long enough to watch it change.
    emulator.setFaults({ latencyMs: 1_000 });
    const { client } = wsClient(apiUrl(0), dana.token);
    try {
      const sent = await gql<SendPaymentData>(apiUrl(1), dana.token, SEND_PAYMENT, {
        input: paymentInput(dana.accountId, { amount: 4_200 }),
      });
      const paymentId = sent.data?.sendPayment.payment?.id;
      expect(paymentId).toBeDefined();
      const sub = collect<PaymentUpdate>(client, PAYMENT_UPDATED, { id: paymentId });
      await sub.done;
      expect(sub.errors).toEqual([]);
      expect(sub.values.map((v) => v.paymentUpdated.status)).toEqual(['PENDING', 'COMPLETED']);
      expect(sub.values.at(-1)?.paymentUpdated.account.balance).toBe(100_000 - 4_200);
    } finally {
      emulator.setFaults({ latencyMs: 0 });
      await client.dispose();
    }
  });

  it('settles 500 payments sent through both APIs exactly once, and a subscriber sees the work of both workers', async () => {
    const customers = await Promise.all(Array.from({ length: 10 }, (_, i) => fundedCustomer(apiUrl(i % 2), 1_000_000)));
    const { client } = wsClient(apiUrl(0), customers[0]?.token ?? '');
    try {
      const watched = at(customers, 0);
      const seen = collect<AccountUpdate>(client, ACCOUNT_PAYMENTS_UPDATED, { id: watched.accountId });
      // Let the subscription register before the payments start (its first event proves it).
      const probe = await gql<SendPaymentData>(apiUrl(1), watched.token, SEND_PAYMENT, {
        input: paymentInput(watched.accountId, { amount: 1 }),
      });
      await seen.until((v) => v.some((u) => u.accountPaymentsUpdated.id === probe.data?.sendPayment.payment?.id));

      const ids: string[] = [];
      for (let batch = 0; batch < 25; batch++) {
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) => {
            const n = batch * 20 + i;
            const c = at(customers, n % customers.length);
            return gql<SendPaymentData>(apiUrl(n % 2), c.token, SEND_PAYMENT, {
              input: paymentInput(c.accountId, { amount: 100 + (n % 7) }),
            });
          }),
        );
        for (const r of results) {
          expect(r.data?.sendPayment.errors).toEqual([]);
          ids.push(r.data?.sendPayment.payment?.id ?? '');
        }
      }
      expect(new Set(ids).size).toBe(500);

      await expect
        .poll(async () => db.payment.count({ where: { id: { in: ids }, status: 'COMPLETED' } }), { timeout: 60_000, interval: 250 })
        .toBe(500);

      // Exactly once at the provider, exactly one debit and no refund in the ledger.
      const atProvider = (await (await fetch(`${emulator.url}/admin/payments`, { headers: { 'x-api-key': API_KEY } })).json()) as Array<{
        idempotencyKey: string;
        createRequests: number;
      }>;
      const mine = atProvider.filter((p) => ids.includes(p.idempotencyKey));
      expect(mine).toHaveLength(500);
      expect(mine.every((p) => p.createRequests === 1)).toBe(true);
      const entries = await db.ledgerEntry.groupBy({ by: ['kind'], where: { paymentId: { in: ids } }, _count: true });
      expect(entries).toEqual([{ kind: 'PAYMENT_DEBIT', _count: 500 }]);
      const drift = await db.$queryRaw<{ n: bigint }[]>`
        SELECT count(*) AS n FROM accounts a
        WHERE a.balance <> (SELECT coalesce(sum(amount), 0) FROM ledger_entries l WHERE l.account_id = a.id)`;
      expect(drift).toEqual([{ n: 0n }]);

      // Both workers did part of the work, and the subscriber on API one saw the outcomes from each.
      const byWorker = workers.map(completedBy);
      expect(byWorker.every((set) => ids.some((id) => set.has(id)))).toBe(true);
      const watchedIds = new Set(ids.filter((_, n) => n % customers.length === 0));
      await seen.until((v) => {
        const completed = new Set(v.filter((u) => u.accountPaymentsUpdated.status === 'COMPLETED').map((u) => u.accountPaymentsUpdated.id));
        return [...watchedIds].every((id) => completed.has(id));
      });
      for (const set of byWorker) {
        expect([...watchedIds].some((id) => set.has(id))).toBe(true);
      }
    } finally {
      await client.dispose();
    }
  });

  it('stops every process cleanly on SIGTERM, with exit code 0 and no error logs', async () => {
    const codes = await Promise.all([...apis, ...workers].map((p) => p.stop()));
    expect(codes).toEqual([0, 0, 0, 0]);
    expect([...apis, ...workers].flatMap((p) => p.errors)).toEqual([]);
  });
});

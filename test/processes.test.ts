import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, paymentInput, SEND_PAYMENT, gql, TEST_SECRET, type SendPaymentData } from './helpers.ts';
import { startRole, type RoleProcess } from './processes.ts';
import { startEmulator, type RunningEmulator } from '../src/emulator/server.ts';
import { signToken } from '../src/auth.ts';
import { ACCOUNT_PAYMENTS_UPDATED, collect, PAYMENT_UPDATED, wsClient, type AccountUpdate, type PaymentUpdate } from './ws-helpers.ts';

/**
 * The roles as separate operating-system processes, started the way `npm run start:api` and
 * `npm run start:worker` start them: two API processes and a worker, one PostgreSQL, the emulator.
 */
let database: { url: string; drop(): Promise<void> };
let emulator: RunningEmulator;
let apiOne: RoleProcess;
let apiTwo: RoleProcess;
let worker: RoleProcess;
let operatorToken: string;

const env = () => ({
  DATABASE_URL: database.url,
  AUTH_JWT_SECRET: TEST_SECRET,
  PROVIDER_URL: emulator.url,
  PROVIDER_API_KEY: 'process-test-key',
  PORT: '0',
  PAYMENT_RETRY_DELAY_SECONDS: '1',
  SEND_PAYMENT_RATE_LIMIT_PER_MINUTE: '0',
});

beforeAll(async () => {
  database = await createTestDatabase();
  emulator = await startEmulator({ apiKey: 'process-test-key', port: 0 });
  [apiOne, apiTwo, worker] = await Promise.all([
    startRole('main-api.ts', env(), 'API listening'),
    startRole('main-api.ts', env(), 'API listening'),
    startRole('main-worker.ts', env(), 'worker started'),
  ]);
  operatorToken = await signToken({ role: 'operator' }, TEST_SECRET, 600);
});

afterAll(async () => {
  await Promise.all([apiOne?.stop(), apiTwo?.stop(), worker?.stop()]);
  await emulator?.close();
  await database?.drop();
});

async function fundedCustomer(apiUrl: string) {
  const customer = await gql<{ createCustomer: { id: string } }>(apiUrl, operatorToken, 'mutation { createCustomer(input: { name: "Dana" }) { id } }');
  const customerId = customer.data?.createCustomer.id ?? '';
  const account = await gql<{ openAccount: { id: string } }>(apiUrl, operatorToken, 'mutation($c: ID!) { openAccount(input: { customerId: $c, name: "Main" }) { id } }', { c: customerId });
  const accountId = account.data?.openAccount.id ?? '';
  await gql(apiUrl, operatorToken, 'mutation($a: ID!) { depositFunds(input: { accountId: $a, amount: 100000, idempotencyKey: "seed" }) { id } }', { a: accountId });
  return { accountId, token: await signToken({ role: 'customer', customerId }, TEST_SECRET, 600) };
}

describe('many processes on one database', () => {
  it('pushes to a subscriber on one API process a payment sent through another and settled by a separate worker', async () => {
    const dana = await fundedCustomer(apiOne.url ?? '');
    // A slow provider keeps the payment PENDING long enough to watch it change.
    emulator.setFaults({ latencyMs: 1_000 });
    const { client } = wsClient(apiOne.url ?? '', dana.token);
    try {
      const account = collect<AccountUpdate>(client, ACCOUNT_PAYMENTS_UPDATED, { id: dana.accountId });
      const sent = await gql<SendPaymentData>(apiTwo.url ?? '', dana.token, SEND_PAYMENT, {
        input: paymentInput(dana.accountId, { amount: 4_200 }),
      });
      const paymentId = sent.data?.sendPayment.payment?.id;
      expect(paymentId).toBeDefined();

      const sub = collect<PaymentUpdate>(client, PAYMENT_UPDATED, { id: paymentId });
      await sub.done;
      expect(sub.errors).toEqual([]);
      expect(sub.values.map((v) => v.paymentUpdated.status)).toEqual(['PENDING', 'COMPLETED']);
      expect(sub.values.at(-1)?.paymentUpdated.account.balance).toBe(100_000 - 4_200);
      await account.until((v) => v.some((u) => u.accountPaymentsUpdated.id === paymentId && u.accountPaymentsUpdated.status === 'COMPLETED'));
    } finally {
      emulator.setFaults({ latencyMs: 0 });
      await client.dispose();
    }
  });

  it('stops every role cleanly on SIGTERM, with exit code 0 and no error logs', async () => {
    const codes = await Promise.all([apiOne.stop(), apiTwo.stop(), worker.stop()]);
    expect(codes).toEqual([0, 0, 0]);
    expect([...apiOne.errors, ...apiTwo.errors, ...worker.errors]).toEqual([]);
  });
});

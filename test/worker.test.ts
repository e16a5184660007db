import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startWorkerProcess } from '../src/app/worker.ts';
import { createMetrics } from '../src/ops/metrics.ts';
import { createSettlement, providerRequestOf, type Settlement, WITH_SENDER } from '../src/payments/settlement.ts';
import { createProviderClient, type ProviderPaymentRequest } from '../src/provider/client.ts';
import { expectNoErrorLogs, paymentInput, type Stack, startStack } from './helpers.ts';

/**
 * The settlement worker under load and in trouble: many payments in flight at once, a hanging
 * provider call that holds back no other payment, one provider call per first attempt, a graceful
 * stop, and readiness while the provider's circuit stays open. The emulator stalls chosen requests
 * unanswered (`stallKeys`, released when the faults change) and counts what reached it, so nothing here depends on timing.
 */
/**
 * Calls the emulator stalls must not time out while a test waits for all of them to arrive: on a
 * loaded machine that can take longer than the suite's usual 2 s, and a timed-out call's retry would
 * be one more stalled request.
 */
const PATIENT_PROVIDER = { PROVIDER_TIMEOUT_MS: '30000', PAYMENT_JOB_EXPIRE_SECONDS: '60' };

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ env: PATIENT_PROVIDER });
});
afterAll(async () => {
  await stack?.stop();
});

async function statusOf(db: Stack['db'], paymentId: string) {
  return (await db.payment.findUniqueOrThrow({ where: { id: paymentId } })).status;
}

async function waitForStatus(db: Stack['db'], paymentId: string, status: string) {
  await vi.waitFor(async () => expect(await statusOf(db, paymentId)).toBe(status), { timeout: 30_000, interval: 50 });
}

async function sendPayments(on: Stack, count: number): Promise<string[]> {
  const alice = await on.newCustomer(1_000_000);
  const sent = await Promise.all(Array.from({ length: count }, () => on.send(alice.token, paymentInput(alice.accountId, { amount: 100 }))));
  return sent.map((s) => s.payment?.id ?? '');
}

describe('the settlement worker', () => {
  it('has many payments at the provider at once, far more than the old batches of four', async () => {
    stack.emulator.setFaults({ stallKeys: ['*'] });
    const before = stack.emulator.requests().inFlight;
    try {
      const ids = await sendPayments(stack, 40);
      // Every one of the 40 provider calls is waiting at the provider at the same time.
      await vi.waitFor(() => expect(stack.emulator.requests().inFlight - before).toBe(40), { timeout: 30_000, interval: 50 });
      stack.emulator.setFaults({ stallKeys: [] });
      for (const id of ids) await waitForStatus(stack.db, id, 'COMPLETED');
    } finally {
      stack.emulator.setFaults({ stallKeys: [] });
    }
    expectNoErrorLogs(stack);
  });

  it('settles other payments while one provider call hangs', async () => {
    const alice = await stack.newCustomer(100_000);
    const slow = await stack.send(alice.token, paymentInput(alice.accountId));
    const slowId = slow.payment?.id ?? '';
    stack.emulator.setFaults({ stallKeys: [slowId] });
    try {
      await vi.waitFor(() => expect(stack.emulator.requests().byKey[slowId]?.create).toBe(1), { timeout: 30_000, interval: 50 });
      const others = await Promise.all(Array.from({ length: 10 }, () => stack.send(alice.token, paymentInput(alice.accountId))));
      for (const other of others) await waitForStatus(stack.db, other.payment?.id ?? '', 'COMPLETED');
      // The hanging call is still hanging: it held back none of the others.
      expect(await statusOf(stack.db, slowId)).toBe('PENDING');
    } finally {
      stack.emulator.setFaults({ stallKeys: [] });
    }
    await waitForStatus(stack.db, slowId, 'COMPLETED');
  });

  it("sends a payment's first attempt straight to the provider, without asking first", async () => {
    const [id = ''] = await sendPayments(stack, 1);
    await waitForStatus(stack.db, id, 'COMPLETED');
    expect(stack.emulator.requests().byKey[id]).toEqual({ get: 0, create: 1, void: 0 });
  });

  it('asks the provider before sending again on a retry', async () => {
    stack.emulator.setFaults({ failNextCreates: 1 });
    const [id = ''] = await sendPayments(stack, 1);
    await waitForStatus(stack.db, id, 'COMPLETED');
    // POST (500), then on the retry: GET (404), POST (201).
    expect(stack.emulator.requests().byKey[id]).toEqual({ get: 1, create: 2, void: 0 });
  });

  it('asks first on a retry after the provider accepted but the answer was lost, and sends nothing twice', async () => {
    stack.emulator.setFaults({ acceptThenFailRate: 1 });
    let id = '';
    try {
      [id = ''] = await sendPayments(stack, 1);
      await vi.waitFor(() => expect(stack.emulator.requests().byKey[id]?.create).toBe(1), { timeout: 30_000, interval: 50 });
    } finally {
      stack.emulator.setFaults({ acceptThenFailRate: 0 });
    }
    await waitForStatus(stack.db, id, 'COMPLETED');
    expect(stack.emulator.requests().byKey[id]).toEqual({ get: 1, create: 1, void: 0 });
  });
});

describe("a first attempt that finds the provider's record", () => {
  /**
   * A stack with no worker, one PENDING payment, and the provider already holding a payment under
   * its key (`bodyOf` decides which body); `run` gets a settlement to drive by hand.
   */
  async function withPaymentAtProvider(
    bodyOf: (request: ProviderPaymentRequest) => ProviderPaymentRequest,
    run: (ctx: { own: Stack; id: string; settlement: Settlement }) => Promise<void>,
  ) {
    const own = await startStack({ worker: false });
    const provider = createProviderClient({ baseUrl: own.emulator.url, apiKey: own.config.providerApiKey, timeoutMs: 2_000 });
    try {
      const [id = ''] = await sendPayments(own, 1);
      const payment = await own.db.payment.findUniqueOrThrow({ where: { id }, include: WITH_SENDER });
      expect(await provider.createPayment(bodyOf(providerRequestOf(payment)))).toMatchObject({ kind: 'accepted' });
      await run({ own, id, settlement: createSettlement({ prisma: own.db, provider, logger: own.logger, metrics: createMetrics() }) });
    } finally {
      await provider.close();
      await own.stop();
    }
  }

  it('completes the payment when the provider answers 200 (it already had the same payment)', async () => {
    await withPaymentAtProvider(
      (request) => request,
      async ({ own, id, settlement }) => {
        await settlement.settle(id, { askFirst: false });
        const done = await own.db.payment.findUniqueOrThrow({ where: { id }, include: { attempts: true, ledgerEntries: true } });
        expect(done.status).toBe('COMPLETED');
        expect(done.attempts.map((a) => [a.outcome, a.internalDetail])).toEqual([['COMPLETED', 'the provider already had the payment']]);
        expect(done.ledgerEntries.map((e) => e.kind)).toEqual(['PAYMENT_DEBIT']);
      },
    );
  });

  it('does not take a 422 (the key holds another body) for a rejection: no refund, retried, and the retry asks first', async () => {
    await withPaymentAtProvider(
      (request) => ({ ...request, amount: 1 }),
      async ({ own, id, settlement }) => {
        await expect(settlement.settle(id, { askFirst: false })).rejects.toThrow(/different payment under this key/);
        const after = await own.db.payment.findUniqueOrThrow({ where: { id }, include: { attempts: true, ledgerEntries: true } });
        expect(after.status).toBe('PENDING');
        expect(after.attempts.map((a) => a.outcome)).toEqual(['RETRY']);
        expect(after.ledgerEntries.map((e) => e.kind)).toEqual(['PAYMENT_DEBIT']);

        await settlement.settle(id, { askFirst: true });
        expect(own.emulator.requests().byKey[id]).toEqual({ get: 1, create: 2, void: 0 });
      },
    );
  });
});

describe('stopping a worker', () => {
  it('lets the payments in flight finish before it returns', async () => {
    const own = await startStack({ env: PATIENT_PROVIDER });
    try {
      own.emulator.setFaults({ stallKeys: ['*'] });
      const ids = await sendPayments(own, 5);
      await vi.waitFor(() => expect(own.emulator.requests().inFlight).toBe(5), { timeout: 30_000, interval: 50 });
      const stopped = own.worker?.stop();
      own.emulator.setFaults({ stallKeys: [] });
      await stopped;
      own.worker = null;
      for (const id of ids) expect(await statusOf(own.db, id)).toBe('COMPLETED');
      const live = await own.db.$queryRaw<
        { n: bigint }[]
      >`SELECT count(*) AS n FROM pgboss.job WHERE name = 'payment.settle' AND state IN ('created', 'retry', 'active')`;
      expect(Number(live[0]?.n)).toBe(0);
    } finally {
      await own.stop();
    }
  });
});

describe("the worker's readiness", () => {
  it('turns not ready while the provider circuit stays open too long, and ready again once it closes', async () => {
    const own = await startStack({ worker: false, env: { WORKER_CIRCUIT_UNREADY_SECONDS: '1', PAYMENT_RETRY_DELAY_SECONDS: '1' } });
    const worker = await startWorkerProcess({
      config: own.config,
      databaseUrl: own.databaseUrl,
      providerUrl: own.emulator.url,
      logger: own.logger,
      opsPort: 0,
      pollingIntervalSeconds: 0.5,
    });
    const readyz = async () => (await fetch(`${worker.opsUrl}/readyz`)).status;
    try {
      expect(await readyz()).toBe(200);
      own.emulator.setFaults({ errorRate: 1 });
      // Five failed calls in a row open the circuit; a second later the worker is not ready.
      await sendPayments(own, 5);
      await vi.waitFor(async () => expect(await readyz()).toBe(503), { timeout: 30_000, interval: 100 });
      own.emulator.setFaults({ errorRate: 0 });
      // The half-open probe succeeds, the circuit closes, the worker is ready again.
      await vi.waitFor(async () => expect(await readyz()).toBe(200), { timeout: 30_000, interval: 100 });
    } finally {
      await worker.stop();
      await own.stop();
    }
    // Its own stack and two waits of up to 30 s each: past the default 60 s, a slow machine would
    // end it with a bare timeout rather than the wait that ran out.
  }, 90_000);
});

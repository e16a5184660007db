import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startApiProcess } from '../src/app/api.ts';
import { audit, formatAudit } from '../src/audit.ts';
import { freePort } from '../tools/free-port.ts';
import { emulatorCall, expectNoErrorLogs, gql, paymentInput, type Stack, startStack, type TestCustomer } from './helpers.ts';

/** cancelPayment against the worker and the provider emulator, over real HTTP. */
let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ worker: false });
});
afterAll(async () => {
  await stack?.stop();
});

const CANCEL = /* GraphQL */ `
  mutation($id: ID!) { cancelPayment(paymentId: $id) { payment { id status failureReason } errors { code message field } } }
`;
interface Cancelled {
  cancelPayment: {
    payment: { id: string; status: string; failureReason: string | null } | null;
    errors: Array<{ code: string; message: string; field: string[] | null }>;
  };
}
async function cancel(customer: TestCustomer, id: string, apiUrl = stack.apiUrl) {
  const response = await gql<Cancelled>(apiUrl, customer.token, CANCEL, { id });
  if (!response.data) throw new Error(JSON.stringify(response));
  return response.data.cancelPayment;
}

/** How many times the provider holds each payment, and whether a void was asked for. */
async function providerHolds(): Promise<Map<string, number>> {
  const { json } = await emulatorCall(stack, 'GET', '/admin/payments');
  const held = new Map<string, number>();
  for (const p of json as Array<{ idempotencyKey: string }>) held.set(p.idempotencyKey, (held.get(p.idempotencyKey) ?? 0) + 1);
  return held;
}

const auditOk = async () => {
  const report = await audit({ prisma: stack.db, provider: { url: stack.emulator.url, apiKey: stack.config.providerApiKey } });
  expect(report.ok, formatAudit(report)).toBe(true);
};

describe('cancelling a PENDING payment', () => {
  it('voids it at the provider, then cancels and refunds it; the worker then sends nothing', async () => {
    const alice = await stack.newCustomer(10_000);
    const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 3_000 }));
    const id = sent.payment?.id ?? '';
    expect(await cancel(alice, id)).toEqual({ payment: { id, status: 'CANCELLED', failureReason: 'CANCELLED_BY_CUSTOMER' }, errors: [] });
    expect((await emulatorCall(stack, 'GET', `/v1/payments/${id}`)).status).toBe(410);
    expect((await stack.db.account.findUniqueOrThrow({ where: { id: alice.accountId } })).balance).toBe(10_000n);
    // Cancelling again answers the same.
    expect((await cancel(alice, id)).errors).toEqual([]);

    await stack.startWorker();
    await vi.waitFor(
      async () =>
        expect(
          await stack.db.$queryRaw<
            { state: string }[]
          >`SELECT state::text FROM pgboss.job WHERE id = ${id}::uuid AND name = 'payment.settle'`,
        ).toEqual([{ state: 'completed' }]),
      {
        timeout: 20_000,
        interval: 100,
      },
    );
    expect((await stack.db.payment.findUniqueOrThrow({ where: { id } })).status).toBe('CANCELLED');
    expect((await providerHolds()).get(id)).toBeUndefined();
    await auditOk();
  });

  it('answers PAYMENT_NOT_CANCELLABLE once the provider has accepted it, and the payment ends COMPLETED', async () => {
    const bob = await stack.newCustomer(10_000);
    // The provider records the payment and then answers 500: accepted there, still PENDING here.
    stack.emulator.setFaults({ acceptThenFailRate: 1 });
    try {
      const sent = await stack.send(bob.token, paymentInput(bob.accountId, { amount: 2_000 }));
      const id = sent.payment?.id ?? '';
      await vi.waitFor(async () => expect((await providerHolds()).get(id)).toBe(1), { timeout: 20_000, interval: 100 });
      const answer = await cancel(bob, id);
      expect(answer).toMatchObject({
        payment: { id, status: 'COMPLETED' },
        errors: [{ code: 'PAYMENT_NOT_CANCELLABLE', field: ['paymentId'] }],
      });
      expect((await stack.db.account.findUniqueOrThrow({ where: { id: bob.accountId } })).balance).toBe(8_000n);
    } finally {
      stack.emulator.setFaults({ acceptThenFailRate: 0 });
    }
    await auditOk();
  });

  it("looks exactly like a payment that does not exist when it is another customer's", async () => {
    const carol = await stack.newCustomer(10_000);
    const eve = await stack.newCustomer(10_000);
    const sent = await stack.send(carol.token, paymentInput(carol.accountId));
    const id = sent.payment?.id ?? '';
    const stranger = await cancel(eve, id);
    const missing = await cancel(eve, '00000000-0000-4000-8000-000000000000');
    expect(stranger).toEqual({ payment: null, errors: [{ code: 'INVALID_INPUT', message: 'No such payment', field: ['paymentId'] }] });
    expect(missing).toEqual(stranger);
    expect(await cancel(eve, 'not-an-id')).toEqual(stranger);
    await vi.waitFor(async () => expect((await stack.db.payment.findUniqueOrThrow({ where: { id } })).status).toBe('COMPLETED'), {
      timeout: 20_000,
      interval: 100,
    });
    // An operator cannot cancel as a customer.
    const asOperator = await gql(stack.apiUrl, stack.operatorToken, CANCEL, { id });
    expect(asOperator.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });
});

describe('a cancel racing the worker', () => {
  it('never both pays a payment at the provider and refunds it, over 100 races', async () => {
    const dave = await stack.newCustomer(10_000_000);
    stack.emulator.setFaults({ latencyMs: 3 });
    const races = Array.from({ length: 100 }, (_, i) => i);
    const outcomes: Array<{ id: string; answer: string }> = [];
    try {
      // In waves of 20: each payment is cancelled somewhere between at once and well after the
      // worker has picked it up (it polls every 0.5 s), so every interleaving gets its turn.
      for (let wave = 0; wave < 5; wave++) {
        await Promise.all(
          races.slice(wave * 20, wave * 20 + 20).map(async (i) => {
            const sent = await stack.send(dave.token, paymentInput(dave.accountId, { amount: 100 + i }));
            const id = sent.payment?.id ?? '';
            await new Promise((r) => setTimeout(r, (i * 37) % 700));
            const answer = await cancel(dave, id);
            outcomes.push({ id, answer: answer.errors[0]?.code ?? answer.payment?.status ?? 'none' });
          }),
        );
      }
    } finally {
      stack.emulator.setFaults({ latencyMs: 0 });
    }
    const ids = outcomes.map((o) => o.id);
    await vi.waitFor(async () => expect(await stack.db.payment.count({ where: { id: { in: ids }, status: 'PENDING' } })).toBe(0), {
      timeout: 30_000,
      interval: 200,
    });

    const held = await providerHolds();
    const rows = await stack.db.payment.findMany({ where: { id: { in: ids } }, include: { ledgerEntries: true } });
    const tally: Record<string, number> = {};
    for (const p of rows) {
      const refunds = p.ledgerEntries.filter((e) => e.kind === 'PAYMENT_REFUND').length;
      const atProvider = held.get(p.id) ?? 0;
      const answer = outcomes.find((o) => o.id === p.id)?.answer;
      tally[`${p.status}/${answer}`] = (tally[`${p.status}/${answer}`] ?? 0) + 1;
      // Never both: paid at the provider and refunded here.
      expect(atProvider > 0 && refunds > 0, `payment ${p.id}: held ${atProvider}, refunds ${refunds}`).toBe(false);
      if (p.status === 'COMPLETED') {
        expect([atProvider, refunds, answer]).toEqual([1, 0, 'PAYMENT_NOT_CANCELLABLE']);
      } else {
        // Whoever refunded it (this cancel, or the worker meeting its void), it is the customer's cancellation.
        expect([p.status, p.failureReason, atProvider, refunds, answer]).toEqual(['CANCELLED', 'CANCELLED_BY_CUSTOMER', 0, 1, 'CANCELLED']);
      }
    }
    console.info(`cancel races: ${JSON.stringify(tally)}`);
    expect(rows).toHaveLength(100);
    await auditOk();
    expectNoErrorLogs(stack);
  });
});

describe('a cancellation refused because the provider could not be reached', () => {
  it('leaves no cancel request behind when the void certainly did not reach the provider, and keeps it when it may have', async () => {
    // Its own bank, no retries: a payment whose first send fails is voided by the worker and FAILED.
    const own = await startStack({ worker: false, env: { PAYMENT_RETRY_LIMIT: '0' } });
    // A second API whose provider address has nothing listening: its void is refused at connect.
    const cut = await startApiProcess({
      config: own.config,
      databaseUrl: own.databaseUrl,
      logger: own.logger,
      port: 0,
      providerUrl: `http://127.0.0.1:${await freePort()}`,
    });
    try {
      const gwen = await own.newCustomer(10_000);
      const send = async (amount: number) => (await own.send(gwen.token, paymentInput(gwen.accountId, { amount }))).payment?.id ?? '';
      const notCancellable = { payment: { status: 'PENDING' }, errors: [{ code: 'PAYMENT_NOT_CANCELLABLE', field: ['paymentId'] }] };
      const cancelRequested = async (id: string) => (await own.db.payment.findUniqueOrThrow({ where: { id } })).cancelRequestedAt;

      // Refused at connect: the void never left.
      const refusedAtConnect = await send(1_001);
      expect(await cancel(gwen, refusedAtConnect, cut.api.url.replace('localhost', '127.0.0.1'))).toMatchObject(notCancellable);
      expect(await cancelRequested(refusedAtConnect)).toBeNull();

      // Refused by the provider (429): it did not handle the void.
      const rateLimited = await send(1_002);
      own.emulator.setFaults({ rateLimitRate: 1, retryAfterSeconds: 0 });
      try {
        expect(await cancel(gwen, rateLimited, own.apiUrl)).toMatchObject(notCancellable);
      } finally {
        own.emulator.setFaults({ rateLimitRate: 0 });
      }
      expect(await cancelRequested(rateLimited)).toBeNull();

      // The void timed out while the provider still had it: it may have been (and here is) carried
      // out, so the request stays, and the payment is refunded as the customer's cancellation.
      const timedOut = await send(1_003);
      own.emulator.setFaults({ stallKeys: [timedOut] });
      try {
        expect(await cancel(gwen, timedOut, own.apiUrl)).toMatchObject(notCancellable);
      } finally {
        own.emulator.setFaults({ stallKeys: [] });
      }
      expect(await cancelRequested(timedOut)).not.toBeNull();
      await vi.waitFor(async () => expect((await emulatorCall(own, 'GET', `/v1/payments/${timedOut}`)).status).toBe(410), {
        timeout: 10_000,
        interval: 50,
      });

      // Then the worker: the first send of each fails, so it voids them and refunds them.
      own.emulator.setFaults({ failNextCreates: 3 });
      await own.startWorker();
      const ids = [refusedAtConnect, rateLimited, timedOut];
      const ended = await vi.waitFor(
        async () => {
          const rows = await own.db.payment.findMany({ where: { id: { in: ids } } });
          expect(rows.filter((p) => p.status === 'PENDING')).toEqual([]);
          return new Map(rows.map((p) => [p.id, [p.status, p.failureReason]]));
        },
        { timeout: 30_000, interval: 100 },
      );
      // A failure that follows a refused cancellation is a failure, not the customer's cancellation.
      expect(ended.get(refusedAtConnect)).toEqual(['FAILED', 'NOT_SENT_PROVIDER_UNAVAILABLE']);
      expect(ended.get(rateLimited)).toEqual(['FAILED', 'NOT_SENT_PROVIDER_UNAVAILABLE']);
      expect(ended.get(timedOut)).toEqual(['CANCELLED', 'CANCELLED_BY_CUSTOMER']);
      expect((await own.db.account.findUniqueOrThrow({ where: { id: gwen.accountId } })).balance).toBe(10_000n);
    } finally {
      await cut.stop();
      await own.stop();
    }
  });
});

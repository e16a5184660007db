import type { PgBoss } from 'pg-boss';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { queuePolicy, startQueue } from '../src/app/queue.ts';
import { startWorkerProcess } from '../src/app/worker.ts';
import { audit, formatAudit } from '../src/audit.ts';
import { createPaymentJobs } from '../src/jobs/enqueue.ts';
import { createMetrics } from '../src/ops/metrics.ts';
import { createStandingOrders } from '../src/payments/standing-orders.ts';
import { gql, rowCounts, type Stack, startStack, type TestCustomer, testClock } from './helpers.ts';

/**
 * Standing orders on a clock the test moves through months. The worker is started only at the end
 * (to pay what the schedulers created); until then the test runs the schedulers itself: two at once,
 * or none for a whole month.
 */
const clock = testClock(new Date('2027-01-31T10:00:00Z'));
let stack: Stack;
let bosses: PgBoss[] = [];
beforeAll(async () => {
  stack = await startStack({ worker: false, clock });
  bosses = [
    await startQueue({ databaseUrl: stack.databaseUrl, config: stack.config, logger: stack.logger }),
    await startQueue({ databaseUrl: stack.databaseUrl, config: stack.config, logger: stack.logger }),
  ];
});
afterAll(async () => {
  for (const boss of bosses) await boss.stop({ graceful: false, close: true });
  await stack?.stop();
});

/** Two schedulers, as two worker processes would run them, each with its own queue connection. */
const scheduler = (boss: PgBoss) =>
  createStandingOrders({
    prisma: stack.db,
    jobs: createPaymentJobs({ boss, policy: queuePolicy(stack.config), clock }),
    clock,
    policy: stack.config.payeeSafety,
    logger: stack.logger,
    metrics: createMetrics(),
  });
/** Two schedulers, as two worker processes would run them. */
const schedulers = (): [ReturnType<typeof scheduler>, ReturnType<typeof scheduler>] => {
  const [one, two] = bosses;
  if (!one || !two) throw new Error('two pg-boss instances expected');
  return [scheduler(one), scheduler(two)];
};

const CREATE = /* GraphQL */ `
  mutation($input: CreateStandingOrderInput!) {
    createStandingOrder(input: $input) {
      standingOrder { id frequency firstPaymentOn lastPaymentOn nextPaymentOn active amount recipient { name sortCode } }
      errors { code message field }
    }
  }
`;
interface Created {
  createStandingOrder: {
    standingOrder: {
      id: string;
      frequency: string;
      firstPaymentOn: string;
      lastPaymentOn: string | null;
      nextPaymentOn: string | null;
      active: boolean;
    } | null;
    errors: Array<{ code: string; message: string; field: string[] | null }>;
  };
}
const orderInput = (accountId: string, overrides: Record<string, unknown> = {}) => ({
  idempotencyKey: `so-${Math.random().toString(36).slice(2)}`,
  fromAccountId: accountId,
  amount: 1_000,
  recipient: { name: 'Landlord Ltd', sortCode: '20-00-00', accountNumber: '55555555' },
  reference: 'Rent',
  frequency: 'MONTHLY',
  firstPaymentOn: '2027-01-31',
  lastPaymentOn: '2027-03-31',
  ...overrides,
});
async function createOrder(customer: TestCustomer, overrides: Record<string, unknown> = {}) {
  const response = await gql<Created>(stack.apiUrl, customer.token, CREATE, { input: orderInput(customer.accountId, overrides) });
  if (!response.data) throw new Error(JSON.stringify(response));
  return response.data.createStandingOrder;
}
const occurrences = (orderId: string) =>
  stack.db.payment.findMany({
    where: { standingOrderId: orderId },
    orderBy: { executeOn: 'asc' },
    select: { id: true, idempotencyKey: true, executeOn: true, status: true },
  });

describe('cancelling a standing order', () => {
  it('stops further occurrences and cancels one not yet run; the order looks missing to another customer', async () => {
    clock.set(new Date('2027-04-05T08:00:00+01:00'));
    const bob = await stack.newCustomer(50_000);
    const eve = await stack.newCustomer(50_000);
    const created = await createOrder(bob, { frequency: 'WEEKLY', firstPaymentOn: '2027-04-05', lastPaymentOn: null });
    const id = created.standingOrder?.id ?? '';
    const CANCEL = 'mutation($id: ID!) { cancelStandingOrder(id: $id) { id active nextPaymentOn } }';

    // Eve cannot cancel it, and is told exactly what she is told for an order that does not exist.
    const stranger = await gql(stack.apiUrl, eve.token, CANCEL, { id });
    const missing = await gql(stack.apiUrl, eve.token, CANCEL, { id: '00000000-0000-4000-8000-000000000000' });
    expect(stranger.errors?.[0]).toMatchObject({
      message: 'No such standing order',
      extensions: { code: 'BAD_USER_INPUT', field: ['id'] },
    });
    expect(stranger.errors?.[0]?.message).toBe(missing.errors?.[0]?.message);
    expect(stranger.errors?.[0]?.extensions).toEqual(missing.errors?.[0]?.extensions);

    // Today's occurrence is created (no worker runs it yet), then Bob cancels.
    expect(await schedulers()[0].runDue()).toBe(1);
    const cancelled = await gql<{ cancelStandingOrder: { id: string; active: boolean; nextPaymentOn: string | null } }>(
      stack.apiUrl,
      bob.token,
      CANCEL,
      { id },
    );
    expect(cancelled.data?.cancelStandingOrder).toEqual({ id, active: false, nextPaymentOn: null });
    expect((await occurrences(id)).map((p) => p.status)).toEqual(['CANCELLED']);

    clock.set(new Date('2027-04-20T08:00:00+01:00'));
    expect(await schedulers()[0].runDue()).toBe(0);
    expect(await occurrences(id)).toHaveLength(1);
    expect((await stack.db.account.findUniqueOrThrow({ where: { id: bob.accountId } })).balance).toBe(50_000n);
  });

  it('cancels the last occurrence of an order that has ended but not run yet, and it never executes', async () => {
    clock.set(new Date('2027-04-12T08:00:00+01:00'));
    const fay = await stack.newCustomer(50_000);
    const created = await createOrder(fay, { frequency: 'WEEKLY', firstPaymentOn: '2027-04-12', lastPaymentOn: '2027-04-12' });
    const id = created.standingOrder?.id ?? '';
    // Its one occurrence is created: the order has ended (inactive), the occurrence is still SCHEDULED.
    expect(await schedulers()[0].runDue()).toBe(1);
    expect(await stack.db.standingOrder.findUniqueOrThrow({ where: { id } })).toMatchObject({ active: false, nextPaymentOn: null });
    const [occurrence] = await occurrences(id);
    expect(occurrence?.status).toBe('SCHEDULED');
    const paymentId = occurrence?.id ?? '';

    const cancelled = await gql<{ cancelStandingOrder: { id: string; active: boolean } }>(
      stack.apiUrl,
      fay.token,
      'mutation($id: ID!) { cancelStandingOrder(id: $id) { id active } }',
      { id },
    );
    expect(cancelled.data?.cancelStandingOrder).toEqual({ id, active: false });
    expect(await stack.db.payment.findUniqueOrThrow({ where: { id: paymentId } })).toMatchObject({
      status: 'CANCELLED',
      failureReason: 'CANCELLED_BY_CUSTOMER',
    });

    // A worker then runs the occurrence's execution job: it finds nothing to execute.
    const worker = await startWorkerProcess({
      config: stack.config,
      databaseUrl: stack.databaseUrl,
      providerUrl: stack.emulator.url,
      logger: stack.logger,
      pollingIntervalSeconds: 0.5,
      clock,
    });
    try {
      await vi.waitFor(
        async () =>
          expect(
            await stack.db.$queryRaw<{ state: string }[]>`
              SELECT state::text FROM pgboss.job WHERE id = ${paymentId}::uuid AND name = 'payment.execute'`,
          ).toEqual([{ state: 'completed' }]),
        { timeout: 20_000, interval: 100 },
      );
    } finally {
      await worker.stop();
    }
    expect((await stack.db.payment.findUniqueOrThrow({ where: { id: paymentId } })).status).toBe('CANCELLED');
    expect(await stack.db.ledgerEntry.count({ where: { paymentId } })).toBe(0);
    expect((await stack.db.account.findUniqueOrThrow({ where: { id: fay.accountId } })).balance).toBe(50_000n);
  });
});

describe('a monthly standing order over three months', () => {
  it('pays every occurrence once with two schedulers at once and a month with no scheduler, on the last day of short months', async () => {
    clock.set(new Date('2027-01-31T10:00:00Z'));
    const alice = await stack.newCustomer(100_000);
    const created = await createOrder(alice);
    expect(created.errors).toEqual([]);
    const order = created.standingOrder;
    expect(order).toMatchObject({
      frequency: 'MONTHLY',
      firstPaymentOn: '2027-01-31',
      lastPaymentOn: '2027-03-31',
      nextPaymentOn: '2027-01-31',
      active: true,
    });
    const id = order?.id ?? '';

    // 31 January: two schedulers at once, then both again.
    const [a, b] = schedulers();
    const firstRun = await Promise.all([a.runDue(), b.runDue()]);
    expect(firstRun.reduce((x, y) => x + y, 0)).toBe(1);
    expect(await Promise.all([a.runDue(), b.runDue()])).toEqual([0, 0]);
    expect((await occurrences(id)).map((p) => p.idempotencyKey)).toEqual([`so:${id}:2027-01-31`]);

    // February: no scheduler runs at all (down for the whole month).
    // 31 March: it is back, two of them at once: February's occurrence (the 28th) and March's, once each.
    clock.set(new Date('2027-03-31T09:00:00+01:00'));
    const [c, d] = schedulers();
    const backRun = await Promise.all([c.runDue(), d.runDue()]);
    expect(backRun.reduce((x, y) => x + y, 0)).toBe(2);
    expect(await Promise.all([c.runDue(), d.runDue()])).toEqual([0, 0]);
    const made = await occurrences(id);
    expect(made.map((p) => p.executeOn?.toISOString().slice(0, 10))).toEqual(['2027-01-31', '2027-02-28', '2027-03-31']);
    expect(made.map((p) => p.idempotencyKey)).toEqual(['2027-01-31', '2027-02-28', '2027-03-31'].map((day) => `so:${id}:${day}`));

    const ended = await gql<{ account: { standingOrders: Array<{ id: string; nextPaymentOn: string | null; active: boolean }> } }>(
      stack.apiUrl,
      alice.token,
      'query($a: ID!) { account(id: $a) { standingOrders { id nextPaymentOn active } } }',
      { a: alice.accountId },
    );
    expect(ended.data?.account.standingOrders).toEqual([{ id, nextPaymentOn: null, active: false }]);

    // A worker pays them: each once.
    await stack.startWorker();
    await vi.waitFor(async () => expect((await occurrences(id)).map((p) => p.status)).toEqual(['COMPLETED', 'COMPLETED', 'COMPLETED']), {
      timeout: 30_000,
      interval: 200,
    });
    const debits = await stack.db.ledgerEntry.findMany({ where: { accountId: alice.accountId, kind: 'PAYMENT_DEBIT' } });
    expect(debits.map((e) => e.amount)).toEqual([-1_000n, -1_000n, -1_000n]);
    expect((await stack.db.account.findUniqueOrThrow({ where: { id: alice.accountId } })).balance).toBe(97_000n);
    const paid = await gql<{ payment: { standingOrder: { id: string }; executeOn: string } }>(
      stack.apiUrl,
      alice.token,
      'query($p: ID!) { payment(id: $p) { executeOn standingOrder { id } } }',
      { p: made[1]?.id },
    );
    expect(paid.data?.payment).toEqual({ executeOn: '2027-02-28', standingOrder: { id } });
    const report = await audit({ prisma: stack.db, provider: { url: stack.emulator.url, apiKey: stack.config.providerApiKey } });
    expect(report.ok, formatAudit(report)).toBe(true);
  });
});

describe('standing order input', () => {
  it("refuses bad and past dates, a last payment before the first and another customer's account, naming the field and writing nothing", async () => {
    clock.set(new Date('2027-05-10T12:00:00+01:00'));
    const carol = await stack.newCustomer(10_000);
    const dave = await stack.newCustomer(10_000);
    const cases: Array<[Record<string, unknown>, string, string[]]> = [
      [{ firstPaymentOn: '2027-02-29' }, 'INVALID_INPUT', ['firstPaymentOn']],
      [{ firstPaymentOn: '2027-5-10' }, 'INVALID_INPUT', ['firstPaymentOn']],
      [{ firstPaymentOn: '2027-05-09', lastPaymentOn: null }, 'INVALID_INPUT', ['firstPaymentOn']],
      [{ firstPaymentOn: '2028-06-01', lastPaymentOn: null }, 'INVALID_INPUT', ['firstPaymentOn']],
      [{ firstPaymentOn: '2027-06-10', lastPaymentOn: '2027-06-09' }, 'INVALID_INPUT', ['lastPaymentOn']],
      [{ firstPaymentOn: '2027-06-10', lastPaymentOn: 'June' }, 'INVALID_INPUT', ['lastPaymentOn']],
      [{ firstPaymentOn: '2027-06-10', lastPaymentOn: null, amount: 0 }, 'INVALID_INPUT', ['amount']],
      [
        { firstPaymentOn: '2027-06-10', lastPaymentOn: null, recipient: { name: 'X', sortCode: '1', accountNumber: '12345678' } },
        'INVALID_INPUT',
        ['recipient', 'sortCode'],
      ],
      [{ firstPaymentOn: '2027-06-10', lastPaymentOn: null, fromAccountId: dave.accountId }, 'ACCOUNT_NOT_FOUND', ['fromAccountId']],
    ];
    const before = { ...(await rowCounts(stack.db)), orders: await stack.db.standingOrder.count() };
    for (const [overrides, code, field] of cases) {
      const result = await createOrder(carol, overrides);
      expect(result, JSON.stringify(overrides)).toMatchObject({ standingOrder: null, errors: [{ code, field }] });
    }
    expect({ ...(await rowCounts(stack.db)), orders: await stack.db.standingOrder.count() }).toEqual(before);
  });

  it('is idempotent on its key: the same order again is the same order, other parameters are IDEMPOTENCY_KEY_REUSED', async () => {
    clock.set(new Date('2027-05-10T12:00:00+01:00'));
    const erin = await stack.newCustomer(10_000);
    const input = { idempotencyKey: 'rent-2027', firstPaymentOn: '2027-06-01', lastPaymentOn: null };
    const first = await createOrder(erin, input);
    const again = await createOrder(erin, input);
    expect(again.standingOrder?.id).toBe(first.standingOrder?.id);
    const other = await createOrder(erin, { ...input, amount: 1_001 });
    expect(other).toMatchObject({ standingOrder: null, errors: [{ code: 'IDEMPOTENCY_KEY_REUSED', field: ['idempotencyKey'] }] });
  });
});

import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { queuePolicy } from '../src/app/queue.ts';
import { audit } from '../src/audit.ts';
import { createPaymentJobs } from '../src/jobs/enqueue.ts';
import { QUEUES } from '../src/jobs/queues.ts';
import { createMetrics } from '../src/ops/metrics.ts';
import { createHoldService, HOLD_EXPIRY_OPERATOR, type HoldService, holdReason, holdReasonSql } from '../src/payments/holds.ts';
import { expectNoErrorLogs, gql, paymentInput, type Stack, startStack, type TestCustomer } from './helpers.ts';
import { collect, PAYMENT_UPDATED, type PaymentUpdate, wsClient } from './ws-helpers.ts';

/**
 * Held payments with a worker running: their end by the hold-expiry schedule, by an operator or by
 * their customer, racing each other; and what subscribers see. The clock of payee safety is the
 * test's, so HOLD_MAX_HOURS pass at will.
 */
const REVIEW_THRESHOLD = 5_000;
const HOLD_HOURS = 96;
const HOUR = 3600_000;

let stack: Stack;
let holds: HoldService;
let frozenAt: number | null = null;
const now = { now: () => new Date(frozenAt ?? Date.now()) };
beforeAll(async () => {
  stack = await startStack({ clock: now, env: { REVIEW_THRESHOLD: String(REVIEW_THRESHOLD), HOLD_MAX_HOURS: String(HOLD_HOURS) } });
  const boss = stack.worker?.boss;
  if (!boss) throw new Error('no worker');
  // The customer's side (cancelPayment of contract v2 hands HELD payments to cancelHeldPayment).
  holds = createHoldService({
    prisma: stack.db,
    jobs: createPaymentJobs({ boss, policy: queuePolicy(stack.config), clock: now }),
    policy: stack.config.payeeSafety,
    clock: now,
    logger: stack.logger,
    metrics: createMetrics(),
  });
});
afterEach(() => {
  frozenAt = null;
});
afterAll(async () => {
  await stack?.stop();
});

const APPROVE = 'mutation($id: ID!) { approvePayment(paymentId: $id) { id status } }';

async function heldPayment(who: TestCustomer, amount = REVIEW_THRESHOLD) {
  const sent = await stack.send(who.token, paymentInput(who.accountId, { amount }));
  expect(sent.payment?.status).toBe('HELD');
  const payment = await stack.db.payment.findUniqueOrThrow({ where: { id: sent.payment?.id ?? '' } });
  return payment;
}

const statusOf = async (id: string) => (await stack.db.payment.findUniqueOrThrow({ where: { id } })).status;
const balanceOf = async (accountId: string) => (await stack.db.account.findUniqueOrThrow({ where: { id: accountId } })).balance;

describe('hold expiry', () => {
  it('is scheduled every minute by the worker', async () => {
    const schedules = await stack.worker?.boss.getSchedules();
    expect(schedules?.map((s) => [s.name, s.cron])).toContainEqual([QUEUES.expireHolds, '* * * * *']);
  });

  it('rejects, when its job runs, payments held for HOLD_MAX_HOURS, money back, and none held less long', async () => {
    const alice = await stack.newCustomer(20_000);
    const due = await heldPayment(alice);
    await vi.waitFor(() => expect(Date.now()).toBeGreaterThan(due.createdAt.getTime() + 1), { interval: 1 });
    const young = await heldPayment(alice);
    frozenAt = due.createdAt.getTime() + HOLD_HOURS * HOUR;

    const jobId = await stack.worker?.boss.send(QUEUES.expireHolds, {});
    await vi.waitFor(
      async () => {
        const [job] = await stack.db.$queryRaw<{ state: string }[]>`SELECT state::text FROM pgboss.job WHERE id = ${jobId}::uuid`;
        expect(job?.state).toBe('completed');
      },
      { timeout: 15_000, interval: 100 },
    );
    const expired = await stack.db.payment.findUniqueOrThrow({ where: { id: due.id } });
    expect([expired.status, expired.failureReason]).toEqual(['CANCELLED', 'HOLD_EXPIRED']);
    expect(await statusOf(young.id)).toBe('HELD');
    expect(await balanceOf(alice.accountId)).toBe(BigInt(20_000 - REVIEW_THRESHOLD));
    const actions = await stack.db.operatorAction.findMany({ where: { targetId: due.id } });
    expect(actions.map((a) => [a.operator, a.action])).toEqual([[HOLD_EXPIRY_OPERATOR, 'expireHold']]);
  });
});

describe("a customer's cancellation of a held payment", () => {
  it('cancels their own held payment with the money back, once', async () => {
    const alice = await stack.newCustomer(20_000);
    const held = await heldPayment(alice);
    const cancelled = await holds.cancelHeldPayment(alice.customerId, held.id);
    expect(cancelled).toMatchObject({
      kind: 'cancelled',
      payment: { id: held.id, status: 'CANCELLED', failureReason: 'CANCELLED_BY_CUSTOMER' },
    });
    expect(await balanceOf(alice.accountId)).toBe(20_000n);
    expect(await holds.cancelHeldPayment(alice.customerId, held.id)).toMatchObject({ kind: 'not-held', payment: { status: 'CANCELLED' } });
    expect(await stack.db.ledgerEntry.count({ where: { paymentId: held.id, kind: 'PAYMENT_REFUND' } })).toBe(1);
  });

  it("answers not-found for another customer's payment and leaves it held", async () => {
    const alice = await stack.newCustomer(20_000);
    const mallory = await stack.newCustomer(0);
    const held = await heldPayment(alice);
    expect(await holds.cancelHeldPayment(mallory.customerId, held.id)).toEqual({ kind: 'not-found' });
    expect(await holds.cancelHeldPayment(mallory.customerId, 'not-an-id')).toEqual({ kind: 'not-found' });
    expect(await statusOf(held.id)).toBe('HELD');
  });

  it('answers not-held for a payment that was never held, and leaves it alone', async () => {
    const alice = await stack.newCustomer(20_000);
    const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 100 }));
    const result = await holds.cancelHeldPayment(alice.customerId, sent.payment?.id ?? '');
    expect(result.kind).toBe('not-held');
    expect(await stack.db.ledgerEntry.count({ where: { paymentId: sent.payment?.id ?? '', kind: 'PAYMENT_REFUND' } })).toBe(0);
  });
});

describe('approval, expiry and cancellation racing on one held payment', () => {
  it('let exactly one win, and the money, the day total and the log follow the winner', async () => {
    const wins = { approved: 0, expired: 0, cancelled: 0 };
    for (let round = 0; round < 8; round++) {
      const alice = await stack.newCustomer(20_000);
      const held = await heldPayment(alice);
      frozenAt = held.createdAt.getTime() + HOLD_HOURS * HOUR;
      const [approve, expire, cancel] = await Promise.all([
        gql(stack.apiUrl, stack.operatorToken, APPROVE, { id: held.id }),
        holds.expireHolds(),
        holds.cancelHeldPayment(alice.customerId, held.id),
      ]);
      frozenAt = null;
      const approved = approve.errors === undefined;
      const cancelled = cancel.kind === 'cancelled';
      // The worker's own scheduled expiry, on the same clock, may be a fourth racer.
      const expired = (await stack.db.payment.findUniqueOrThrow({ where: { id: held.id } })).failureReason === 'HOLD_EXPIRED';
      if (expire.includes(held.id)) expect(expired).toBe(true);
      expect([approved, expired, cancelled].filter(Boolean)).toHaveLength(1);
      if (!approved) expect(approve.errors?.[0]?.message).toBe(`Payment ${held.id} is not HELD`);

      const actions = (await stack.db.operatorAction.findMany({ where: { targetId: held.id } })).map((a) => a.action);
      const refunds = await stack.db.ledgerEntry.count({ where: { paymentId: held.id, kind: 'PAYMENT_REFUND' } });
      const day = await stack.db.dailyPaymentTotal.findFirstOrThrow({ where: { customerId: alice.customerId } });
      if (approved) {
        wins.approved++;
        await vi.waitFor(async () => expect(await statusOf(held.id)).toBe('COMPLETED'), { timeout: 15_000, interval: 100 });
        expect([actions, refunds, day.used]).toEqual([['approvePayment'], 0, BigInt(REVIEW_THRESHOLD)]);
        expect(await balanceOf(alice.accountId)).toBe(BigInt(20_000 - REVIEW_THRESHOLD));
      } else {
        if (expired) wins.expired++;
        else wins.cancelled++;
        const payment = await stack.db.payment.findUniqueOrThrow({ where: { id: held.id } });
        expect([payment.status, payment.failureReason]).toEqual(['CANCELLED', expired ? 'HOLD_EXPIRED' : 'CANCELLED_BY_CUSTOMER']);
        expect([actions, refunds, day.used]).toEqual([expired ? ['expireHold'] : [], 1, 0n]);
        expect(await balanceOf(alice.accountId)).toBe(20_000n);
        expect(await stack.db.$queryRaw`SELECT 1 FROM pgboss.job WHERE data->>'paymentId' = ${held.id}`).toEqual([]);
      }
    }
    expect(wins.approved + wins.expired + wins.cancelled).toBe(8);
    // Whoever won each round, the bank's invariants hold, at the provider too.
    await vi.waitFor(async () => expect(await stack.db.payment.count({ where: { status: 'PENDING' } })).toBe(0), {
      timeout: 15_000,
      interval: 100,
    });
    const report = await audit({
      prisma: stack.db,
      provider: { url: stack.emulator.url, apiKey: stack.config.providerApiKey },
      dailyLimit: stack.config.payeeSafety.dailyLimit,
    });
    expect(report.checks.filter((c) => c.violations.length > 0)).toEqual([]);
    expectNoErrorLogs(stack);
  });
});

describe('subscribers', () => {
  it('see HELD, then the approval and settlement, and paymentUpdated completes only at the end', async () => {
    const alice = await stack.newCustomer(20_000);
    const held = await heldPayment(alice);
    const ws = wsClient(stack.apiUrl, alice.token);
    try {
      const sub = collect<PaymentUpdate>(ws.client, PAYMENT_UPDATED, { id: held.id });
      await sub.until((v) => v.length === 1);
      expect(sub.values[0]?.paymentUpdated).toMatchObject({ status: 'HELD', account: { balance: 20_000 - REVIEW_THRESHOLD } });
      expect((await gql(stack.apiUrl, stack.operatorToken, APPROVE, { id: held.id })).errors).toBeUndefined();
      await sub.done;
      // Each state as it is when its event is read: PENDING may already read as COMPLETED.
      const seen = sub.values.map((v) => v.paymentUpdated.status);
      expect([
        ['HELD', 'PENDING', 'COMPLETED'],
        ['HELD', 'COMPLETED'],
      ]).toContainEqual(seen);
      const events = await gql<{ paymentEvents: { edges: Array<{ node: { previousStatus: string | null; status: string } }> } }>(
        stack.apiUrl,
        alice.token,
        'query($a: ID!) { paymentEvents(accountId: $a) { edges { node { previousStatus status } } } }',
        { a: alice.accountId },
      );
      expect(events.data?.paymentEvents.edges.map((e) => [e.node.previousStatus, e.node.status])).toEqual([
        [null, 'HELD'],
        ['HELD', 'PENDING'],
        ['PENDING', 'COMPLETED'],
      ]);
    } finally {
      await ws.client.dispose();
    }
  });
});

describe('the hold rule', () => {
  it('reads the same in SQL (the statement that takes a payment) as in TypeScript, at every boundary', async () => {
    const policy = { reviewThreshold: REVIEW_THRESHOLD, newPayeeSeconds: 24 * 3600 };
    const sql = `SELECT ${holdReasonSql(policy, {
      amount: '$1::bigint',
      payeeId: '$2::uuid',
      payeeCreatedAt: '$3::timestamptz',
      payeeLetThroughAt: '$4::timestamptz',
      now: '$5::timestamptz',
    })} AS reason`;
    const at = new Date('2026-03-29T00:30:00.000Z');
    const newFor = policy.newPayeeSeconds * 1000;
    const payees = [
      null,
      ...[-1, 0, 1].flatMap((ms) => [
        { id: '00000000-0000-4000-8000-000000000001', createdAt: new Date(at.getTime() - newFor + ms), letThroughAt: null },
        { id: '00000000-0000-4000-8000-000000000001', createdAt: new Date(at.getTime() - newFor + ms), letThroughAt: at },
      ]),
    ];
    for (const amount of [1, REVIEW_THRESHOLD - 1, REVIEW_THRESHOLD, REVIEW_THRESHOLD + 1]) {
      for (const payee of payees) {
        const [row] = await stack.db.$queryRawUnsafe<{ reason: string | null }[]>(
          sql,
          BigInt(amount),
          payee?.id ?? null,
          payee?.createdAt ?? null,
          payee?.letThroughAt ?? null,
          at,
        );
        expect({ amount, payee, reason: row?.reason }).toEqual({ amount, payee, reason: holdReason(policy, amount, payee, at) });
      }
    }
  });
});

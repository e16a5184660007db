import { readFileSync } from 'node:fs';
import { type ObjectTypeDefinitionNode, parse } from 'graphql';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { signToken } from '../src/auth.ts';
import { londonToday, systemClock } from '../src/calendar.ts';
import { loadConfig } from '../src/config.ts';
import { refund } from '../src/payments/transitions.ts';
import {
  emulatorCall,
  expectNoErrorLogs,
  gql,
  paymentInput,
  rowCounts,
  type Stack,
  startStack,
  TEST_OPERATOR,
  TEST_SECRET,
  type TestCustomer,
} from './helpers.ts';

/**
 * Payee safety (issue 15) end to end, over HTTP on real PostgreSQL and the emulator, each rule of
 * the contract at its boundary. Settings are small so the boundaries are cheap to reach; the clock
 * of payee safety is the test's (an offset from now), so days and hours pass at will.
 */
const LIMIT = 100_000;
const CHECK_THRESHOLD = 20_000;
const REVIEW_THRESHOLD = 40_000;
const HOUR = 3600_000;

let stack: Stack;
let offsetMs = 0;
/** When set, the clock stands still there (for boundaries to the millisecond). */
let frozenAt: number | null = null;
const now = { now: () => new Date(frozenAt ?? Date.now() + offsetMs) };
beforeAll(async () => {
  stack = await startStack({
    worker: false,
    clock: now,
    env: {
      DAILY_PAYMENT_LIMIT: String(LIMIT),
      PAYEE_CHECK_THRESHOLD: String(CHECK_THRESHOLD),
      REVIEW_THRESHOLD: String(REVIEW_THRESHOLD),
      NEW_PAYEE_HOURS: '24',
      HOLD_MAX_HOURS: '96',
    },
  });
});
afterEach(() => {
  offsetMs = 0;
  frozenAt = null;
  stack.emulator.setFaults({ errorRate: 0 });
});
afterAll(async () => {
  await stack?.stop();
});

const GRACE = { name: 'Grace Hopper', sortCode: '12-34-56', accountNumber: '12345678' };
const CHECK = 'mutation($input: RecipientInput!) { checkPayee(input: $input) { id result matchedName checkedAt } }';
const ADD_PAYEE =
  'mutation($input: RecipientInput!) { addPayee(input: $input) { id name sortCode accountNumber createdAt lastCheck { id result matchedName } } }';
const APPROVE = 'mutation($id: ID!) { approvePayment(paymentId: $id) { id status } }';
const REJECT =
  'mutation($id: ID!, $reason: String!) { rejectPayment(paymentId: $id, reason: $reason) { id status failureReason account { balance } } }';

type Check = { id: string; result: string; matchedName: string | null; checkedAt: string };

async function check(token: string, input: Record<string, string>): Promise<Check> {
  const response = await gql<{ checkPayee: Check }>(stack.apiUrl, token, CHECK, { input });
  if (!response.data?.checkPayee) throw new Error(`checkPayee failed: ${JSON.stringify(response)}`);
  return response.data.checkPayee;
}

async function addPayee(token: string, input: Record<string, string>) {
  const response = await gql<{ addPayee: { id: string; createdAt: string; lastCheck: { result: string } | null } }>(
    stack.apiUrl,
    token,
    ADD_PAYEE,
    { input },
  );
  if (!response.data?.addPayee) throw new Error(`addPayee failed: ${JSON.stringify(response)}`);
  return response.data.addPayee;
}

const pay = (who: TestCustomer, overrides: Record<string, unknown> = {}) => stack.send(who.token, paymentInput(who.accountId, overrides));
const codes = (sent: Awaited<ReturnType<typeof pay>>) => sent.errors.map((e) => [e.code, e.field]);
const balanceOf = async (accountId: string) => (await stack.db.account.findUniqueOrThrow({ where: { id: accountId } })).balance;
const settleJobs = (paymentId: string) =>
  stack.db.$queryRaw<{ id: string }[]>`SELECT id::text FROM pgboss.job WHERE name = 'payment.settle' AND data->>'paymentId' = ${paymentId}`;

describe('the contract defaults', () => {
  it('are £1,000 for a payee check, £25,000 a day, £10,000 for review, 24 hours for a new payee and 96 for a hold', () => {
    expect(loadConfig({}).payeeSafety).toEqual({
      checkThreshold: 100_000,
      dailyLimit: 2_500_000,
      reviewThreshold: 1_000_000,
      newPayeeSeconds: 24 * 3600,
      holdMaxSeconds: 96 * 3600,
    });
  });
});

describe('checkPayee', () => {
  it("answers MATCH for the name the recipient's bank holds, CLOSE_MATCH with that name for a near one, NO_MATCH otherwise", async () => {
    const alice = await stack.newCustomer(0);
    expect(await check(alice.token, GRACE)).toMatchObject({
      result: 'MATCH',
      matchedName: null,
      id: expect.any(String),
      checkedAt: expect.any(String),
    });
    expect(await check(alice.token, { ...GRACE, name: ' grace  HOPPER ' })).toMatchObject({ result: 'MATCH' });
    expect(await check(alice.token, { ...GRACE, name: 'Grace Hoper' })).toMatchObject({
      result: 'CLOSE_MATCH',
      matchedName: 'Grace Hopper',
    });
    expect(await check(alice.token, { ...GRACE, name: 'G Hopper' })).toMatchObject({ result: 'CLOSE_MATCH', matchedName: 'Grace Hopper' });
    expect(await check(alice.token, { ...GRACE, name: 'Mallory Smith' })).toMatchObject({ result: 'NO_MATCH', matchedName: null });
    expect(await check(alice.token, { ...GRACE, accountNumber: '99999999' })).toMatchObject({ result: 'NO_MATCH', matchedName: null });
    expect(await stack.db.payeeCheck.count({ where: { customerId: alice.customerId } })).toBe(6);
  });

  it('answers UNAVAILABLE while the provider fails, and while its circuit stays open after the provider is back', async () => {
    const alice = await stack.newCustomer(0);
    stack.emulator.setFaults({ errorRate: 1 });
    for (let i = 0; i < 6; i++) expect((await check(alice.token, GRACE)).result).toBe('UNAVAILABLE');
    stack.emulator.setFaults({ errorRate: 0 });
    // The breaker opened after 5 failures: not asked at all until it lets a probe through.
    expect((await check(alice.token, GRACE)).result).toBe('UNAVAILABLE');
    await vi.waitFor(async () => expect((await check(alice.token, GRACE)).result).toBe('MATCH'), { timeout: 15_000, interval: 500 });
  });

  it('refuses bad details naming the field and stores nothing', async () => {
    const alice = await stack.newCustomer(0);
    const response = await gql(stack.apiUrl, alice.token, CHECK, { input: { ...GRACE, sortCode: '12-34' } });
    expect(response.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', userErrorCode: 'INVALID_INPUT', field: ['sortCode'] });
    expect(await stack.db.payeeCheck.count({ where: { customerId: alice.customerId } })).toBe(0);
  });

  it('is for customers only', async () => {
    const response = await gql(stack.apiUrl, stack.operatorToken, CHECK, { input: GRACE });
    expect(response.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });
});

describe('saved payees', () => {
  it('are saved with their check, listed, renamed by saving again without restarting their clock, and removed', async () => {
    const alice = await stack.newCustomer(0);
    const first = await addPayee(alice.token, { ...GRACE, name: 'Grace Hoper' });
    expect(first.lastCheck).toMatchObject({ result: 'CLOSE_MATCH', matchedName: 'Grace Hopper' });
    offsetMs = HOUR;
    const again = await addPayee(alice.token, GRACE);
    expect(again).toMatchObject({
      id: first.id,
      name: 'Grace Hopper',
      sortCode: '123456',
      createdAt: first.createdAt,
      lastCheck: { result: 'MATCH' },
    });
    const listed = await gql<{ me: { payees: Array<{ id: string; lastCheck: { result: string } }> } }>(
      stack.apiUrl,
      alice.token,
      '{ me { payees { id name lastCheck { result } } } }',
    );
    expect(listed.data?.me.payees).toEqual([{ id: first.id, name: 'Grace Hopper', lastCheck: { result: 'MATCH' } }]);
    const removed = await gql<{ removePayee: boolean }>(stack.apiUrl, alice.token, 'mutation($id: ID!) { removePayee(id: $id) }', {
      id: first.id,
    });
    expect(removed.data?.removePayee).toBe(true);
    expect(await stack.db.payee.count({ where: { customerId: alice.customerId } })).toBe(0);
  });

  it('look to another customer like nothing: not listed, and removing one answers false and removes nothing', async () => {
    const alice = await stack.newCustomer(0);
    const mallory = await stack.newCustomer(0);
    const payee = await addPayee(alice.token, GRACE);
    const listed = await gql<{ me: { payees: unknown[] } }>(stack.apiUrl, mallory.token, '{ me { payees { id } } }');
    expect(listed.data?.me.payees).toEqual([]);
    for (const id of [payee.id, '00000000-0000-4000-8000-000000000000', 'not-an-id']) {
      const removed = await gql<{ removePayee: boolean }>(stack.apiUrl, mallory.token, 'mutation($id: ID!) { removePayee(id: $id) }', {
        id,
      });
      expect(removed.data?.removePayee).toBe(false);
    }
    expect(await stack.db.payee.count({ where: { id: payee.id } })).toBe(1);
  });

  it('refuses bad details naming the field and saves nothing', async () => {
    const alice = await stack.newCustomer(0);
    const response = await gql(stack.apiUrl, alice.token, ADD_PAYEE, { input: { ...GRACE, accountNumber: '1234' } });
    expect(response.errors?.[0]?.extensions).toMatchObject({
      code: 'BAD_USER_INPUT',
      userErrorCode: 'INVALID_INPUT',
      field: ['accountNumber'],
    });
    expect(await stack.db.payee.count({ where: { customerId: alice.customerId } })).toBe(0);
  });
});

describe('PAYEE_NOT_CONFIRMED', () => {
  it('takes a payment of exactly PAYEE_CHECK_THRESHOLD with no check, and refuses one penny more writing nothing', async () => {
    const alice = await stack.newCustomer(100_000);
    expect((await pay(alice, { amount: CHECK_THRESHOLD })).payment?.status).toBe('PENDING');
    const before = await rowCounts(stack.db);
    const refused = await pay(alice, { amount: CHECK_THRESHOLD + 1 });
    expect(refused).toEqual({
      payment: null,
      errors: [{ code: 'PAYEE_NOT_CONFIRMED', message: expect.any(String), field: ['payeeCheckId'] }],
    });
    expect(await rowCounts(stack.db)).toEqual(before);
  });

  it('refuses a payment whose check is NO_MATCH at any amount, writing nothing', async () => {
    const alice = await stack.newCustomer(100_000);
    const recipient = { ...GRACE, name: 'Mallory Smith' };
    const noMatch = await check(alice.token, recipient);
    const before = await rowCounts(stack.db);
    const refused = await pay(alice, { amount: 1, recipient, payeeCheckId: noMatch.id });
    expect(codes(refused)).toEqual([['PAYEE_NOT_CONFIRMED', ['recipient', 'name']]]);
    expect(await rowCounts(stack.db)).toEqual(before);
  });

  it('takes payments over the threshold whose check is MATCH, CLOSE_MATCH or UNAVAILABLE', async () => {
    for (const [name, result, errorRate] of [
      ['Grace Hopper', 'MATCH', 0],
      ['Grace Hoper', 'CLOSE_MATCH', 0],
      ['Grace M Hopper', 'UNAVAILABLE', 1],
    ] as const) {
      const alice = await stack.newCustomer(100_000);
      stack.emulator.setFaults({ errorRate });
      const c = await check(alice.token, { ...GRACE, name });
      stack.emulator.setFaults({ errorRate: 0 });
      expect(c.result).toBe(result);
      const sent = await pay(alice, { amount: CHECK_THRESHOLD + 1, recipient: { ...GRACE, name }, payeeCheckId: c.id });
      expect(sent.errors).toEqual([]);
      expect(sent.payment?.status).toBe('PENDING');
    }
  });

  it('takes a payment over the threshold to a saved payee with no check at all', async () => {
    const alice = await stack.newCustomer(100_000);
    await addPayee(alice.token, { ...GRACE, name: 'Someone Else' });
    offsetMs = 25 * HOUR; // no longer a new payee: not held either
    const sent = await pay(alice, { amount: CHECK_THRESHOLD + 1, recipient: { ...GRACE, name: 'Someone Else' } });
    expect(sent.errors).toEqual([]);
    expect(sent.payment?.status).toBe('PENDING');
  });

  it('refuses a check made by another customer, for other details, or more than 24 hours ago, writing nothing', async () => {
    const alice = await stack.newCustomer(100_000);
    const mallory = await stack.newCustomer(100_000);
    const malloryCheck = await check(mallory.token, GRACE);
    const aliceCheck = await check(alice.token, GRACE);
    const before = await rowCounts(stack.db);
    const attempts = [
      pay(alice, { amount: 100, recipient: GRACE, payeeCheckId: malloryCheck.id }),
      pay(alice, { amount: 100, recipient: { ...GRACE, accountNumber: '87654321' }, payeeCheckId: aliceCheck.id }),
      pay(alice, { amount: 100, recipient: { ...GRACE, sortCode: '654321' }, payeeCheckId: aliceCheck.id }),
      pay(alice, { amount: 100, recipient: { ...GRACE, name: 'Grace Hoper' }, payeeCheckId: aliceCheck.id }),
      pay(alice, { amount: 100, recipient: GRACE, payeeCheckId: '00000000-0000-4000-8000-000000000000' }),
    ];
    for (const refused of await Promise.all(attempts)) expect(codes(refused)).toEqual([['PAYEE_NOT_CONFIRMED', ['payeeCheckId']]]);
    // Valid for exactly 24 hours after it was made, not a millisecond more.
    frozenAt = new Date(aliceCheck.checkedAt).getTime() + 24 * HOUR + 1;
    expect(codes(await pay(alice, { amount: 100, recipient: GRACE, payeeCheckId: aliceCheck.id }))).toEqual([
      ['PAYEE_NOT_CONFIRMED', ['payeeCheckId']],
    ]);
    expect(await rowCounts(stack.db)).toEqual(before);
    frozenAt -= 1;
    expect((await pay(alice, { amount: CHECK_THRESHOLD + 1, recipient: GRACE, payeeCheckId: aliceCheck.id })).payment?.status).toBe(
      'PENDING',
    );
  });

  it('answers a replay with its payment even after its check has expired', async () => {
    const alice = await stack.newCustomer(100_000);
    const c = await check(alice.token, GRACE);
    const input = paymentInput(alice.accountId, { amount: CHECK_THRESHOLD + 1, recipient: GRACE, payeeCheckId: c.id });
    const first = await stack.send(alice.token, input);
    offsetMs = 25 * HOUR;
    expect(await stack.send(alice.token, input)).toEqual(first);
  });

  it('refuses a payeeCheckId that is not an id as INVALID_INPUT naming it, writing nothing', async () => {
    const alice = await stack.newCustomer(100_000);
    const before = await rowCounts(stack.db);
    expect(codes(await pay(alice, { payeeCheckId: 'check-1' }))).toEqual([['INVALID_INPUT', ['payeeCheckId']]]);
    expect(await rowCounts(stack.db)).toEqual(before);
  });
});

describe('the daily limit', () => {
  it('takes payments up to the limit exactly and refuses one penny more, writing nothing', async () => {
    const alice = await stack.newCustomer(200_000);
    for (let i = 0; i < 4; i++) expect((await pay(alice, { amount: CHECK_THRESHOLD })).errors).toEqual([]);
    expect((await pay(alice, { amount: LIMIT - 4 * CHECK_THRESHOLD - 1 })).errors).toEqual([]);
    const before = await rowCounts(stack.db);
    expect(codes(await pay(alice, { amount: 2 }))).toEqual([['LIMIT_EXCEEDED', ['amount']]]);
    expect(await rowCounts(stack.db)).toEqual(before);
    expect((await pay(alice, { amount: 1 })).errors).toEqual([]);
    expect(await balanceOf(alice.accountId)).toBe(BigInt(200_000 - LIMIT));
  });

  it('counts every account of the customer, and not other customers', async () => {
    const alice = await stack.newCustomer(200_000);
    const bob = await stack.newCustomer(200_000);
    const opened = await gql<{ openAccount: { id: string } }>(
      stack.apiUrl,
      stack.operatorToken,
      'mutation($c: ID!) { openAccount(input: { customerId: $c, name: "Savings" }) { id } }',
      { c: alice.customerId },
    );
    const savings = opened.data?.openAccount.id ?? '';
    await gql(
      stack.apiUrl,
      stack.operatorToken,
      'mutation($a: ID!) { depositFunds(input: { accountId: $a, amount: 100000, idempotencyKey: "s" }) { id } }',
      { a: savings },
    );
    for (let i = 0; i < 3; i++) expect((await pay(alice, { amount: CHECK_THRESHOLD })).errors).toEqual([]);
    expect((await pay(bob, { amount: CHECK_THRESHOLD })).errors).toEqual([]);
    expect((await stack.send(alice.token, paymentInput(savings, { amount: CHECK_THRESHOLD }))).errors).toEqual([]);
    expect((await stack.send(alice.token, paymentInput(savings, { amount: CHECK_THRESHOLD }))).errors).toEqual([]);
    expect(codes(await stack.send(alice.token, paymentInput(savings, { amount: 1 })))).toEqual([['LIMIT_EXCEEDED', ['amount']]]);
    expect((await pay(bob, { amount: CHECK_THRESHOLD })).errors).toEqual([]);
  });

  it('starts again at midnight in London, in summer time too (23:00 UTC)', async () => {
    const alice = await stack.newCustomer(200_000);
    frozenAt = Date.parse('2026-07-01T22:59:59.999Z');
    for (let i = 0; i < 5; i++) expect((await pay(alice, { amount: CHECK_THRESHOLD })).errors).toEqual([]);
    expect(codes(await pay(alice, { amount: 1 }))).toEqual([['LIMIT_EXCEEDED', ['amount']]]);
    frozenAt = Date.parse('2026-07-01T23:00:00.000Z');
    expect((await pay(alice, { amount: CHECK_THRESHOLD })).errors).toEqual([]);
    const days = await stack.db.dailyPaymentTotal.findMany({ where: { customerId: alice.customerId }, orderBy: { day: 'asc' } });
    expect(days.map((d) => [d.day.toISOString().slice(0, 10), d.used])).toEqual([
      ['2026-07-01', BigInt(LIMIT)],
      ['2026-07-02', BigInt(CHECK_THRESHOLD)],
    ]);
  });

  it('gives the amount back to its day when the payment is refunded, rejected or expires', async () => {
    const alice = await stack.newCustomer(200_000);
    const c = await check(alice.token, GRACE);
    const sent = await pay(alice, { amount: CHECK_THRESHOLD });
    const held = await pay(alice, { amount: REVIEW_THRESHOLD, recipient: GRACE, payeeCheckId: c.id });
    expect(held.payment?.status).toBe('HELD');
    for (let i = 0; i < 2; i++) expect((await pay(alice, { amount: CHECK_THRESHOLD })).errors).toEqual([]);
    expect(codes(await pay(alice, { amount: 1 }))).toEqual([['LIMIT_EXCEEDED', ['amount']]]);
    // The worker's refund of a payment the recipient's bank rejected.
    await stack.db.$transaction((tx) => refund(tx, sent.payment?.id ?? '', 'CANCELLED', 'RECIPIENT_REJECTED'));
    expect((await pay(alice, { amount: CHECK_THRESHOLD })).errors).toEqual([]);
    const rejected = await gql(stack.apiUrl, stack.operatorToken, REJECT, { id: held.payment?.id, reason: 'Looks like a scam' });
    expect(rejected.errors).toBeUndefined();
    expect(codes(await pay(alice, { amount: REVIEW_THRESHOLD + 1, recipient: GRACE, payeeCheckId: c.id }))).toEqual([
      ['LIMIT_EXCEEDED', ['amount']],
    ]);
    expect((await pay(alice, { amount: REVIEW_THRESHOLD, recipient: GRACE, payeeCheckId: c.id })).payment?.status).toBe('HELD');
  });

  it('never passes the limit by a penny when 200 payments race', async () => {
    const alice = await stack.newCustomer(1_000_000);
    const amount = 700; // 100,000 / 700: exactly 142 fit, with 600 pence left over
    const sent = await Promise.all(Array.from({ length: 200 }, () => pay(alice, { amount })));
    const taken = sent.filter((s) => s.payment);
    expect(taken).toHaveLength(Math.floor(LIMIT / amount));
    expect(sent.filter((s) => s.errors[0]?.code === 'LIMIT_EXCEEDED')).toHaveLength(200 - taken.length);
    const [total] = await stack.db.$queryRaw<{ sum: bigint }[]>`
      SELECT sum(p.amount)::bigint AS sum FROM payments p JOIN accounts a ON a.id = p.account_id WHERE a.customer_id = ${alice.customerId}::uuid`;
    expect(total?.sum).toBe(BigInt(taken.length * amount));
    expect(total && total.sum <= BigInt(LIMIT)).toBe(true);
    expect((await stack.db.dailyPaymentTotal.findFirstOrThrow({ where: { customerId: alice.customerId } })).used).toBe(total?.sum);
    expect(await balanceOf(alice.accountId)).toBe(BigInt(1_000_000 - taken.length * amount));
    expectNoErrorLogs(stack);
  });
});

describe('holds', () => {
  it('holds a payment of exactly REVIEW_THRESHOLD: debited, with its ledger entry and its event, and no settlement job', async () => {
    const alice = await stack.newCustomer(100_000);
    const c = await check(alice.token, GRACE);
    const below = await pay(alice, { amount: REVIEW_THRESHOLD - 1, recipient: GRACE, payeeCheckId: c.id });
    expect(below.payment?.status).toBe('PENDING');
    const held = await pay(alice, { amount: REVIEW_THRESHOLD, recipient: GRACE, payeeCheckId: c.id });
    expect(held.errors).toEqual([]);
    const id = held.payment?.id ?? '';
    expect(held.payment?.status).toBe('HELD');
    expect(await balanceOf(alice.accountId)).toBe(BigInt(100_000 - 2 * REVIEW_THRESHOLD + 1));
    const ledger = await stack.db.ledgerEntry.findMany({ where: { paymentId: id } });
    expect(ledger.map((e) => [e.kind, e.amount])).toEqual([['PAYMENT_DEBIT', BigInt(-REVIEW_THRESHOLD)]]);
    expect(await settleJobs(id)).toEqual([]);
    const events = await stack.db.paymentEvent.findMany({ where: { paymentId: id } });
    expect(events.map((e) => [e.previousStatus, e.status])).toEqual([[null, 'HELD']]);
  });

  it('holds the first payment to a payee saved less than NEW_PAYEE_HOURS ago, and not once it has been saved that long', async () => {
    const alice = await stack.newCustomer(100_000);
    const payee = await addPayee(alice.token, GRACE);
    const saved = new Date(payee.createdAt).getTime();
    frozenAt = saved + 24 * HOUR - 1;
    expect((await pay(alice, { amount: 100, recipient: GRACE })).payment?.status).toBe('HELD');
    frozenAt += 1;
    expect((await pay(alice, { amount: 100, recipient: GRACE })).payment?.status).toBe('PENDING');
  });

  it('holds payments to a new payee until an operator lets the first one through, then no more', async () => {
    const alice = await stack.newCustomer(100_000);
    await addPayee(alice.token, GRACE);
    const first = await pay(alice, { amount: 100, recipient: GRACE });
    const second = await pay(alice, { amount: 200, recipient: GRACE });
    expect([first.payment?.status, second.payment?.status]).toEqual(['HELD', 'HELD']);
    expect((await gql(stack.apiUrl, stack.operatorToken, APPROVE, { id: first.payment?.id })).errors).toBeUndefined();
    expect((await pay(alice, { amount: 300, recipient: GRACE })).payment?.status).toBe('PENDING');
    // Another recipient, never saved, is not a new payee.
    expect((await pay(alice, { amount: 100, recipient: { ...GRACE, accountNumber: '11112222' } })).payment?.status).toBe('PENDING');
  });

  it('approves a held payment: PENDING with its settlement job and the operator action, together', async () => {
    const alice = await stack.newCustomer(100_000);
    const c = await check(alice.token, GRACE);
    const held = await pay(alice, { amount: REVIEW_THRESHOLD, recipient: GRACE, payeeCheckId: c.id });
    const id = held.payment?.id ?? '';
    const approved = await gql<{ approvePayment: { status: string } }>(stack.apiUrl, stack.operatorToken, APPROVE, { id });
    expect(approved.data?.approvePayment).toEqual({ id, status: 'PENDING' });
    expect(await settleJobs(id)).toEqual([{ id }]);
    const actions = await stack.db.operatorAction.findMany({ where: { targetId: id } });
    expect(actions.map((a) => [a.operator, a.action, a.detail])).toEqual([[TEST_OPERATOR, 'approvePayment', `${REVIEW_THRESHOLD} pence`]]);
    const events = await stack.db.paymentEvent.findMany({ where: { paymentId: id }, orderBy: { seq: 'asc' } });
    expect(events.map((e) => [e.previousStatus, e.status])).toEqual([
      [null, 'HELD'],
      ['HELD', 'PENDING'],
    ]);
  });

  it("rejects a held payment: CANCELLED with the money back and the operator's reason in the action log", async () => {
    const alice = await stack.newCustomer(100_000);
    await addPayee(alice.token, GRACE);
    const held = await pay(alice, { amount: 2_500, recipient: GRACE });
    const id = held.payment?.id ?? '';
    const rejected = await gql<{ rejectPayment: unknown }>(stack.apiUrl, stack.operatorToken, REJECT, {
      id,
      reason: 'Customer confirmed a scam call',
    });
    expect(rejected.data?.rejectPayment).toEqual({
      id,
      status: 'CANCELLED',
      failureReason: 'REJECTED_IN_REVIEW',
      account: { balance: 100_000 },
    });
    const ledger = await stack.db.ledgerEntry.findMany({ where: { paymentId: id }, orderBy: { id: 'asc' } });
    expect(ledger.map((e) => [e.kind, e.amount])).toEqual([
      ['PAYMENT_DEBIT', -2_500n],
      ['PAYMENT_REFUND', 2_500n],
    ]);
    expect(await settleJobs(id)).toEqual([]);
    const actions = await stack.db.operatorAction.findMany({ where: { targetId: id } });
    expect(actions.map((a) => [a.operator, a.action, a.detail])).toEqual([
      [TEST_OPERATOR, 'rejectPayment', 'Customer confirmed a scam call'],
    ]);
  });

  it('refuses to approve or reject a payment that is not held, or with no reason, recording nothing', async () => {
    const alice = await stack.newCustomer(100_000);
    const pending = await pay(alice, { amount: 100 });
    await addPayee(alice.token, GRACE);
    const held = await pay(alice, { amount: 100, recipient: GRACE });
    const before = await rowCounts(stack.db);
    const actions = await stack.db.operatorAction.count();
    const answers = await Promise.all([
      gql(stack.apiUrl, stack.operatorToken, APPROVE, { id: pending.payment?.id }),
      gql(stack.apiUrl, stack.operatorToken, REJECT, { id: pending.payment?.id, reason: 'no' }),
      gql(stack.apiUrl, stack.operatorToken, APPROVE, { id: '00000000-0000-4000-8000-000000000000' }),
      gql(stack.apiUrl, stack.operatorToken, REJECT, { id: 'nope', reason: 'no' }),
      gql(stack.apiUrl, stack.operatorToken, REJECT, { id: held.payment?.id, reason: '  ' }),
    ]);
    expect(answers.map((a) => [a.errors?.[0]?.extensions?.code, a.errors?.[0]?.extensions?.field])).toEqual([
      ['BAD_USER_INPUT', ['paymentId']],
      ['BAD_USER_INPUT', ['paymentId']],
      ['BAD_USER_INPUT', ['paymentId']],
      ['BAD_USER_INPUT', ['paymentId']],
      ['BAD_USER_INPUT', ['reason']],
    ]);
    expect(answers[0]?.errors?.[0]?.message).toBe(`Payment ${pending.payment?.id} is not HELD`);
    expect(await rowCounts(stack.db)).toEqual(before);
    expect(await stack.db.operatorAction.count()).toBe(actions);
  });

  it('lets customers neither approve nor reject nor list held payments', async () => {
    const alice = await stack.newCustomer(100_000);
    await addPayee(alice.token, GRACE);
    const held = await pay(alice, { amount: 100, recipient: GRACE });
    const answers = await Promise.all([
      gql(stack.apiUrl, alice.token, APPROVE, { id: held.payment?.id }),
      gql(stack.apiUrl, alice.token, REJECT, { id: held.payment?.id, reason: 'mine' }),
      gql(stack.apiUrl, alice.token, '{ heldPayments { edges { node { id } } } }'),
    ]);
    for (const answer of answers) expect(answer.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect((await stack.db.payment.findUniqueOrThrow({ where: { id: held.payment?.id ?? '' } })).status).toBe('HELD');
  });

  it('lists held payments to operators, held longest first, page by page', async () => {
    const alice = await stack.newCustomer(100_000);
    await addPayee(alice.token, GRACE);
    const mine = [await pay(alice, { amount: 101, recipient: GRACE }), await pay(alice, { amount: 102, recipient: GRACE })].map(
      (s) => s.payment?.id,
    );
    const ids: string[] = [];
    let after: string | null = null;
    type Page = {
      heldPayments: {
        edges: Array<{ node: { id: string; status: string } }>;
        pageInfo: { hasNextPage: boolean; endCursor: string | null };
      };
    };
    for (;;) {
      const page: { data?: Page | null } = await gql<Page>(
        stack.apiUrl,
        stack.operatorToken,
        'query($after: String) { heldPayments(first: 2, after: $after) { edges { node { id status } } pageInfo { hasNextPage endCursor } } }',
        { after },
      );
      const connection = page.data?.heldPayments;
      if (!connection) throw new Error('heldPayments failed');
      for (const edge of connection.edges) {
        expect(edge.node.status).toBe('HELD');
        ids.push(edge.node.id);
      }
      if (!connection.pageInfo.hasNextPage) break;
      after = connection.pageInfo.endCursor;
    }
    // Other tests' clocks held some payments later than these: the order is when each became HELD.
    expect(ids.filter((id) => mine.includes(id))).toEqual(mine);
    const held = await stack.db.payment.findMany({ where: { status: 'HELD' }, orderBy: [{ heldAt: 'asc' }, { id: 'asc' }] });
    expect(ids).toEqual(held.map((p) => p.id));
  });
});

describe('the operator action log', () => {
  it('has an action, with the operator from the token, for every operator mutation in the schema', async () => {
    const schema = parse(readFileSync(new URL('../schema.graphql', import.meta.url), 'utf8'));
    const mutation = schema.definitions.find(
      (d): d is ObjectTypeDefinitionNode => d.kind === 'ObjectTypeDefinition' && d.name.value === 'Mutation',
    );
    const operatorOnly = (mutation?.fields ?? []).filter((f) => f.description?.value.startsWith('Operator only')).map((f) => f.name.value);
    expect(operatorOnly.sort()).toEqual([
      'approvePayment',
      'createCustomer',
      'depositFunds',
      'openAccount',
      'reconcile',
      'rejectPayment',
      'resolveQuarantinedProviderEvent',
      'resolveReconciliationBreak',
    ]);

    const carol = await signToken({ role: 'operator', operatorId: 'carol@bank' }, TEST_SECRET, 600);
    const customer = await stack.newCustomer(0); // createCustomer, openAccount (and depositFunds below) by TEST_OPERATOR
    await gql(
      stack.apiUrl,
      carol,
      'mutation($a: ID!) { depositFunds(input: { accountId: $a, amount: 100000, idempotencyKey: "k" }) { id } }',
      { a: customer.accountId },
    );
    await addPayee(customer.token, GRACE);
    const a = (await pay(customer, { amount: 100, recipient: GRACE })).payment?.id ?? '';
    const b = (await pay(customer, { amount: 200, recipient: GRACE })).payment?.id ?? '';
    await gql(stack.apiUrl, carol, APPROVE, { id: a });
    await gql(stack.apiUrl, carol, REJECT, { id: b, reason: 'duplicate' });
    // A provider event the parser refused (test/provider-events-quarantine.test.ts makes them through the feed).
    const quarantined = await stack.db.providerEventQuarantine.create({
      data: { eventKey: `unknown-${customer.customerId}`, rawType: 'mandate.cancelled', problem: 'a type we do not handle', raw: {} },
    });
    await gql(stack.apiUrl, carol, 'mutation($id: ID!) { resolveQuarantinedProviderEvent(id: $id, note: "not ours") { id } }', {
      id: quarantined.id,
    });
    // A day reconciled with a break the provider's report makes up, and the break resolved.
    const today = londonToday(systemClock);
    await emulatorCall(stack, 'POST', '/admin/reports/breaks', { date: today, kind: 'MISSING_OURS', amount: 4_321 });
    const reconciled = await gql<{ reconcile: Array<{ id: string; kind: string; theirs: number | null }> }>(
      stack.apiUrl,
      carol,
      'mutation($d: Date!) { reconcile(date: $d) { id kind theirs } }',
      { d: today },
    );
    const made = reconciled.data?.reconcile.find((r) => r.kind === 'MISSING_OURS' && r.theirs === 4_321);
    if (!made) throw new Error(`reconcile found no injected break: ${JSON.stringify(reconciled)}`);
    await gql(stack.apiUrl, carol, 'mutation($id: ID!) { resolveReconciliationBreak(id: $id, note: "made up") { id } }', { id: made.id });
    const logged = await stack.db.operatorAction.findMany({
      where: {
        OR: [
          { targetId: { in: [customer.customerId, customer.accountId, a, b, quarantined.id, made.id] } },
          { operator: 'carol@bank', action: 'reconcile' },
        ],
      },
      orderBy: { id: 'asc' },
    });
    expect(logged.map((l) => [l.operator, l.action])).toEqual([
      [TEST_OPERATOR, 'createCustomer'],
      [TEST_OPERATOR, 'openAccount'],
      ['carol@bank', 'depositFunds'],
      ['carol@bank', 'approvePayment'],
      ['carol@bank', 'rejectPayment'],
      ['carol@bank', 'resolveQuarantinedProviderEvent'],
      ['carol@bank', 'reconcile'],
      ['carol@bank', 'resolveReconciliationBreak'],
    ]);
    expect(new Set(logged.map((l) => l.action))).toEqual(new Set(operatorOnly));
  });
});

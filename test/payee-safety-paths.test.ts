import type { PgBoss } from 'pg-boss';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queuePolicy, startQueue } from '../src/app/queue.ts';
import { addCalendarDays, type CalendarDate, startOfLondonDay } from '../src/calendar.ts';
import { createPaymentJobs } from '../src/jobs/enqueue.ts';
import { createMetrics } from '../src/ops/metrics.ts';
import { createHoldService, type HoldService } from '../src/payments/holds.ts';
import { createScheduledExecution, type ScheduledExecution } from '../src/payments/scheduled.ts';
import { createStandingOrders, type StandingOrders } from '../src/payments/standing-orders.ts';
import { refund } from '../src/payments/transitions.ts';
import { gql, paymentInput, rowCounts, type Stack, startStack, type TestCustomer, testClock } from './helpers.ts';

/**
 * Payee safety on every way money leaves: a standing order passes the PAYEE_NOT_CONFIRMED rule of
 * sendPayment, a scheduled payment's day and every standing-order occurrence are held by the same
 * hold rule, a payee's let-through is recorded when it happens, and holds count from when they
 * began. No worker runs: the test runs the schedulers, the executions and the hold expiry itself,
 * on a clock it moves across days.
 */
const CHECK_THRESHOLD = 20_000;
const REVIEW_THRESHOLD = 40_000;
const HOLD_HOURS = 96;
const HOUR = 3600_000;

const clock = testClock(new Date('2027-03-01T10:00:00Z'));
let stack: Stack;
let boss: PgBoss;
let scheduled: ScheduledExecution;
let orders: StandingOrders;
let holds: HoldService;
beforeAll(async () => {
  stack = await startStack({
    worker: false,
    clock,
    env: {
      PAYEE_CHECK_THRESHOLD: String(CHECK_THRESHOLD),
      REVIEW_THRESHOLD: String(REVIEW_THRESHOLD),
      NEW_PAYEE_HOURS: '24',
      HOLD_MAX_HOURS: String(HOLD_HOURS),
    },
  });
  boss = await startQueue({ databaseUrl: stack.databaseUrl, config: stack.config, logger: stack.logger });
  const jobs = createPaymentJobs({ boss, policy: queuePolicy(stack.config), clock });
  const common = { prisma: stack.db, jobs, clock, policy: stack.config.payeeSafety, logger: stack.logger, metrics: createMetrics() };
  scheduled = createScheduledExecution(common);
  orders = createStandingOrders(common);
  holds = createHoldService(common);
});
afterAll(async () => {
  await boss?.stop({ graceful: false, close: true });
  await stack?.stop();
});

/** Each test on days of its own, well ahead of the real date. */
let dayNumber = 0;
function nextTestDay(): CalendarDate {
  dayNumber += 10;
  return addCalendarDays('2027-03-01', dayNumber);
}
const at = (day: CalendarDate, hours: number) => new Date(startOfLondonDay(day).getTime() + hours * HOUR);

const GRACE = { name: 'Grace Hopper', sortCode: '12-34-56', accountNumber: '12345678' };
const MALLORY = { ...GRACE, name: 'Mallory Smith' };
const ALAN = { name: 'Alan Turing', sortCode: '20-30-40', accountNumber: '33334444' };
const CHECK = 'mutation($input: RecipientInput!) { checkPayee(input: $input) { id result } }';
const ADD_PAYEE = 'mutation($input: RecipientInput!) { addPayee(input: $input) { id createdAt } }';
const APPROVE = 'mutation($id: ID!) { approvePayment(paymentId: $id) { id status } }';
const CREATE_ORDER = /* GraphQL */ `
  mutation($input: CreateStandingOrderInput!) {
    createStandingOrder(input: $input) {
      standingOrder { id amount }
      errors { code message field }
    }
  }
`;
type OrderPayload = {
  standingOrder: { id: string; amount: number } | null;
  errors: Array<{ code: string; message: string; field: string[] | null }>;
};

async function check(token: string, input: Record<string, string>) {
  const response = await gql<{ checkPayee: { id: string; result: string } }>(stack.apiUrl, token, CHECK, { input });
  if (!response.data?.checkPayee) throw new Error(`checkPayee failed: ${JSON.stringify(response)}`);
  return response.data.checkPayee;
}

async function addPayee(token: string, input: Record<string, string>) {
  const response = await gql<{ addPayee: { id: string; createdAt: string } }>(stack.apiUrl, token, ADD_PAYEE, { input });
  if (!response.data?.addPayee) throw new Error(`addPayee failed: ${JSON.stringify(response)}`);
  return response.data.addPayee;
}

const orderInput = (who: TestCustomer, overrides: Record<string, unknown>) => ({
  idempotencyKey: `so-${Math.random().toString(36).slice(2)}`,
  fromAccountId: who.accountId,
  amount: 1_000,
  recipient: GRACE,
  reference: 'Rent',
  frequency: 'WEEKLY',
  lastPaymentOn: null,
  ...overrides,
});

async function createOrder(who: TestCustomer, input: Record<string, unknown>): Promise<OrderPayload> {
  const response = await gql<{ createStandingOrder: OrderPayload }>(stack.apiUrl, who.token, CREATE_ORDER, { input });
  if (!response.data?.createStandingOrder) throw new Error(`createStandingOrder failed: ${JSON.stringify(response)}`);
  return response.data.createStandingOrder;
}

const pay = (who: TestCustomer, overrides: Record<string, unknown>) => stack.send(who.token, paymentInput(who.accountId, overrides));
const approve = async (id: string) => {
  const response = await gql(stack.apiUrl, stack.operatorToken, APPROVE, { id });
  expect(response.errors).toBeUndefined();
};
const paymentOf = (id: string) => stack.db.payment.findUniqueOrThrow({ where: { id } });
const payeeOf = (id: string) => stack.db.payee.findUniqueOrThrow({ where: { id } });
const written = async () => ({ ...(await rowCounts(stack.db)), orders: await stack.db.standingOrder.count() });

describe('createStandingOrder and Confirmation of Payee', () => {
  it('refuses, as sendPayment does, an order with no check over PAYEE_CHECK_THRESHOLD, a NO_MATCH check or an unusable one, writing nothing', async () => {
    const day = nextTestDay();
    clock.set(at(day, 10));
    const alice = await stack.newCustomer(100_000);
    const mallory = await stack.newCustomer(0);
    const noMatch = await check(alice.token, MALLORY);
    expect(noMatch.result).toBe('NO_MATCH');
    const malloryCheck = await check(mallory.token, GRACE);
    const before = await written();
    const cases: Array<[Record<string, unknown>, string[]]> = [
      // £9,999.99 a month to a name nobody confirmed.
      [{ amount: 999_999, recipient: MALLORY }, ['payeeCheckId']],
      [{ amount: CHECK_THRESHOLD + 1 }, ['payeeCheckId']],
      [{ amount: 1, recipient: MALLORY, payeeCheckId: noMatch.id }, ['recipient', 'name']],
      [{ amount: 1, payeeCheckId: malloryCheck.id }, ['payeeCheckId']],
      [{ amount: 1, recipient: { ...GRACE, accountNumber: '87654321' }, payeeCheckId: noMatch.id }, ['payeeCheckId']],
    ];
    for (const [overrides, field] of cases) {
      const refused = await createOrder(alice, orderInput(alice, { firstPaymentOn: day, ...overrides }));
      expect(refused, JSON.stringify(overrides)).toEqual({
        standingOrder: null,
        errors: [{ code: 'PAYEE_NOT_CONFIRMED', message: expect.any(String), field }],
      });
    }
    expect(await written()).toEqual(before);
    // And the scheduler has nothing to pay.
    await orders.runDue();
    expect(await written()).toEqual(before);
  });

  it('creates an order at the threshold with no check, above it with a MATCH check, or to a saved payee with none', async () => {
    const day = nextTestDay();
    clock.set(at(day, 10));
    const bob = await stack.newCustomer(100_000);
    const match = await check(bob.token, GRACE);
    await addPayee(bob.token, { ...MALLORY, accountNumber: '11112222' });
    for (const overrides of [
      { amount: CHECK_THRESHOLD },
      { amount: CHECK_THRESHOLD + 1, payeeCheckId: match.id },
      { amount: 999_999, recipient: { ...MALLORY, accountNumber: '11112222' } },
    ]) {
      const created = await createOrder(bob, orderInput(bob, { firstPaymentOn: addCalendarDays(day, 1), ...overrides }));
      expect(created.errors, JSON.stringify(overrides)).toEqual([]);
      expect(created.standingOrder?.amount).toBe(overrides.amount);
    }
  });

  it('answers a replay with its order even after its check has expired, and refuses a new order on that check', async () => {
    const day = nextTestDay();
    clock.set(at(day, 10));
    const carol = await stack.newCustomer(100_000);
    const match = await check(carol.token, GRACE);
    const input = orderInput(carol, { amount: CHECK_THRESHOLD + 1, payeeCheckId: match.id, firstPaymentOn: addCalendarDays(day, 3) });
    const first = await createOrder(carol, input);
    expect(first.errors).toEqual([]);
    clock.set(at(day, 35));
    expect(await createOrder(carol, input)).toEqual(first);
    const other = await createOrder(carol, { ...input, idempotencyKey: 'another-order' });
    expect(other.errors.map((e) => [e.code, e.field])).toEqual([['PAYEE_NOT_CONFIRMED', ['payeeCheckId']]]);
  });
});

describe('the hold rule on every path', () => {
  it('holds a 1p standing-order occurrence to a payee saved a minute ago, and nothing is let through until an operator approves it', async () => {
    const day = nextTestDay();
    clock.set(at(day, 10));
    const dan = await stack.newCustomer(100_000);
    const payee = await addPayee(dan.token, GRACE);
    clock.set(at(day, 10 + 1 / 60));
    const created = await createOrder(dan, orderInput(dan, { amount: 1, firstPaymentOn: day }));
    expect(created.errors).toEqual([]);
    const orderId = created.standingOrder?.id ?? '';
    await orders.runDue();
    const [occurrence] = await stack.db.payment.findMany({ where: { standingOrderId: orderId } });
    if (!occurrence) throw new Error('no occurrence');
    await scheduled.execute(occurrence.id);
    const held = await paymentOf(occurrence.id);
    expect([held.status, held.amount]).toEqual(['HELD', 1n]);
    // Nothing was let through: a payment to the payee while the occurrence waits is held too.
    expect((await payeeOf(payee.id)).letThroughAt).toBeNull();
    expect((await pay(dan, { amount: 1, recipient: GRACE })).payment?.status).toBe('HELD');

    // The operator approves the occurrence: the payee is let through, recorded on it.
    clock.set(at(day, 11));
    await approve(occurrence.id);
    const letThroughAt = (await payeeOf(payee.id)).letThroughAt;
    expect(letThroughAt?.getTime()).toBeGreaterThanOrEqual(at(day, 11).getTime());
    // Within NEW_PAYEE_HOURS still, and not held: a payment now, and a scheduled one on its day.
    expect((await pay(dan, { amount: 1, recipient: GRACE })).payment?.status).toBe('PENDING');
    const tomorrow = addCalendarDays(day, 1);
    const later = await pay(dan, { amount: 2, recipient: GRACE, executeOn: tomorrow });
    expect(later.payment?.status).toBe('SCHEDULED');
    clock.set(at(tomorrow, 8));
    await scheduled.execute(later.payment?.id ?? '');
    expect((await paymentOf(later.payment?.id ?? '')).status).toBe('PENDING');
    expect((await payeeOf(payee.id)).letThroughAt).toEqual(letThroughAt);
  });

  it('holds a scheduled payment to a payee saved less than NEW_PAYEE_HOURS before its day, and one of REVIEW_THRESHOLD to anyone', async () => {
    const day = nextTestDay();
    clock.set(at(day, 20));
    const erin = await stack.newCustomer(200_000);
    const match = await check(erin.token, ALAN);
    expect(match.result).toBe('MATCH');
    const tomorrow = addCalendarDays(day, 1);
    const big = await pay(erin, { amount: REVIEW_THRESHOLD, recipient: ALAN, payeeCheckId: match.id, executeOn: tomorrow });
    const below = await pay(erin, { amount: REVIEW_THRESHOLD - 1, recipient: ALAN, payeeCheckId: match.id, executeOn: tomorrow });
    await addPayee(erin.token, GRACE);
    const toNew = await pay(erin, { amount: 1, recipient: GRACE, executeOn: tomorrow });
    const ids = [big, below, toNew].map((sent) => {
      expect(sent.payment?.status).toBe('SCHEDULED');
      return sent.payment?.id ?? '';
    });
    clock.set(at(tomorrow, 9));
    for (const id of ids) await scheduled.execute(id);
    const statuses = await Promise.all(ids.map(async (id) => (await paymentOf(id)).status));
    expect(statuses).toEqual(['HELD', 'PENDING', 'HELD']);
  });

  it('records the let-through on the payee: the first payment not held records it, and a later refund does not make the payee new again', async () => {
    const day = nextTestDay();
    clock.set(at(day, 10));
    const fay = await stack.newCustomer(100_000);
    const payee = await addPayee(fay.token, GRACE);
    const first = await pay(fay, { amount: 100, recipient: GRACE });
    expect(first.payment?.status).toBe('HELD');
    await approve(first.payment?.id ?? '');
    expect((await payeeOf(payee.id)).letThroughAt).not.toBeNull();
    // The recipient's bank rejects the approved payment: refunded, it is neither PENDING nor COMPLETED.
    await stack.db.$transaction((tx) => refund(tx, first.payment?.id ?? '', 'CANCELLED', 'RECIPIENT_REJECTED'));
    expect((await pay(fay, { amount: 100, recipient: GRACE })).payment?.status).toBe('PENDING');

    // A payee saved more than NEW_PAYEE_HOURS ago: its first payment is not held, and records it.
    const old = await addPayee(fay.token, { ...GRACE, accountNumber: '55556666' });
    clock.set(at(day, 40));
    expect((await payeeOf(old.id)).letThroughAt).toBeNull();
    expect((await pay(fay, { amount: 100, recipient: { ...GRACE, accountNumber: '55556666' } })).payment?.status).toBe('PENDING');
    const recorded = (await payeeOf(old.id)).letThroughAt?.getTime() ?? 0;
    expect(recorded).toBeGreaterThanOrEqual(at(day, 40).getTime());
    expect(recorded).toBeLessThan(at(day, 41).getTime());
  });
});

describe('the review queue', () => {
  it('lists held payments by when they became HELD, keyed by (heldAt, id), in two pages, the second knowing a first came before', async () => {
    const day = nextTestDay();
    clock.set(at(day, 10));
    const gus = await stack.newCustomer(200_000);
    const match = await check(gus.token, GRACE);
    const big = { amount: REVIEW_THRESHOLD, recipient: GRACE, payeeCheckId: match.id };
    // Scheduled first, held last: on its day, two days after the other was held.
    const later = await pay(gus, { ...big, executeOn: addCalendarDays(day, 2) });
    clock.set(at(day, 10.5));
    const now = await pay(gus, big);
    expect([later.payment?.status, now.payment?.status]).toEqual(['SCHEDULED', 'HELD']);
    clock.set(at(addCalendarDays(day, 2), 9));
    await scheduled.execute(later.payment?.id ?? '');

    const expected = await stack.db.payment.findMany({ where: { status: 'HELD' }, orderBy: [{ heldAt: 'asc' }, { id: 'asc' }] });
    expect(expected.length).toBeGreaterThanOrEqual(2);
    type Page = {
      heldPayments: {
        edges: Array<{ cursor: string; node: { id: string } }>;
        pageInfo: { hasNextPage: boolean; hasPreviousPage: boolean; endCursor: string | null };
      };
    };
    const QUERY =
      'query($first: Int, $after: String) { heldPayments(first: $first, after: $after) { edges { cursor node { id } } pageInfo { hasNextPage hasPreviousPage endCursor } } }';
    const first = expected.length - 1;
    const one = await gql<Page>(stack.apiUrl, stack.operatorToken, QUERY, { first });
    const two = await gql<Page>(stack.apiUrl, stack.operatorToken, QUERY, { first, after: one.data?.heldPayments.pageInfo.endCursor });
    const pages = [one.data?.heldPayments, two.data?.heldPayments];
    expect(pages.map((p) => [p?.edges.length, p?.pageInfo.hasNextPage, p?.pageInfo.hasPreviousPage])).toEqual([
      [first, true, false],
      [1, false, true],
    ]);
    const listed = pages.flatMap((p) => p?.edges ?? []);
    expect(listed.map((e) => e.node.id)).toEqual(expected.map((p) => p.id));
    const ids = listed.map((e) => e.node.id);
    expect(ids.indexOf(now.payment?.id ?? '')).toBeLessThan(ids.indexOf(later.payment?.id ?? ''));
    for (const [i, edge] of listed.entries()) {
      expect(JSON.parse(Buffer.from(edge.cursor, 'base64url').toString('utf8'))).toEqual([
        expected[i]?.heldAt?.toISOString(),
        expected[i]?.id,
      ]);
    }
  });
});

describe('hold expiry', () => {
  it('counts HOLD_MAX_HOURS from when a payment became HELD: a large payment scheduled five days ahead is not expired a minute after its day holds it', async () => {
    const day = nextTestDay();
    clock.set(at(day, 10));
    const hal = await stack.newCustomer(100_000);
    const match = await check(hal.token, GRACE);
    const sent = await pay(hal, { amount: REVIEW_THRESHOLD, recipient: GRACE, payeeCheckId: match.id, executeOn: addCalendarDays(day, 5) });
    const id = sent.payment?.id ?? '';
    expect(sent.payment?.status).toBe('SCHEDULED');
    const onItsDay = at(addCalendarDays(day, 5), 0.5);
    clock.set(onItsDay);
    await scheduled.execute(id);
    const held = await paymentOf(id);
    expect(held.status).toBe('HELD');
    const heldAt = held.heldAt?.getTime() ?? 0;
    expect(heldAt).toBeGreaterThanOrEqual(onItsDay.getTime());
    expect(heldAt).toBeLessThan(onItsDay.getTime() + 60_000);

    clock.set(new Date(heldAt + 60_000));
    expect(await holds.expireHolds()).not.toContain(id);
    clock.set(new Date(heldAt + HOLD_HOURS * HOUR - 10_000));
    expect(await holds.expireHolds()).not.toContain(id);
    expect((await paymentOf(id)).status).toBe('HELD');
    clock.set(new Date(heldAt + HOLD_HOURS * HOUR));
    expect(await holds.expireHolds()).toContain(id);
    const expired = await paymentOf(id);
    expect([expired.status, expired.failureReason]).toEqual(['CANCELLED', 'HOLD_EXPIRED']);
    expect((await stack.db.account.findUniqueOrThrow({ where: { id: hal.accountId } })).balance).toBe(100_000n);
  });
});

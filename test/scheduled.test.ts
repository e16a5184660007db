import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { audit, formatAudit } from '../src/audit.ts';
import { addCalendarDays, londonToday, startOfLondonDay } from '../src/calendar.ts';
import { expectNoErrorLogs, gql, paymentInput, rowCounts, type Stack, startStack, testClock } from './helpers.ts';

/**
 * Scheduled payments, with a clock the test moves: "today" is a day the test chooses, and a payment
 * scheduled for the next day becomes due when that day begins in London, a couple of real seconds
 * after the test set the clock to just before midnight. No test waits for a real day.
 */
const clock = testClock();
let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ clock });
});
afterAll(async () => {
  await stack?.stop();
});

/** A day well ahead of the real one, so nothing else (the real date) decides what is due. */
let dayNumber = 0;
function nextTestDay(): string {
  dayNumber += 3;
  return addCalendarDays(londonToday({ now: () => new Date() }), 40 + dayNumber);
}

/** Puts the clock `seconds` before `day` begins in London. */
const justBefore = (day: string, seconds: number) => clock.set(new Date(startOfLondonDay(day).getTime() - seconds * 1000));

const PAYMENT = /* GraphQL */ `
  query($id: ID!) {
    payment(id: $id) {
      status failureReason executeOn
      account { balance ledger(first: 10) { edges { node { kind amount payment { id } } } } }
    }
  }
`;
interface PaymentView {
  payment: {
    status: string;
    failureReason: string | null;
    executeOn: string | null;
    account: { balance: number; ledger: { edges: Array<{ node: { kind: string; amount: number; payment: { id: string } | null } }> } };
  };
}
async function view(token: string, id: string) {
  const response = await gql<PaymentView>(stack.apiUrl, token, PAYMENT, { id });
  if (!response.data?.payment) throw new Error(JSON.stringify(response));
  return response.data.payment;
}
const entriesOf = (p: PaymentView['payment'], id: string) => p.account.ledger.edges.map((e) => e.node).filter((n) => n.payment?.id === id);

const jobState = async (paymentId: string) =>
  (
    await stack.db.$queryRaw<
      { state: string }[]
    >`SELECT state::text FROM pgboss.job WHERE name = 'payment.execute' AND data->>'paymentId' = ${paymentId}`
  ).map((r) => r.state);

describe('a scheduled payment', () => {
  it('is SCHEDULED with no debit until its day, then executes once and settles', async () => {
    const day = nextTestDay();
    justBefore(day, 3);
    const alice = await stack.newCustomer(10_000);
    const input = paymentInput(alice.accountId, { amount: 2_500, executeOn: day });
    const sent = await stack.send(alice.token, input);
    expect(sent.errors).toEqual([]);
    expect(sent.payment?.status).toBe('SCHEDULED');
    const id = sent.payment?.id ?? '';

    const before = await view(alice.token, id);
    expect(before).toMatchObject({ status: 'SCHEDULED', executeOn: day, account: { balance: 10_000 } });
    expect(entriesOf(before, id)).toEqual([]);
    // The same request again (a client retry) is the same payment, and still moves nothing.
    expect((await stack.send(alice.token, input)).payment?.id).toBe(id);

    const done = await vi.waitFor(
      async () => {
        const p = await view(alice.token, id);
        expect(p.status).toBe('COMPLETED');
        return p;
      },
      { timeout: 20_000, interval: 200 },
    );
    expect(done.account.balance).toBe(7_500);
    expect(entriesOf(done, id)).toEqual([{ kind: 'PAYMENT_DEBIT', amount: -2_500, payment: { id } }]);
    expect(await jobState(id)).toEqual(['completed']);

    // After its day, a retry of the same request is still a replay, not "a date in the past".
    clock.set(new Date(startOfLondonDay(addCalendarDays(day, 2)).getTime() + 3600_000));
    const retried = await stack.send(alice.token, input);
    expect(retried).toMatchObject({ errors: [], payment: { id, status: 'COMPLETED' } });
    expect((await view(alice.token, id)).account.balance).toBe(7_500);
    const report = await audit({ prisma: stack.db, provider: { url: stack.emulator.url, apiKey: stack.config.providerApiKey } });
    expect(report.ok, formatAudit(report)).toBe(true);
    expectNoErrorLogs(stack);
  });

  it('fails with INSUFFICIENT_FUNDS on its day when the balance is short, and debits nothing', async () => {
    const day = nextTestDay();
    justBefore(day, 3);
    const bob = await stack.newCustomer(1_000);
    const sent = await stack.send(bob.token, paymentInput(bob.accountId, { amount: 5_000, executeOn: day }));
    expect(sent.payment?.status).toBe('SCHEDULED');
    const id = sent.payment?.id ?? '';
    const failed = await vi.waitFor(
      async () => {
        const p = await view(bob.token, id);
        expect(p.status).toBe('FAILED');
        return p;
      },
      { timeout: 20_000, interval: 200 },
    );
    expect(failed.failureReason).toBe('INSUFFICIENT_FUNDS');
    expect(failed.account.balance).toBe(1_000);
    expect(entriesOf(failed, id)).toEqual([]);
    const events = await stack.db.paymentEvent.findMany({ where: { paymentId: id }, orderBy: { seq: 'asc' } });
    expect(events.map((e) => [e.previousStatus, e.status])).toEqual([
      [null, 'SCHEDULED'],
      ['SCHEDULED', 'FAILED'],
    ]);
    const report = await audit({ prisma: stack.db });
    expect(report.ok, formatAudit(report)).toBe(true);
  });

  it('cancelled before its day moves nothing, and its day comes and goes with nothing happening', async () => {
    const day = nextTestDay();
    justBefore(day, 3);
    const carol = await stack.newCustomer(10_000);
    const sent = await stack.send(carol.token, paymentInput(carol.accountId, { amount: 4_000, executeOn: day }));
    const id = sent.payment?.id ?? '';
    const cancelled = await gql<{
      cancelPayment: { payment: { id: string; status: string; failureReason: string } | null; errors: unknown[] };
    }>(
      stack.apiUrl,
      carol.token,
      'mutation($id: ID!) { cancelPayment(paymentId: $id) { payment { id status failureReason } errors { code message field } } }',
      { id },
    );
    expect(cancelled.data?.cancelPayment).toEqual({
      payment: { id, status: 'CANCELLED', failureReason: 'CANCELLED_BY_CUSTOMER' },
      errors: [],
    });
    // The day begins: the execution job runs and finds nothing to do.
    await vi.waitFor(async () => expect(await jobState(id)).toEqual(['completed']), { timeout: 20_000, interval: 200 });
    const after = await view(carol.token, id);
    expect(after).toMatchObject({ status: 'CANCELLED', account: { balance: 10_000 } });
    expect(entriesOf(after, id)).toEqual([]);
    const report = await audit({ prisma: stack.db, provider: { url: stack.emulator.url, apiKey: stack.config.providerApiKey } });
    expect(report.ok, formatAudit(report)).toBe(true);
  });

  it('is an immediate payment when executeOn is today', async () => {
    const day = nextTestDay();
    clock.set(new Date(startOfLondonDay(day).getTime() + 12 * 3600_000));
    const dan = await stack.newCustomer(10_000);
    const sent = await stack.send(dan.token, paymentInput(dan.accountId, { amount: 1_000, executeOn: day }));
    expect(sent.payment?.status).toBe('PENDING');
    expect((await view(dan.token, sent.payment?.id ?? '')).account.balance).toBe(9_000);
  });

  it('counts executeOn in its idempotency: the same key for another day is IDEMPOTENCY_KEY_REUSED', async () => {
    const day = nextTestDay();
    justBefore(day, 3600);
    const erin = await stack.newCustomer(10_000);
    const input = paymentInput(erin.accountId, { executeOn: addCalendarDays(day, 1) });
    await stack.send(erin.token, input);
    const other = await stack.send(erin.token, { ...input, executeOn: addCalendarDays(day, 2) });
    expect(other).toMatchObject({ payment: null, errors: [{ code: 'IDEMPOTENCY_KEY_REUSED', field: ['idempotencyKey'] }] });
    const immediate = await stack.send(erin.token, { ...input, executeOn: null });
    expect(immediate.errors[0]?.code).toBe('IDEMPOTENCY_KEY_REUSED');
  });
});

describe('scheduled payment input', () => {
  it('refuses bad dates, past dates, dates too far ahead and standing-order keys with INVALID_INPUT naming the field, writing nothing', async () => {
    const day = nextTestDay();
    clock.set(new Date(startOfLondonDay(day).getTime() + 10 * 3600_000));
    const fay = await stack.newCustomer(10_000);
    const cases: Array<[Record<string, unknown>, string[]]> = [
      [{ executeOn: '2027-02-30' }, ['executeOn']],
      [{ executeOn: '2027-13-01' }, ['executeOn']],
      [{ executeOn: '27-01-01' }, ['executeOn']],
      [{ executeOn: 'tomorrow' }, ['executeOn']],
      [{ executeOn: `${addCalendarDays(day, 2)}T10:00:00Z` }, ['executeOn']],
      [{ executeOn: '' }, ['executeOn']],
      [{ executeOn: addCalendarDays(day, -1) }, ['executeOn']],
      [{ executeOn: addCalendarDays(day, 367) }, ['executeOn']],
      [{ idempotencyKey: 'so:00000000-0000-4000-8000-000000000000:2027-01-01' }, ['idempotencyKey']],
    ];
    const executeJobs = async () =>
      Number((await stack.db.$queryRaw<{ n: bigint }[]>`SELECT count(*) AS n FROM pgboss.job WHERE name = 'payment.execute'`)[0]?.n);
    const before = { ...(await rowCounts(stack.db)), executeJobs: await executeJobs() };
    for (const [overrides, field] of cases) {
      const sent = await stack.send(fay.token, paymentInput(fay.accountId, overrides));
      expect(sent, JSON.stringify(overrides)).toMatchObject({ payment: null, errors: [{ code: 'INVALID_INPUT', field }] });
    }
    expect({ ...(await rowCounts(stack.db)), executeJobs: await executeJobs() }).toEqual(before);
  });

  it('refuses a date that is not a string at the GraphQL layer', async () => {
    const gus = await stack.newCustomer(10_000);
    const response = await gql(stack.apiUrl, gus.token, 'mutation($i: SendPaymentInput!) { sendPayment(input: $i) { payment { id } } }', {
      i: paymentInput(gus.accountId, { executeOn: 20270101 }),
    });
    expect(response.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
  });
});

import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { signToken } from '../src/auth.ts';
import { WS_LIMITS } from '../src/graphql/server.ts';
import { SUBSCRIPTION_BUDGET } from '../src/graphql/subscription-budget.ts';
import { complete } from '../src/payments/transitions.ts';
import { paymentInput, type Stack, startStack, TEST_SECRET } from './helpers.ts';
import { ACCOUNT_PAYMENTS_UPDATED, type AccountUpdate, collect, PAYMENT_UPDATED, type PaymentUpdate, wsClient } from './ws-helpers.ts';

// No worker at first: each test decides when settlement happens, so it can watch PENDING first.
let stack: Stack;
const disposers: Array<() => Promise<void> | void> = [];

beforeAll(async () => {
  stack = await startStack({ worker: false });
});
afterEach(async () => {
  for (const d of disposers.splice(0)) await d();
});
afterAll(async () => {
  await stack?.stop();
});

function connect(token: string | null) {
  const ws = wsClient(stack.apiUrl, token);
  disposers.push(() => ws.client.dispose());
  return ws;
}

async function ensureWorker() {
  if (!stack.worker) await stack.startWorker();
}

const statuses = (values: PaymentUpdate[]) => values.map((v) => v.paymentUpdated.status);

describe('paymentUpdated over a real WebSocket', () => {
  it('sends the current state first, then the change to COMPLETED, then completes', async () => {
    const alice = await stack.newCustomer(10_000);
    const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 2_500 }));
    const { client } = connect(alice.token);
    const sub = collect<PaymentUpdate>(client, PAYMENT_UPDATED, { id: sent.payment?.id });
    await sub.until((v) => v.length === 1);
    expect(sub.values[0]?.paymentUpdated).toMatchObject({ status: 'PENDING', account: { balance: 7_500 } });

    await ensureWorker();
    await sub.done;
    expect(statuses(sub.values)).toEqual(['PENDING', 'COMPLETED']);
    expect(sub.errors).toEqual([]);
  });

  it('ends CANCELLED, with the money back, for a recipient the provider rejects', async () => {
    const alice = await stack.newCustomer(10_000);
    const sent = await stack.send(
      alice.token,
      paymentInput(alice.accountId, { amount: 2_500, recipient: { name: 'Nobody', sortCode: '000000', accountNumber: '12345678' } }),
    );
    const { client } = connect(alice.token);
    const sub = collect<PaymentUpdate>(client, PAYMENT_UPDATED, { id: sent.payment?.id });
    await ensureWorker();
    await sub.done;
    expect(statuses(sub.values).at(-1)).toBe('CANCELLED');
    expect(sub.values.at(-1)?.paymentUpdated).toMatchObject({ failureReason: 'RECIPIENT_REJECTED', account: { balance: 10_000 } });
  });

  it('gives a late subscriber the outcome and completes', async () => {
    await ensureWorker();
    const alice = await stack.newCustomer(10_000);
    const sent = await stack.send(alice.token, paymentInput(alice.accountId));
    const early = collect<PaymentUpdate>(connect(alice.token).client, PAYMENT_UPDATED, { id: sent.payment?.id });
    await early.done;
    const late = collect<PaymentUpdate>(connect(alice.token).client, PAYMENT_UPDATED, { id: sent.payment?.id });
    await late.done;
    expect(statuses(late.values)).toEqual(['COMPLETED']);
  });

  it("refuses another customer's payment as if it did not exist", async () => {
    const alice = await stack.newCustomer(10_000);
    const mallory = await stack.newCustomer(0);
    const sent = await stack.send(alice.token, paymentInput(alice.accountId));
    const stolen = collect<PaymentUpdate>(connect(mallory.token).client, PAYMENT_UPDATED, { id: sent.payment?.id });
    const missing = collect<PaymentUpdate>(connect(mallory.token).client, PAYMENT_UPDATED, { id: '00000000-0000-4000-8000-000000000000' });
    await Promise.all([stolen.done, missing.done]);
    expect(stolen.values).toEqual([]);
    expect(stolen.errors).toEqual([expect.objectContaining({ message: 'No such payment' })]);
    expect(missing.errors).toEqual(stolen.errors);
    const account = collect<AccountUpdate>(connect(mallory.token).client, ACCOUNT_PAYMENTS_UPDATED, { id: alice.accountId });
    await account.done;
    expect(account.errors).toEqual([expect.objectContaining({ message: 'No such account' })]);
  });
});

describe('waking the event feed', () => {
  it('polls at once after a commit only while this process has a live subscription', async () => {
    const wake = vi.spyOn(stack.api.events, 'wake');
    try {
      const alice = await stack.newCustomer(10_000);
      expect(stack.api.events.size()).toBe(0);
      await stack.send(alice.token, paymentInput(alice.accountId, { amount: 100 }));
      expect(wake).not.toHaveBeenCalled();

      const { client } = connect(alice.token);
      const sub = collect<AccountUpdate>(client, ACCOUNT_PAYMENTS_UPDATED, { id: alice.accountId });
      await vi.waitFor(() => expect(stack.api.events.size()).toBeGreaterThan(0));
      const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 200 }));
      expect(wake).toHaveBeenCalled();
      await sub.until((v) => v.some((u) => u.accountPaymentsUpdated.id === sent.payment?.id));
    } finally {
      wake.mockRestore();
    }
  });
});

describe('connection authentication', () => {
  it('closes with 4403 for a bad token', async () => {
    const forged = await signToken({ role: 'operator', operatorId: 'mallory' }, 'a-different-secret-of-32-bytes-or-more', 3600);
    expect((await connect(forged).closed).code).toBe(4403);
  });

  it('closes with 4403 without a token', async () => {
    expect((await connect(null).closed).code).toBe(4403);
  });

  it('ends the connection when the token expires while connected', async () => {
    const alice = await stack.newCustomer(0);
    const shortLived = await signToken({ role: 'customer', customerId: alice.customerId }, TEST_SECRET, 2);
    const { client, closed } = connect(shortLived);
    const sub = collect<AccountUpdate>(client, ACCOUNT_PAYMENTS_UPDATED, { id: alice.accountId });
    expect(await closed).toEqual({ code: 4403, reason: 'Token expired' });
    await sub.done;
  });
});

describe('limits per connection', () => {
  it('refuses a subscription past the per-connection limit and keeps the others', async () => {
    const alice = await stack.newCustomer(0);
    const { client } = connect(alice.token);
    const subs = Array.from({ length: WS_LIMITS.subscriptionsPerConnection }, () =>
      collect<AccountUpdate>(client, ACCOUNT_PAYMENTS_UPDATED, { id: alice.accountId }),
    );
    await vi.waitFor(() => expect(stack.api.events.size()).toBeGreaterThanOrEqual(WS_LIMITS.subscriptionsPerConnection));
    const extra = collect<AccountUpdate>(client, ACCOUNT_PAYMENTS_UPDATED, { id: alice.accountId });
    await extra.done;
    expect(extra.errors).toEqual([expect.objectContaining({ message: expect.stringMatching(/At most \d+ subscriptions/) })]);
    expect(subs.every((s) => s.errors.length === 0)).toBe(true);
    for (const s of subs) s.unsubscribe();
    await vi.waitFor(() => expect(stack.api.events.size()).toBe(0));
  });
});

describe('limits per customer', () => {
  it('caps live subscriptions across connections and the rate of new ones, and gives slots back when they end', async () => {
    const alice = await stack.newCustomer(0);
    const viewer = { role: 'customer', customerId: alice.customerId } as const;
    const [one, two, three] = [connect(alice.token).client, connect(alice.token).client, connect(alice.token).client] as const;
    const subscribe = (i: number) => collect<AccountUpdate>(i % 2 ? one : two, ACCOUNT_PAYMENTS_UPDATED, { id: alice.accountId });
    const held = Array.from({ length: SUBSCRIPTION_BUDGET.maxOpen }, (_, i) => subscribe(i));
    await vi.waitFor(() => expect(stack.api.budget.held(viewer)).toBe(SUBSCRIPTION_BUDGET.maxOpen));

    const extra = collect<AccountUpdate>(three, ACCOUNT_PAYMENTS_UPDATED, { id: alice.accountId });
    await extra.done;
    expect(extra.errors).toEqual([
      expect.objectContaining({ message: `At most ${SUBSCRIPTION_BUDGET.maxOpen} live subscriptions per customer` }),
    ]);

    for (const sub of held) sub.unsubscribe();
    await vi.waitFor(() => expect(stack.api.budget.held(viewer)).toBe(0));

    // 101 subscribes so far this minute; the rest of the minute's allowance, then a refusal.
    const more = Array.from({ length: SUBSCRIPTION_BUDGET.perMinute - SUBSCRIPTION_BUDGET.maxOpen - 1 }, () =>
      collect<AccountUpdate>(three, ACCOUNT_PAYMENTS_UPDATED, { id: alice.accountId }),
    );
    await vi.waitFor(() => expect(stack.api.budget.held(viewer)).toBe(more.length));
    const tooFast = collect<AccountUpdate>(three, ACCOUNT_PAYMENTS_UPDATED, { id: alice.accountId });
    await tooFast.done;
    expect(tooFast.errors).toEqual([expect.objectContaining({ message: expect.stringMatching(/^Too many new subscriptions/) })]);
    for (const sub of more) sub.unsubscribe();
    await vi.waitFor(() => expect(stack.api.budget.held(viewer)).toBe(0));
  });
});

describe('accountPaymentsUpdated', () => {
  it("sends every change to any of the account's payments", async () => {
    await ensureWorker();
    const alice = await stack.newCustomer(10_000);
    const listenersBefore = stack.api.events.size();
    const sub = collect<AccountUpdate>(connect(alice.token).client, ACCOUNT_PAYMENTS_UPDATED, { id: alice.accountId });
    // The subscription is live once the server has it registered; a query on the same
    // connection would not tell us, so wait for the hub to hold a listener for this account.
    await vi.waitFor(() => expect(stack.api.events.size()).toBeGreaterThan(listenersBefore));
    const one = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 100 }));
    const two = await stack.send(
      alice.token,
      paymentInput(alice.accountId, { amount: 200, recipient: { name: 'Nobody', sortCode: '000000', accountNumber: '12345678' } }),
    );
    const seen = await sub.until((v) => {
      const last = new Map(v.map((u) => [u.accountPaymentsUpdated.id, u.accountPaymentsUpdated.status]));
      return last.get(one.payment?.id ?? '') === 'COMPLETED' && last.get(two.payment?.id ?? '') === 'CANCELLED';
    });
    const forOne = seen.filter((u) => u.accountPaymentsUpdated.id === one.payment?.id).map((u) => u.accountPaymentsUpdated.status);
    // Each payment is sent as it is when its event is read: PENDING first, unless settlement was
    // quicker than the read, and never the same state twice.
    expect(forOne).toEqual(forOne[0] === 'PENDING' ? ['PENDING', 'COMPLETED'] : ['COMPLETED']);
    sub.unsubscribe();
  });
});

describe("when the event feed's connection dies", () => {
  it('reconnects and still delivers the terminal status that happened while it was down', async () => {
    const alice = await stack.newCustomer(10_000);
    const sent = await stack.send(alice.token, paymentInput(alice.accountId));
    const paymentId = sent.payment?.id ?? '';
    const sub = collect<PaymentUpdate>(connect(alice.token).client, PAYMENT_UPDATED, { id: paymentId });
    await sub.until((v) => v.length === 1);

    // The change commits in the same statement batch that kills the feed's connection.
    const killed = await stack.db.$queryRaw<{ killed: boolean }[]>`
      SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity
      WHERE application_name = 'payments-events' AND datname = current_database()`;
    expect(killed).toEqual([{ killed: true }]);
    await complete(stack.db, paymentId, 'completed by the test');

    await sub.done;
    expect(statuses(sub.values)).toEqual(['PENDING', 'COMPLETED']);
  });
});

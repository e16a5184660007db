import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startWorkerProcess } from '../src/app/worker.ts';
import { createMetrics } from '../src/ops/metrics.ts';
import { createSettlement } from '../src/payments/settlement.ts';
import { createProviderClient } from '../src/provider/client.ts';
import { freePort } from '../tools/free-port.ts';
import { expectNoErrorLogs, gql, paymentInput, type Stack, startStack } from './helpers.ts';

const PAYMENT_QUERY = /* GraphQL */ `
  query($id: ID!) {
    payment(id: $id) {
      status failureReason
      attempts { number outcome detail }
      account { balance ledger(first: 10) { edges { node { kind amount balanceAfter payment { id } } } } }
    }
  }
`;

interface PaymentView {
  payment: {
    status: string;
    failureReason: string | null;
    attempts: Array<{ number: number; outcome: string; detail: string | null }>;
    account: {
      balance: number;
      ledger: { edges: Array<{ node: { kind: string; amount: number; balanceAfter: number; payment: { id: string } | null } }> };
    };
  } | null;
}

let stack: Stack;

beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.stop();
});

async function viewPayment(token: string, id: string) {
  const response = await gql<PaymentView>(stack.apiUrl, token, PAYMENT_QUERY, { id });
  if (!response.data?.payment) throw new Error(`payment not visible: ${JSON.stringify(response)}`);
  return response.data.payment;
}

async function waitForStatus(token: string, id: string, status: string) {
  return vi.waitFor(
    async () => {
      const payment = await viewPayment(token, id);
      expect(payment.status).toBe(status);
      return payment;
    },
    { timeout: 30_000, interval: 100 },
  );
}

/** What operators see of each attempt, oldest first. */
async function internalDetails(paymentId: string) {
  const rows = await stack.db.paymentAttempt.findMany({ where: { paymentId }, orderBy: { id: 'asc' } });
  return rows.map((a) => a.internalDetail);
}

async function providerRecord(paymentId: string) {
  const response = await fetch(`${stack.emulator.url}/admin/payments`, { headers: { 'x-api-key': stack.config.providerApiKey } });
  const all = (await response.json()) as Array<{
    idempotencyKey: string;
    createRequests: number;
    amount: number;
    sender: { name: string };
  }>;
  return all.filter((p) => p.idempotencyKey === paymentId);
}

describe('settling a payment with the provider', () => {
  it('completes the payment, and the balance and the ledger agree', async () => {
    const alice = await stack.newCustomer(10_000);
    const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 2_500 }));
    expect(sent.errors).toEqual([]);
    expect(sent.payment?.status).toBe('PENDING');
    const paymentId = sent.payment?.id ?? '';

    const done = await waitForStatus(alice.token, paymentId, 'COMPLETED');
    expect(done.account.balance).toBe(7_500);
    const ledger = done.account.ledger.edges.map((e) => e.node);
    expect(ledger.map((e) => [e.kind, e.amount, e.balanceAfter])).toEqual([
      ['PAYMENT_DEBIT', -2_500, 7_500],
      ['DEPOSIT', 10_000, 10_000],
    ]);
    expect(ledger.reduce((sum, e) => sum + e.amount, 0)).toBe(done.account.balance);
    expect(done.attempts.map((a) => a.outcome)).toEqual(['COMPLETED']);
    expect(await providerRecord(paymentId)).toMatchObject([{ amount: 2_500, createRequests: 1 }]);
    expectNoErrorLogs(stack);
  });

  it("sends the account holder's name as the payer, not the account's nickname", async () => {
    const alice = await stack.newCustomer(10_000);
    const [customer, account] = await Promise.all([
      stack.db.customer.findUniqueOrThrow({ where: { id: alice.customerId } }),
      stack.db.account.findUniqueOrThrow({ where: { id: alice.accountId } }),
    ]);
    expect(customer.name).not.toBe(account.name);
    const sent = await stack.send(alice.token, paymentInput(alice.accountId));
    await waitForStatus(alice.token, sent.payment?.id ?? '', 'COMPLETED');
    expect((await providerRecord(sent.payment?.id ?? ''))[0]?.sender).toEqual({
      name: customer.name,
      sortCode: account.sortCode,
      accountNumber: account.accountNumber,
    });
  });

  it('completes without a second POST when the provider already accepted the payment before a crash', async () => {
    const alice = await stack.newCustomer(10_000);
    // The provider records the payment, then fails to answer: what the worker sees when it
    // crashes (or the network drops) right after the provider accepted.
    stack.emulator.setFaults({ acceptThenFailRate: 1 });
    try {
      const sent = await stack.send(alice.token, paymentInput(alice.accountId));
      const done = await waitForStatus(alice.token, sent.payment?.id ?? '', 'COMPLETED');
      expect(done.attempts.map((a) => a.outcome)).toEqual(['RETRY', 'COMPLETED']);
      expect((await internalDetails(sent.payment?.id ?? ''))[1]).toBe('the provider already had the payment');
      expect(await providerRecord(sent.payment?.id ?? '')).toMatchObject([{ createRequests: 1 }]);
      expect(done.account.balance).toBe(9_000);
    } finally {
      stack.emulator.setFaults({ acceptThenFailRate: 0 });
    }
  });

  it('cancels the payment and refunds the balance when the provider rejects it', async () => {
    const alice = await stack.newCustomer(10_000);
    const sent = await stack.send(
      alice.token,
      paymentInput(alice.accountId, { amount: 4_000, recipient: { name: 'Nobody', sortCode: '00-00-00', accountNumber: '12345678' } }),
    );
    const done = await waitForStatus(alice.token, sent.payment?.id ?? '', 'CANCELLED');
    expect(done.failureReason).toBe('RECIPIENT_REJECTED');
    expect(done.account.balance).toBe(10_000);
    expect(done.account.ledger.edges.map((e) => [e.node.kind, e.node.amount, e.node.balanceAfter])).toEqual([
      ['PAYMENT_REFUND', 4_000, 10_000],
      ['PAYMENT_DEBIT', -4_000, 6_000],
      ['DEPOSIT', 10_000, 10_000],
    ]);
    expect(done.account.ledger.edges[0]?.node.payment?.id).toBe(sent.payment?.id);
    expect(await providerRecord(sent.payment?.id ?? '')).toEqual([]);
  });

  it('retries after a provider 500 and completes once', async () => {
    const alice = await stack.newCustomer(10_000);
    stack.emulator.setFaults({ failNextCreates: 1 });
    const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 1_234 }));
    const done = await waitForStatus(alice.token, sent.payment?.id ?? '', 'COMPLETED');
    expect(done.attempts.map((a) => a.outcome)).toEqual(['RETRY', 'COMPLETED']);
    expect((await internalDetails(sent.payment?.id ?? ''))[0]).toMatch(/HTTP 500/);
    expect(done.account.balance).toBe(10_000 - 1_234);
    expect(done.account.ledger.edges.filter((e) => e.node.kind === 'PAYMENT_DEBIT')).toHaveLength(1);
    expect(await providerRecord(sent.payment?.id ?? '')).toMatchObject([{ createRequests: 1 }]);
  });
});

describe('a settlement job that runs twice', () => {
  // What happens when a job's lease expires while its first worker is still running, or when
  // the queue delivers it again: several settlements of one payment at once. These run on a
  // stack with no worker of its own, so only the test settles the payment.

  it('completes the payment once', async () => {
    const settleStack = await startStack({ worker: false });
    try {
      const carol = await settleStack.newCustomer(10_000);
      const sent = await settleStack.send(carol.token, paymentInput(carol.accountId, { amount: 3_000 }));
      const paymentId = sent.payment?.id ?? '';
      const provider = createProviderClient({
        baseUrl: settleStack.emulator.url,
        apiKey: settleStack.config.providerApiKey,
        timeoutMs: 2_000,
      });
      const settlement = createSettlement({ prisma: settleStack.db, provider, logger: settleStack.logger, metrics: createMetrics() });

      await Promise.all([settlement.settle(paymentId), settlement.settle(paymentId), settlement.settle(paymentId)]);
      await settlement.settle(paymentId);

      const payment = await settleStack.db.payment.findUniqueOrThrow({
        where: { id: paymentId },
        include: { attempts: true, ledgerEntries: true },
      });
      expect(payment.status).toBe('COMPLETED');
      expect(payment.attempts.filter((a) => a.outcome === 'COMPLETED')).toHaveLength(1);
      expect(payment.ledgerEntries.map((e) => e.kind)).toEqual(['PAYMENT_DEBIT']);
      const account = await settleStack.db.account.findUniqueOrThrow({ where: { id: carol.accountId } });
      expect(account.balance).toBe(7_000n);
    } finally {
      await settleStack.stop();
    }
  });

  it('refunds a rejected payment at most once', async () => {
    const settleStack = await startStack({ worker: false });
    try {
      const carol = await settleStack.newCustomer(10_000);
      const sent = await settleStack.send(
        carol.token,
        paymentInput(carol.accountId, { amount: 3_000, recipient: { name: 'Nobody', sortCode: '000000', accountNumber: '12345678' } }),
      );
      const paymentId = sent.payment?.id ?? '';
      const provider = createProviderClient({
        baseUrl: settleStack.emulator.url,
        apiKey: settleStack.config.providerApiKey,
        timeoutMs: 2_000,
      });
      const settlement = createSettlement({ prisma: settleStack.db, provider, logger: settleStack.logger, metrics: createMetrics() });

      await Promise.all([settlement.settle(paymentId), settlement.settle(paymentId), settlement.reconcile(paymentId)]);
      await settlement.settle(paymentId);

      const payment = await settleStack.db.payment.findUniqueOrThrow({ where: { id: paymentId }, include: { ledgerEntries: true } });
      // Whichever reaches the provider first decides how it ends: a settlement's POST is rejected
      // (CANCELLED), or the reconciliation finds nothing there and voids it first (FAILED). Either
      // way it is refunded exactly once.
      expect(['CANCELLED', 'FAILED']).toContain(payment.status);
      expect(payment.ledgerEntries.map((e) => e.kind).sort()).toEqual(['PAYMENT_DEBIT', 'PAYMENT_REFUND']);
      const account = await settleStack.db.account.findUniqueOrThrow({ where: { id: carol.accountId } });
      expect(account.balance).toBe(10_000n);
    } finally {
      await settleStack.stop();
    }
  });
});

describe('what customers are told about their payment', () => {
  const ATTEMPTS = 'query($id: ID!) { payment(id: $id) { status failureReason attempts { outcome detail internalDetail } } }';
  type Attempts = {
    payment: {
      status: string;
      failureReason: string | null;
      attempts: Array<{ outcome: string; detail: string | null; internalDetail: string | null }>;
    } | null;
  };

  it("never shows a customer a network error's internal address, and shows it to an operator", async () => {
    const own = await startStack({ worker: false, env: { PAYMENT_RETRY_LIMIT: '0' } });
    // A provider address where nothing listens: every call is a network error naming it.
    const unreachable = `http://127.0.0.1:${await freePort()}`;
    const worker = await startWorkerProcess({
      config: own.config,
      databaseUrl: own.databaseUrl,
      providerUrl: unreachable,
      logger: own.logger,
      pollingIntervalSeconds: 0.5,
    });
    try {
      const dora = await own.newCustomer(10_000);
      const sent = await own.send(dora.token, paymentInput(dora.accountId));
      const id = sent.payment?.id ?? '';
      const seen = await vi.waitFor(
        async () => {
          const response = await gql<Attempts>(own.apiUrl, own.operatorToken, ATTEMPTS, { id });
          expect(response.data?.payment?.attempts.length).toBeGreaterThanOrEqual(2);
          return response.data?.payment;
        },
        { timeout: 30_000, interval: 100 },
      );
      expect(seen?.attempts[0]?.internalDetail).toContain(unreachable.replace('http://', ''));

      const customerView = await gql<Attempts>(own.apiUrl, dora.token, ATTEMPTS, { id });
      const text = JSON.stringify(customerView);
      expect(text).not.toContain('127.0.0.1');
      expect(text).not.toMatch(/ECONNREFUSED|network error|http:/i);
      for (const attempt of customerView.data?.payment?.attempts ?? []) {
        expect(attempt).toEqual({
          outcome: 'RETRY',
          detail: 'The payment provider could not be reached; the payment will be tried again.',
          internalDetail: null,
        });
      }
    } finally {
      await worker.stop();
      await own.stop();
    }
  });

  it('gives a rejected payment a fixed failure reason and fixed attempt texts, the provider message only to operators', async () => {
    const alice = await stack.newCustomer(10_000);
    const sent = await stack.send(
      alice.token,
      paymentInput(alice.accountId, { recipient: { name: 'Nobody', sortCode: '00-00-00', accountNumber: '12345678' } }),
    );
    const id = sent.payment?.id ?? '';
    await waitForStatus(alice.token, id, 'CANCELLED');
    const customerView = await gql<Attempts>(stack.apiUrl, alice.token, ATTEMPTS, { id });
    expect(customerView.data?.payment).toEqual({
      status: 'CANCELLED',
      failureReason: 'RECIPIENT_REJECTED',
      attempts: [
        {
          outcome: 'CANCELLED',
          detail: "The recipient's bank rejected the payment; the money is back in the account.",
          internalDetail: null,
        },
      ],
    });
    const operatorView = await gql<Attempts>(stack.apiUrl, stack.operatorToken, ATTEMPTS, { id });
    expect(operatorView.data?.payment?.attempts[0]?.internalDetail).toMatch(/RECIPIENT_REJECTED: the recipient bank rejected the payment/);
  });
});

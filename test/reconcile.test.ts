import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { expectNoErrorLogs, paymentInput, type Stack, startStack } from './helpers.ts';

// No retries: the first transient failure spends the budget, so each payment goes straight to
// the reconciliation queue (pg-boss's dead letter queue for settlement).
let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ env: { PAYMENT_RETRY_LIMIT: '0' } });
});
afterAll(async () => {
  await stack?.stop();
});

async function settled(paymentId: string) {
  return vi.waitFor(
    async () => {
      const payment = await stack.db.payment.findUniqueOrThrow({
        where: { id: paymentId },
        include: { attempts: { orderBy: { id: 'asc' } }, ledgerEntries: { orderBy: { id: 'asc' } }, account: true },
      });
      expect(payment.status).not.toBe('PENDING');
      return payment;
    },
    { timeout: 30_000, interval: 100 },
  );
}

describe('when the retries run out', () => {
  it('voids the payment at the provider, then fails it and refunds the balance', async () => {
    const alice = await stack.newCustomer(10_000);
    stack.emulator.setFaults({ failNextCreates: 1 });
    const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 2_000 }));
    const payment = await settled(sent.payment?.id ?? '');

    expect(payment.status).toBe('FAILED');
    expect(payment.failureReason).toBe('NOT_SENT_PROVIDER_UNAVAILABLE');
    expect(payment.attempts.at(-1)?.internalDetail).toBe('retries exhausted; voided at the provider');
    expect(payment.account.balance).toBe(10_000n);
    expect(payment.ledgerEntries.map((e) => [e.kind, e.amount])).toEqual([
      ['PAYMENT_DEBIT', -2_000n],
      ['PAYMENT_REFUND', 2_000n],
    ]);
    expect(payment.attempts.map((a) => a.outcome)).toEqual(['RETRY', 'FAILED']);
    // The provider can never execute it now.
    const atProvider = await fetch(`${stack.emulator.url}/v1/payments/${payment.id}`, {
      headers: { 'x-api-key': stack.config.providerApiKey },
    });
    expect(atProvider.status).toBe(410);
    expectNoErrorLogs(stack);
  });

  it('completes the payment when the provider turns out to have accepted it', async () => {
    const alice = await stack.newCustomer(10_000);
    stack.emulator.setFaults({ acceptThenFailRate: 1 });
    try {
      const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 2_000 }));
      const payment = await settled(sent.payment?.id ?? '');
      expect(payment.status).toBe('COMPLETED');
      expect(payment.attempts.map((a) => a.outcome)).toEqual(['RETRY', 'COMPLETED']);
      expect(payment.attempts[1]?.internalDetail).toMatch(/reconciled/);
      expect(payment.account.balance).toBe(8_000n);
    } finally {
      stack.emulator.setFaults({ acceptThenFailRate: 0 });
    }
  });

  it('keeps trying, visibly, while the provider cannot be reached, and never refunds blind', async () => {
    const alice = await stack.newCustomer(10_000);
    stack.emulator.setFaults({ errorRate: 1 });
    let paymentId = '';
    try {
      const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 2_000 }));
      paymentId = sent.payment?.id ?? '';
      // The settlement attempt, then at least one reconciliation attempt, each recorded.
      await vi.waitFor(
        async () => {
          const attempts = await stack.db.paymentAttempt.findMany({ where: { paymentId }, orderBy: { id: 'asc' } });
          expect(attempts.map((a) => a.internalDetail)).toEqual(
            expect.arrayContaining([expect.stringMatching(/^sending to the provider/), expect.stringMatching(/^reconciling/)]),
          );
        },
        { timeout: 30_000, interval: 100 },
      );
      const pending = await stack.db.payment.findUniqueOrThrow({ where: { id: paymentId }, include: { account: true } });
      expect(pending.status).toBe('PENDING');
      expect(pending.account.balance).toBe(8_000n);
    } finally {
      stack.emulator.setFaults({ errorRate: 0 });
    }
  });
});

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { audit } from '../src/audit.ts';
import { signToken } from '../src/auth.ts';
import { createMetrics } from '../src/ops/metrics.ts';
import { createProviderEvents } from '../src/payments/provider-events.ts';
import { createProviderClient } from '../src/provider/client.ts';
import { emulatorCall, expectNoErrorLogs, gql, paymentInput, type Stack, startStack, TEST_SECRET } from './helpers.ts';

/**
 * The provider's events (a return to one account, a credit to another of the same customer) are
 * applied while that customer pays from the second account: no deadlock, everything applied, the
 * books consistent. Each event is applied in a transaction of its own, so the poller never holds one
 * account's row while it waits for another's.
 */

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.stop();
});

describe('provider events applied while the same customer pays', () => {
  it('returns to account A and credits to account B race payments from B without a deadlock', async () => {
    const customer = await stack.newCustomer(1_000_000);
    const opened = await gql<{ openAccount: { id: string; sortCode: string; accountNumber: string } }>(
      stack.apiUrl,
      stack.operatorToken,
      'mutation($id: ID!) { openAccount(input: { customerId: $id, name: "Savings" }) { id sortCode accountNumber } }',
      { id: customer.customerId },
    );
    const b = opened.data?.openAccount;
    if (!b) throw new Error(`openAccount failed: ${JSON.stringify(opened)}`);
    await gql(
      stack.apiUrl,
      stack.operatorToken,
      'mutation($id: ID!) { depositFunds(input: { accountId: $id, amount: 1000000, idempotencyKey: "b-initial" }) { balance } }',
      { id: b.id },
    );
    const token = await signToken({ role: 'customer', customerId: customer.customerId }, TEST_SECRET, 3600);

    // Payments from A, settled: the ones the provider will return.
    const fromA: string[] = [];
    for (let i = 0; i < 6; i++)
      fromA.push((await stack.send(token, paymentInput(customer.accountId, { amount: 1_000 }))).payment?.id ?? '');
    await vi.waitFor(async () => expect(await stack.db.payment.count({ where: { id: { in: fromA }, status: 'COMPLETED' } })).toBe(6), {
      timeout: 30_000,
      interval: 100,
    });

    const metrics = createMetrics();
    const events = createProviderEvents({
      prisma: stack.db,
      jobs: { returnCredit: () => Promise.reject(new Error('every credit here is for an account of ours')) },
      provider: createProviderClient({ baseUrl: stack.emulator.url, apiKey: stack.config.providerApiKey, timeoutMs: 5_000, metrics }),
      logger: stack.logger,
      metrics,
    });

    const creditIds: string[] = [];
    const fromB: Array<Promise<Awaited<ReturnType<Stack['send']>>>> = [];
    for (const [round, paymentId] of fromA.entries()) {
      await emulatorCall(stack, 'POST', `/admin/payments/${paymentId}/return`, { returnCode: 'AC01' });
      const credit = await emulatorCall(stack, 'POST', '/admin/credits', {
        amount: 2_500,
        recipient: { sortCode: b.sortCode, accountNumber: b.accountNumber },
        sender: { name: 'Acme Supplies', sortCode: '401234', accountNumber: '87654321' },
        reference: `Round ${round}`,
      });
      creditIds.push((credit.json as { id: string }).id);
      // A burst from B at the same moment as the poll (the worker's own poller runs too).
      const burst = Array.from({ length: 10 }, () => stack.send(token, paymentInput(b.id, { amount: 100 })));
      fromB.push(...burst);
      await Promise.all([events.poll(), ...burst]);
    }

    const sent = await Promise.all(fromB);
    expect(sent.every((s) => s.errors.length === 0 && s.payment !== null)).toBe(true);
    await vi.waitFor(
      async () => {
        expect(await stack.db.payment.count({ where: { id: { in: fromA }, status: 'RETURNED' } })).toBe(6);
        expect(await stack.db.providerCredit.count({ where: { id: { in: creditIds }, outcome: 'CREDITED' } })).toBe(6);
      },
      { timeout: 30_000, interval: 100 },
    );
    await vi.waitFor(async () => expect(await stack.db.payment.count({ where: { status: 'PENDING' } })).toBe(0), {
      timeout: 30_000,
      interval: 100,
    });
    const report = await audit({ prisma: stack.db, provider: { url: stack.emulator.url, apiKey: stack.config.providerApiKey } });
    expect(report.checks.filter((c) => c.violations.length > 0)).toEqual([]);
    // No deadlock, nor anything else, was logged by the API, the worker or the poller.
    expect(stack.errorLogs.filter((l) => /deadlock/i.test(l))).toEqual([]);
    expectNoErrorLogs(stack);
  });
});

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { BANK_SORT_CODE } from '../src/accounts/accounts.ts';
import { audit, formatAudit } from '../src/audit.ts';
import { emulatorCall, expectNoErrorLogs, gql, paymentInput, type Stack, startStack } from './helpers.ts';

/** Returns and inbound credits from the provider's event feed, polled every second here. */
let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.stop();
});

const auditOk = async () => {
  const report = await audit({ prisma: stack.db, provider: { url: stack.emulator.url, apiKey: stack.config.providerApiKey } });
  expect(report.ok, formatAudit(report)).toBe(true);
};
const status = async (id: string) => (await stack.db.payment.findUniqueOrThrow({ where: { id } })).status;
const feedCursor = () => stack.db.providerEventCursor.findUniqueOrThrow({ where: { id: true } });

/**
 * Every event of the feed is delivered again: the cursor goes back to the start and the poller reads
 * at least up to where it was (further when an event it had not saved its place past yet comes in
 * meanwhile; the emulator's cursors are fixed-width, so they compare as strings).
 */
async function redeliverAll() {
  const before = await feedCursor();
  await stack.db.$executeRaw`UPDATE provider_event_cursor SET cursor = NULL`;
  await vi.waitFor(
    async () => {
      const now = await feedCursor();
      expect(now.cursor !== null && now.cursor >= (before.cursor ?? '')).toBe(true);
      expect(now.eventsApplied).toBeGreaterThan(before.eventsApplied);
    },
    { timeout: 20_000, interval: 100 },
  );
}

async function completedPayment(amount: number) {
  const alice = await stack.newCustomer(10_000);
  const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount }));
  const id = sent.payment?.id ?? '';
  await vi.waitFor(async () => expect(await status(id)).toBe('COMPLETED'), { timeout: 20_000, interval: 100 });
  return { alice, id };
}

describe('a payment returned by the provider', () => {
  it('is RETURNED with its code and the money back once, even when the event is delivered twice', async () => {
    const { alice, id } = await completedPayment(2_500);
    expect((await emulatorCall(stack, 'POST', `/admin/payments/${id}/return`, { returnCode: 'AC01' })).status).toBe(200);
    await vi.waitFor(async () => expect(await status(id)).toBe('RETURNED'), { timeout: 20_000, interval: 100 });

    // Delivered again: the provider returns it a second time, and the feed is read again from its start.
    await emulatorCall(stack, 'POST', `/admin/payments/${id}/return`, { returnCode: 'AC01' });
    await redeliverAll();

    const view = await gql<{
      payment: {
        status: string;
        returnCode: string;
        account: { balance: number; ledger: { edges: Array<{ node: { kind: string; amount: number } }> } };
      };
    }>(
      stack.apiUrl,
      alice.token,
      'query($id: ID!) { payment(id: $id) { status returnCode account { balance ledger(first: 10) { edges { node { kind amount } } } } } }',
      { id },
    );
    expect(view.data?.payment).toMatchObject({ status: 'RETURNED', returnCode: 'AC01', account: { balance: 10_000 } });
    expect(view.data?.payment.account.ledger.edges.map((e) => [e.node.kind, e.node.amount])).toEqual([
      ['PAYMENT_RETURN', 2_500],
      ['PAYMENT_DEBIT', -2_500],
      ['DEPOSIT', 10_000],
    ]);
    const events = await stack.db.paymentEvent.findMany({ where: { paymentId: id }, orderBy: { seq: 'asc' } });
    expect(events.map((e) => e.status)).toEqual(['PENDING', 'COMPLETED', 'RETURNED']);
    await auditOk();
    expectNoErrorLogs(stack);
  });

  it('is returned for a share of payments with the returnRate fault', async () => {
    stack.emulator.setFaults({ returnRate: 1, returnDelayMs: 50 });
    try {
      const { id } = await completedPayment(700);
      await vi.waitFor(async () => expect(await status(id)).toBe('RETURNED'), { timeout: 20_000, interval: 100 });
      expect((await stack.db.payment.findUniqueOrThrow({ where: { id } })).returnCode).toBe('AC04');
    } finally {
      stack.emulator.setFaults({ returnRate: 0 });
    }
    await auditOk();
  });
});

describe('money coming in', () => {
  const credit = (sortCode: string, accountNumber: string, amount: number, reference = 'Invoice 7') => ({
    amount,
    recipient: { sortCode, accountNumber },
    sender: { name: 'Acme Supplies', sortCode: '401234', accountNumber: '87654321' },
    reference,
  });

  it('is credited once to the account it names, with the sender and reference, even when delivered twice', async () => {
    const bob = await stack.newCustomer(1_000);
    const account = await stack.db.account.findUniqueOrThrow({ where: { id: bob.accountId } });
    const posted = await emulatorCall(stack, 'POST', '/admin/credits', credit(account.sortCode, account.accountNumber, 12_345));
    const creditId = (posted.json as { id: string }).id;
    await vi.waitFor(
      async () => expect((await stack.db.providerCredit.findUnique({ where: { id: creditId } }))?.outcome).toBe('CREDITED'),
      { timeout: 20_000, interval: 100 },
    );

    await redeliverAll();

    const view = await gql<{
      account: {
        balance: number;
        ledger: {
          edges: Array<{ node: { kind: string; amount: number; counterparty: unknown; reference: string | null; payment: unknown } }>;
        };
      };
    }>(
      stack.apiUrl,
      bob.token,
      'query($a: ID!) { account(id: $a) { balance ledger(first: 5) { edges { node { kind amount counterparty { name sortCode accountNumber } reference payment { id } } } } } }',
      { a: bob.accountId },
    );
    expect(view.data?.account.balance).toBe(13_345);
    expect(view.data?.account.ledger.edges.map((e) => e.node)).toEqual([
      {
        kind: 'INBOUND_CREDIT',
        amount: 12_345,
        counterparty: { name: 'Acme Supplies', sortCode: '401234', accountNumber: '87654321' },
        reference: 'Invoice 7',
        payment: null,
      },
      { kind: 'DEPOSIT', amount: 1_000, counterparty: null, reference: null, payment: null },
    ]);
    await auditOk();
  });

  it('is sent back to the provider when it names no account of ours, and never credited', async () => {
    const before = await stack.db.ledgerEntry.count();
    const posted = await emulatorCall(stack, 'POST', '/admin/credits', credit(BANK_SORT_CODE, '00000001', 5_000));
    const creditId = (posted.json as { id: string }).id;
    await vi.waitFor(
      async () => expect((await stack.db.providerCredit.findUnique({ where: { id: creditId } }))?.outcome).toBe('RETURNED'),
      { timeout: 20_000, interval: 100 },
    );
    const theirs = (await emulatorCall(stack, 'GET', '/admin/credits')).json as Array<{ id: string; returned: { reason: string } | null }>;
    expect(theirs.find((c) => c.id === creditId)?.returned?.reason).toBe('UNKNOWN_ACCOUNT');
    expect(await stack.db.ledgerEntry.count()).toBe(before);
    await auditOk();
  });

  it("shows a payment's ledger entries with its recipient and reference", async () => {
    const { alice, id } = await completedPayment(300);
    const view = await gql<{
      payment: { account: { ledger: { edges: Array<{ node: { kind: string; counterparty: { name: string }; reference: string } }> } } };
    }>(
      stack.apiUrl,
      alice.token,
      'query($id: ID!) { payment(id: $id) { account { ledger(first: 1) { edges { node { kind counterparty { name } reference } } } } } }',
      { id },
    );
    expect(view.data?.payment.account.ledger.edges[0]?.node).toEqual({
      kind: 'PAYMENT_DEBIT',
      counterparty: { name: 'Grace Hopper' },
      reference: 'Invoice 42',
    });
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectNoErrorLogs, gql, paymentInput, rowCounts, SEND_PAYMENT, type SendPaymentData, type Stack, startStack } from './helpers.ts';

// No worker: these tests are about taking payments, and settlement would move statuses under them.
let stack: Stack;
/** Every SQL statement the API has sent (its transactions' BEGIN is not reported). */
const statements: string[] = [];
beforeAll(async () => {
  stack = await startStack({ worker: false, onApiQuery: (sql) => statements.push(sql) });
});
afterAll(async () => {
  await stack?.stop();
});

async function balanceOf(accountId: string): Promise<bigint> {
  return (await stack.db.account.findUniqueOrThrow({ where: { id: accountId } })).balance;
}

describe('sendPayment', () => {
  it('debits the account, writes the payment, its ledger entry and its settlement job in one go', async () => {
    const alice = await stack.newCustomer(5_000);
    const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 1_500 }));
    expect(sent.errors).toEqual([]);
    expect(sent.payment).toMatchObject({
      status: 'PENDING',
      amount: 1_500,
      recipient: { name: 'Grace Hopper', sortCode: '123456', accountNumber: '12345678' },
      reference: 'Invoice 42',
    });
    const id = sent.payment?.id ?? '';
    expect(await balanceOf(alice.accountId)).toBe(3_500n);
    const ledger = await stack.db.ledgerEntry.findMany({ where: { paymentId: id } });
    expect(ledger.map((e) => [e.kind, e.amount, e.balanceAfter])).toEqual([['PAYMENT_DEBIT', -1_500n, 3_500n]]);
    const jobs = await stack.db.$queryRaw<{ id: string; data: unknown }[]>`
      SELECT id::text, data FROM pgboss.job WHERE name = 'payment.settle' AND id = ${id}::uuid`;
    expect(jobs).toEqual([{ id, data: { paymentId: id } }]);
  });

  it('takes a payment in one statement and its COMMIT: no read before it, the job inside it', async () => {
    const alice = await stack.newCustomer(5_000);
    statements.length = 0;
    const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 1_000 }));
    expect(sent.payment?.status).toBe('PENDING');
    expect(statements).toEqual([expect.stringMatching(/^WITH payee AS \(.*INSERT INTO payments .*INSERT INTO pgboss\./s), 'COMMIT']);
  });

  it('refuses a payment larger than the balance and writes nothing', async () => {
    const alice = await stack.newCustomer(1_000);
    const before = await rowCounts(stack.db);
    const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 1_001 }));
    expect(sent).toEqual({
      payment: null,
      errors: [{ code: 'INSUFFICIENT_FUNDS', message: expect.any(String), field: ['amount'] }],
    });
    expect(await rowCounts(stack.db)).toEqual(before);
    expect(await balanceOf(alice.accountId)).toBe(1_000n);
  });

  it("answers with the account's balance after the debit, and none for a replay, which debits nothing", async () => {
    const alice = await stack.newCustomer(5_000);
    const query =
      'mutation($input: SendPaymentInput!) { sendPayment(input: $input) { payment { id } replayed balanceAfter errors { code } } }';
    const input = paymentInput(alice.accountId, { amount: 1_200 });
    type Answer = { sendPayment: { payment: { id: string } | null; replayed: boolean; balanceAfter: number | null; errors: unknown[] } };
    const first = await gql<Answer>(stack.apiUrl, alice.token, query, { input });
    expect(first.data?.sendPayment).toMatchObject({ replayed: false, balanceAfter: 3_800, errors: [] });
    const again = await gql<Answer>(stack.apiUrl, alice.token, query, { input });
    expect(again.data?.sendPayment).toMatchObject({ replayed: true, balanceAfter: null, errors: [] });
    expect(await balanceOf(alice.accountId)).toBe(3_800n);
  });

  it('lets the balance reach exactly zero', async () => {
    const alice = await stack.newCustomer(1_000);
    const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 1_000 }));
    expect(sent.errors).toEqual([]);
    expect(await balanceOf(alice.accountId)).toBe(0n);
  });
});

describe('idempotency', () => {
  it('returns the same payment for the same key and parameters, and debits once', async () => {
    const alice = await stack.newCustomer(5_000);
    const input = paymentInput(alice.accountId, { amount: 700 });
    const first = await stack.send(alice.token, input);
    const again = await stack.send(alice.token, input);
    // The same request with the sort code written the other way is still the same payment.
    const dashed = await stack.send(alice.token, { ...input, recipient: { ...input.recipient, sortCode: '123456' } });
    expect(again).toEqual(first);
    expect(dashed).toEqual(first);
    expect(await balanceOf(alice.accountId)).toBe(4_300n);
    expect(await stack.db.payment.count({ where: { accountId: alice.accountId } })).toBe(1);
  });

  it('returns the payment for a replayed key even when the balance could no longer cover it', async () => {
    const alice = await stack.newCustomer(1_000);
    const input = paymentInput(alice.accountId, { amount: 1_000 });
    const first = await stack.send(alice.token, input);
    expect(await stack.send(alice.token, input)).toEqual(first);
  });

  it('refuses the same key with other parameters', async () => {
    const alice = await stack.newCustomer(5_000);
    const input = paymentInput(alice.accountId, { amount: 700 });
    await stack.send(alice.token, input);
    const before = await rowCounts(stack.db);
    const reused = await stack.send(alice.token, { ...input, amount: 701 });
    expect(reused).toEqual({
      payment: null,
      errors: [{ code: 'IDEMPOTENCY_KEY_REUSED', message: expect.any(String), field: ['idempotencyKey'] }],
    });
    expect(await rowCounts(stack.db)).toEqual(before);
  });

  it('lets two accounts use the same key independently', async () => {
    const alice = await stack.newCustomer(5_000);
    const bob = await stack.newCustomer(5_000);
    const a = await stack.send(alice.token, paymentInput(alice.accountId, { idempotencyKey: 'shared-key' }));
    const b = await stack.send(bob.token, paymentInput(bob.accountId, { idempotencyKey: 'shared-key' }));
    expect(a.payment?.id).toBeDefined();
    expect(b.payment?.id).toBeDefined();
    expect(a.payment?.id).not.toBe(b.payment?.id);
  });

  it('makes exactly one payment out of 20 concurrent duplicates', async () => {
    const alice = await stack.newCustomer(5_000);
    const input = paymentInput(alice.accountId, { amount: 100 });
    const results = await Promise.all(Array.from({ length: 20 }, () => stack.send(alice.token, input)));
    const ids = new Set(results.map((r) => r.payment?.id));
    expect(results.every((r) => r.errors.length === 0)).toBe(true);
    expect(ids.size).toBe(1);
    expect(await stack.db.payment.count({ where: { accountId: alice.accountId } })).toBe(1);
    expect(await stack.db.ledgerEntry.count({ where: { accountId: alice.accountId, kind: 'PAYMENT_DEBIT' } })).toBe(1);
    expect(await balanceOf(alice.accountId)).toBe(4_900n);
  });
});

describe('concurrency on one account', () => {
  it('lets exactly 100 of 200 concurrent payments through when the balance covers 100, never going negative', async () => {
    const alice = await stack.newCustomer(100 * 250);
    const results = await Promise.all(
      Array.from({ length: 200 }, () =>
        gql<SendPaymentData>(stack.apiUrl, alice.token, SEND_PAYMENT, { input: paymentInput(alice.accountId, { amount: 250 }) }),
      ),
    );
    // Every request got a business answer: no deadlock, no timeout, no internal error.
    expect(results.filter((r) => r.errors !== undefined)).toEqual([]);
    const outcomes = results.map((r) => r.data?.sendPayment.errors[0]?.code ?? 'OK');
    expect(outcomes.filter((o) => o === 'OK')).toHaveLength(100);
    expect(outcomes.filter((o) => o === 'INSUFFICIENT_FUNDS')).toHaveLength(100);
    expect(await balanceOf(alice.accountId)).toBe(0n);
    // Every change of the balance wrote its value to the ledger: none was ever below zero.
    const ledger = await stack.db.ledgerEntry.findMany({ where: { accountId: alice.accountId }, orderBy: { id: 'asc' } });
    expect(ledger).toHaveLength(101);
    expect(ledger.every((e) => e.balanceAfter >= 0n)).toBe(true);
    expect(ledger.reduce((sum, e) => sum + e.amount, 0n)).toBe(0n);
    expect(await stack.db.payment.count({ where: { accountId: alice.accountId } })).toBe(100);
    expectNoErrorLogs(stack);
  });
});

describe('the database itself', () => {
  it('refuses a negative balance even from a statement that skips the guard', async () => {
    const alice = await stack.newCustomer(100);
    await expect(stack.db.$executeRaw`UPDATE accounts SET balance = balance - 101 WHERE id = ${alice.accountId}::uuid`).rejects.toThrow(
      /accounts_balance_non_negative/,
    );
  });

  it('refuses to rewrite or delete ledger entries', async () => {
    const alice = await stack.newCustomer(100);
    await expect(stack.db.$executeRaw`UPDATE ledger_entries SET amount = 1 WHERE account_id = ${alice.accountId}::uuid`).rejects.toThrow(
      /append-only/,
    );
    await expect(stack.db.$executeRaw`DELETE FROM ledger_entries WHERE account_id = ${alice.accountId}::uuid`).rejects.toThrow(
      /append-only/,
    );
  });

  it('refuses to truncate the ledger or the operator actions, and keeps every row', async () => {
    await stack.newCustomer(100);
    const entries = await stack.db.ledgerEntry.count();
    const actions = await stack.db.operatorAction.count();
    await expect(stack.db.$executeRawUnsafe('TRUNCATE ledger_entries CASCADE')).rejects.toThrow(/append-only \(TRUNCATE refused\)/);
    await expect(stack.db.$executeRawUnsafe('TRUNCATE operator_actions')).rejects.toThrow(/append-only \(TRUNCATE refused\)/);
    expect(await stack.db.ledgerEntry.count()).toBe(entries);
    expect(await stack.db.operatorAction.count()).toBe(actions);
  });
});

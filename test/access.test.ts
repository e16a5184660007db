import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signToken } from '../src/auth.ts';
import { gql, paymentInput, rowCounts, type Stack, startStack, TEST_SECRET, type TestCustomer } from './helpers.ts';

let stack: Stack;
let alice: TestCustomer;
let bob: TestCustomer;
let bobPaymentId: string;

beforeAll(async () => {
  stack = await startStack({ worker: false });
  alice = await stack.newCustomer(10_000);
  bob = await stack.newCustomer(10_000);
  bobPaymentId = (await stack.send(bob.token, paymentInput(bob.accountId))).payment?.id ?? '';
});
afterAll(async () => {
  await stack?.stop();
});

const code = (r: { errors?: Array<{ extensions?: { code?: string } }> }) => r.errors?.[0]?.extensions?.code;

describe("another customer's money", () => {
  it("answers ACCOUNT_NOT_FOUND when paying from someone else's account, and writes nothing", async () => {
    const before = await rowCounts(stack.db);
    const sent = await stack.send(alice.token, paymentInput(bob.accountId));
    expect(sent).toEqual({ payment: null, errors: [{ code: 'ACCOUNT_NOT_FOUND', message: 'No such account', field: ['fromAccountId'] }] });
    expect(await rowCounts(stack.db)).toEqual(before);
  });

  it('answers the same for an account that does not exist', async () => {
    const sent = await stack.send(alice.token, paymentInput('00000000-0000-4000-8000-000000000000'));
    expect(sent.errors[0]?.code).toBe('ACCOUNT_NOT_FOUND');
  });

  it("does not reveal another customer's payment through a replayed idempotency key", async () => {
    const bobs = await stack.db.payment.findUniqueOrThrow({ where: { id: bobPaymentId } });
    const sent = await stack.send(alice.token, paymentInput(bob.accountId, { idempotencyKey: bobs.idempotencyKey }));
    expect(sent).toMatchObject({ payment: null, errors: [{ code: 'ACCOUNT_NOT_FOUND' }] });
  });

  it("returns null for someone else's account and payment", async () => {
    const response = await gql(stack.apiUrl, alice.token, 'query($a: ID!, $p: ID!) { account(id: $a) { id } payment(id: $p) { id } }', {
      a: bob.accountId,
      p: bobPaymentId,
    });
    expect(response).toEqual({ data: { account: null, payment: null } });
  });

  it('shows a customer only their own accounts', async () => {
    const response = await gql<{ me: { accounts: Array<{ id: string }> } }>(stack.apiUrl, alice.token, '{ me { accounts { id } } }');
    expect(response.data?.me.accounts.map((a) => a.id)).toEqual([alice.accountId]);
  });

  it('lets the owner see their account and payment', async () => {
    const response = await gql(stack.apiUrl, bob.token, 'query($a: ID!, $p: ID!) { account(id: $a) { id } payment(id: $p) { id } }', {
      a: bob.accountId,
      p: bobPaymentId,
    });
    expect(response).toEqual({ data: { account: { id: bob.accountId }, payment: { id: bobPaymentId } } });
  });
});

describe('authentication', () => {
  const operations: Array<[string, string, Record<string, unknown>?]> = [
    ['me', '{ me { id } }'],
    ['account', 'query($id: ID!) { account(id: $id) { id } }', { id: '00000000-0000-4000-8000-000000000000' }],
    ['payment', 'query($id: ID!) { payment(id: $id) { id } }', { id: '00000000-0000-4000-8000-000000000000' }],
    [
      'sendPayment',
      'mutation($i: SendPaymentInput!) { sendPayment(input: $i) { errors { code } } }',
      { i: paymentInput('00000000-0000-4000-8000-000000000000') },
    ],
    ['createCustomer', 'mutation { createCustomer(input: { name: "Mallory" }) { id } }'],
    ['openAccount', 'mutation { openAccount(input: { customerId: "00000000-0000-4000-8000-000000000000", name: "X" }) { id } }'],
    [
      'depositFunds',
      'mutation { depositFunds(input: { accountId: "00000000-0000-4000-8000-000000000000", amount: 1, idempotencyKey: "k" }) { id } }',
    ],
    ['checkPayee', 'mutation { checkPayee(input: { name: "Grace Hopper", sortCode: "123456", accountNumber: "12345678" }) { id } }'],
    ['addPayee', 'mutation { addPayee(input: { name: "Grace Hopper", sortCode: "123456", accountNumber: "12345678" }) { id } }'],
    ['removePayee', 'mutation { removePayee(id: "00000000-0000-4000-8000-000000000000") }'],
    ['approvePayment', 'mutation { approvePayment(paymentId: "00000000-0000-4000-8000-000000000000") { id } }'],
    ['rejectPayment', 'mutation { rejectPayment(paymentId: "00000000-0000-4000-8000-000000000000", reason: "x") { id } }'],
    ['heldPayments', '{ heldPayments { edges { node { id } } } }'],
  ];

  const badTokens: Array<[string, () => Promise<string | null>]> = [
    ['no token', async () => null],
    [
      'an expired token',
      () =>
        new SignJWT({ role: 'operator' })
          .setProtectedHeader({ alg: 'HS256' })
          .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
          .sign(new TextEncoder().encode(TEST_SECRET)),
    ],
    [
      'a token signed with another secret',
      () => signToken({ role: 'operator', operatorId: 'mallory' }, 'another-secret-that-is-also-32-bytes-long', 3600),
    ],
    [
      'a token without an expiry',
      () => new SignJWT({ role: 'operator' }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(TEST_SECRET)),
    ],
    [
      'an unsigned token (alg none)',
      async () => {
        const header = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url');
        const body = Buffer.from(JSON.stringify({ role: 'operator', exp: Math.floor(Date.now() / 1000) + 600 })).toString('base64url');
        return `${header}.${body}.`;
      },
    ],
    ['a customer token whose subject is not an id', () => signToken({ role: 'customer', customerId: 'root' }, TEST_SECRET, 3600)],
    [
      'an operator token without a subject',
      () =>
        new SignJWT({ role: 'operator' })
          .setProtectedHeader({ alg: 'HS256' })
          .setExpirationTime(Math.floor(Date.now() / 1000) + 600)
          .sign(new TextEncoder().encode(TEST_SECRET)),
    ],
    [
      'a token that lives longer than AUTH_MAX_TOKEN_HOURS',
      () => signToken({ role: 'operator', operatorId: 'mallory' }, TEST_SECRET, 30 * 24 * 3600),
    ],
  ];

  const matrix = badTokens.flatMap(([tokenName, token]) =>
    operations.map(([op, query, vars]) => [op, tokenName, token, query, vars] as const),
  );

  it.each(matrix)('refuses %s with %s, writing nothing', async (_op, _tokenName, token, query, variables) => {
    const before = await rowCounts(stack.db);
    const customers = await stack.db.customer.count();
    const response = await gql(stack.apiUrl, await token(), query, variables);
    expect(code(response)).toBe('UNAUTHENTICATED');
    expect(await rowCounts(stack.db)).toEqual(before);
    expect(await stack.db.customer.count()).toBe(customers);
  });
});

describe('operator mutations', () => {
  const mutations: Array<[string, string]> = [
    ['createCustomer', 'mutation { createCustomer(input: { name: "Mallory" }) { id } }'],
    ['openAccount', 'mutation($c: ID!) { openAccount(input: { customerId: $c, name: "Stash" }) { id } }'],
    [
      'depositFunds',
      'mutation($a: ID!) { depositFunds(input: { accountId: $a, amount: 100000, idempotencyKey: "free-money" }) { balance } }',
    ],
    ['approvePayment', 'mutation($p: ID!) { approvePayment(paymentId: $p) { id } }'],
    ['rejectPayment', 'mutation($p: ID!) { rejectPayment(paymentId: $p, reason: "mine") { id } }'],
  ];

  it.each(mutations)('refuses %s from a customer with FORBIDDEN, writing nothing', async (_name, query) => {
    const before = await rowCounts(stack.db);
    const customers = await stack.db.customer.count();
    const response = await gql(stack.apiUrl, alice.token, query, { c: alice.customerId, a: alice.accountId, p: bobPaymentId });
    expect(code(response)).toBe('FORBIDDEN');
    expect(await rowCounts(stack.db)).toEqual(before);
    expect(await stack.db.customer.count()).toBe(customers);
  });

  it('refuses sendPayment from an operator: operators do not move customers’ money', async () => {
    const response = await gql(
      stack.apiUrl,
      stack.operatorToken,
      'mutation($i: SendPaymentInput!) { sendPayment(input: $i) { errors { code } } }',
      {
        i: paymentInput(alice.accountId),
      },
    );
    expect(code(response)).toBe('FORBIDDEN');
  });

  it.each([
    ['checkPayee', 'mutation { checkPayee(input: { name: "Grace Hopper", sortCode: "123456", accountNumber: "12345678" }) { id } }'],
    ['addPayee', 'mutation { addPayee(input: { name: "Grace Hopper", sortCode: "123456", accountNumber: "12345678" }) { id } }'],
    ['removePayee', 'mutation { removePayee(id: "00000000-0000-4000-8000-000000000000") }'],
  ])('refuses %s from an operator: payees are the customer’s', async (_name, query) => {
    const checks = await stack.db.payeeCheck.count();
    expect(code(await gql(stack.apiUrl, stack.operatorToken, query))).toBe('FORBIDDEN');
    expect(await stack.db.payeeCheck.count()).toBe(checks);
  });

  it('answers me with null for an operator', async () => {
    expect(await gql(stack.apiUrl, stack.operatorToken, '{ me { id } }')).toEqual({ data: { me: null } });
  });
});

describe('depositFunds', () => {
  const DEPOSIT =
    'mutation($a: ID!, $amount: Money!, $key: String!) { depositFunds(input: { accountId: $a, amount: $amount, idempotencyKey: $key }) { balance } }';

  it('credits once per idempotency key', async () => {
    const carol = await stack.newCustomer(0);
    const vars = { a: carol.accountId, amount: 5_000, key: 'payday-2026-11' };
    const results = await Promise.all(Array.from({ length: 5 }, () => gql(stack.apiUrl, stack.operatorToken, DEPOSIT, vars)));
    expect(results.map((r) => r.data)).toEqual(Array.from({ length: 5 }, () => ({ depositFunds: { balance: 5_000 } })));
    expect(await stack.db.ledgerEntry.count({ where: { accountId: carol.accountId } })).toBe(1);
  });

  it('refuses the same key with another amount', async () => {
    const carol = await stack.newCustomer(1_000);
    const response = await gql(stack.apiUrl, stack.operatorToken, DEPOSIT, { a: carol.accountId, amount: 999, key: 'initial' });
    expect(response.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', userErrorCode: 'IDEMPOTENCY_KEY_REUSED' });
  });

  it('refuses an account that does not exist', async () => {
    const response = await gql(stack.apiUrl, stack.operatorToken, DEPOSIT, {
      a: '00000000-0000-4000-8000-000000000000',
      amount: 1,
      key: 'k',
    });
    expect(response.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', userErrorCode: 'ACCOUNT_NOT_FOUND' });
  });
});

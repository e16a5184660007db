import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gql, paymentInput, rowCounts, SEND_PAYMENT, type SendPaymentData, type Stack, startStack, type TestCustomer } from './helpers.ts';

let stack: Stack;
let alice: TestCustomer;

beforeAll(async () => {
  stack = await startStack({ worker: false });
  alice = await stack.newCustomer(1_000_000);
});
afterAll(async () => {
  await stack?.stop();
});

const recipient = (r: Record<string, unknown>) => ({
  recipient: { name: 'Grace Hopper', sortCode: '123456', accountNumber: '12345678', ...r },
});

// [what is wrong, overrides of a valid input, the field the error must name]
const invalid: Array<[string, Record<string, unknown>, string[]]> = [
  ['a zero amount', { amount: 0 }, ['amount']],
  ['a negative amount', { amount: -500 }, ['amount']],
  ['an amount over the limit', { amount: 100_000_001 }, ['amount']],
  ['a fractional amount', { amount: 12.5 }, ['amount']],
  ['an amount as a string', { amount: '1000' }, ['amount']],
  ['an amount beyond 2^53', { amount: 2 ** 60 }, ['amount']],
  ['a null amount', { amount: null }, ['amount']],
  ['a 5-digit sort code', recipient({ sortCode: '12345' }), ['recipient', 'sortCode']],
  ['a 7-digit sort code', recipient({ sortCode: '1234567' }), ['recipient', 'sortCode']],
  ['a sort code with letters', recipient({ sortCode: '12ab56' }), ['recipient', 'sortCode']],
  ['a sort code with dashes in the wrong places', recipient({ sortCode: '1-23-456' }), ['recipient', 'sortCode']],
  ['an empty sort code', recipient({ sortCode: '' }), ['recipient', 'sortCode']],
  ['a 7-digit account number', recipient({ accountNumber: '1234567' }), ['recipient', 'accountNumber']],
  ['a 9-digit account number', recipient({ accountNumber: '123456789' }), ['recipient', 'accountNumber']],
  ['an account number with a letter', recipient({ accountNumber: '1234567a' }), ['recipient', 'accountNumber']],
  ['an empty recipient name', recipient({ name: '' }), ['recipient', 'name']],
  ['a blank recipient name', recipient({ name: '   ' }), ['recipient', 'name']],
  ['a recipient name with a newline', recipient({ name: 'Grace\nHopper' }), ['recipient', 'name']],
  ['a recipient name with a NUL', recipient({ name: 'Grace\u0000' }), ['recipient', 'name']],
  ['a recipient name with a bidi override', recipient({ name: 'Grace\u202EHopper' }), ['recipient', 'name']],
  ['a recipient name over 70 characters', recipient({ name: 'G'.repeat(71) }), ['recipient', 'name']],
  ['a missing recipient name', { recipient: { sortCode: '123456', accountNumber: '12345678' } }, ['recipient', 'name']],
  ['a reference over 18 characters', { reference: 'R'.repeat(19) }, ['reference']],
  ['a reference with a newline', { reference: 'line\nbreak' }, ['reference']],
  ['a reference with an emoji', { reference: 'thanks 😀' }, ['reference']],
  ['an empty idempotency key', { idempotencyKey: '' }, ['idempotencyKey']],
  ['an idempotency key with a space', { idempotencyKey: 'has space' }, ['idempotencyKey']],
  ['an idempotency key with a slash', { idempotencyKey: 'a/b' }, ['idempotencyKey']],
  ['an idempotency key over 255 characters', { idempotencyKey: 'k'.repeat(256) }, ['idempotencyKey']],
  ['a non-ASCII idempotency key', { idempotencyKey: 'clé' }, ['idempotencyKey']],
  ['an account id that is not an id', { fromAccountId: 'not-an-id' }, ['fromAccountId']],
  ['an empty account id', { fromAccountId: '' }, ['fromAccountId']],
  ['an account id carrying SQL', { fromAccountId: "' OR 1=1 --" }, ['fromAccountId']],
  ['an amount as a boolean', { amount: true }, ['amount']],
  ['an amount as an object', { amount: { pence: 100 } }, ['amount']],
  ['an amount as a list', { amount: [100] }, ['amount']],
  ['an amount in exponent notation beyond the limit', { amount: 1e9 }, ['amount']],
  ['a sort code with spaces', recipient({ sortCode: '12 34 56' }), ['recipient', 'sortCode']],
  ['a sort code with full-width digits', recipient({ sortCode: '１２３４５６' }), ['recipient', 'sortCode']],
  ['an account number with a space inside', recipient({ accountNumber: '1234 5678' }), ['recipient', 'accountNumber']],
  ['an account number with a minus sign', recipient({ accountNumber: '-1234567' }), ['recipient', 'accountNumber']],
  ['an account number as a number', recipient({ accountNumber: 12345678 }), ['recipient', 'accountNumber']],
  ['a recipient name with a tab', recipient({ name: 'Grace\tHopper' }), ['recipient', 'name']],
  ['a recipient name with a zero-width joiner', recipient({ name: 'Gra\u200Dce' }), ['recipient', 'name']],
  ['a recipient name with a line separator', recipient({ name: 'Grace\u2028Hopper' }), ['recipient', 'name']],
  ['a recipient name with an escape sequence', recipient({ name: 'Grace\u001b[31m' }), ['recipient', 'name']],
  ['a null recipient name', recipient({ name: null }), ['recipient', 'name']],
  ['a null recipient', { recipient: null }, ['recipient']],
  ['a recipient given as text', { recipient: 'Grace Hopper 123456 12345678' }, ['recipient']],
  ['a reference with a tab', { reference: 'a\tb' }, ['reference']],
  ['a reference with markup', { reference: '<script>' }, ['reference']],
  ['a reference with a zero-width space', { reference: 'pay\u200Bment' }, ['reference']],
  ['a reference as a number', { reference: 42 }, ['reference']],
  ['an idempotency key with a hash', { idempotencyKey: 'key#1' }, ['idempotencyKey']],
  ['an idempotency key with an at sign', { idempotencyKey: 'me@bank' }, ['idempotencyKey']],
  ['an idempotency key with a newline', { idempotencyKey: 'key\n1' }, ['idempotencyKey']],
  ['an idempotency key with a unicode dash', { idempotencyKey: 'key\u20111' }, ['idempotencyKey']],
  ['an idempotency key as a number', { idempotencyKey: 12345 }, ['idempotencyKey']],
  ['a null idempotency key', { idempotencyKey: null }, ['idempotencyKey']],
];

/** GraphQL names a bad field by its path ("input.amount"), or its parent's path and its name. */
function namesField(message: string, field: string[]): boolean {
  const parent = ['input', ...field.slice(0, -1)].join('.');
  return message.includes(`"input.${field.join('.')}"`) || (message.includes(`"${parent}"`) && message.includes(`"${field.at(-1)}"`));
}

describe('sendPayment input validation', () => {
  it('checks at least 50 kinds of malformed input', () => {
    expect(invalid.length).toBeGreaterThanOrEqual(50);
  });

  it.each(invalid)('refuses %s, naming the field, and writes nothing', async (_what, overrides, field) => {
    const before = await rowCounts(stack.db);
    const response = await gql<SendPaymentData>(stack.apiUrl, alice.token, SEND_PAYMENT, {
      input: paymentInput(alice.accountId, overrides),
    });
    if (response.errors) {
      // Rejected by the GraphQL type system before any resolver ran.
      expect(response.errors[0]?.extensions?.code).toBe('BAD_USER_INPUT');
      expect(namesField(response.errors[0]?.message ?? '', field), response.errors[0]?.message).toBe(true);
    } else {
      expect(response.data?.sendPayment).toEqual({
        payment: null,
        errors: [{ code: 'INVALID_INPUT', message: expect.stringContaining(field.join('.')), field }],
      });
    }
    expect(await rowCounts(stack.db)).toEqual(before);
  });

  it('refuses a fractional amount written inline in the query', async () => {
    const response = await gql(
      stack.apiUrl,
      alice.token,
      `mutation { sendPayment(input: { idempotencyKey: "k", fromAccountId: "${alice.accountId}", amount: 1.5,
        recipient: { name: "G", sortCode: "123456", accountNumber: "12345678" } }) { errors { code } } }`,
    );
    expect(response.errors?.[0]?.extensions?.code).toBe('GRAPHQL_VALIDATION_FAILED');
    expect(response.errors?.[0]?.message).toMatch(/Money/);
  });

  it('accepts the edges of what is valid', async () => {
    const sent = await stack.send(
      alice.token,
      paymentInput(alice.accountId, {
        amount: 1,
        idempotencyKey: `A-z_0.9:${'k'.repeat(247)}`,
        reference: "R/1?:(a).,'+&-     ",
        recipient: { name: ' Zoë O’Brien-Smith ', sortCode: '00-11-22', accountNumber: '00000000' },
      }),
    );
    expect(sent.errors).toEqual([]);
    expect(sent.payment).toMatchObject({
      amount: 1,
      reference: "R/1?:(a).,'+&-",
      recipient: { name: 'Zoë O’Brien-Smith', sortCode: '001122', accountNumber: '00000000' },
    });
  });
});

describe('operator input validation', () => {
  it.each([
    ['an empty customer name', 'mutation { createCustomer(input: { name: "" }) { id } }', ['name']],
    ['a customer id that is not an id', 'mutation { openAccount(input: { customerId: "x", name: "Main" }) { id } }', ['customerId']],
    [
      'a customer that does not exist',
      'mutation { openAccount(input: { customerId: "00000000-0000-4000-8000-000000000000", name: "Main" }) { id } }',
      ['customerId'],
    ],
    ['a zero deposit', 'mutation($a: ID!) { depositFunds(input: { accountId: $a, amount: 0, idempotencyKey: "z" }) { id } }', ['amount']],
    [
      'a deposit key with spaces',
      'mutation($a: ID!) { depositFunds(input: { accountId: $a, amount: 10, idempotencyKey: "a b" }) { id } }',
      ['idempotencyKey'],
    ],
  ])('refuses %s', async (_what, query, field) => {
    const before = await rowCounts(stack.db);
    const customers = await stack.db.customer.count();
    const response = await gql(stack.apiUrl, stack.operatorToken, query, { a: alice.accountId });
    expect(response.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', userErrorCode: 'INVALID_INPUT', field });
    expect(await rowCounts(stack.db)).toEqual(before);
    expect(await stack.db.customer.count()).toBe(customers);
  });
});

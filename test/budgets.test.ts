import { parse } from 'graphql';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { COST_LIMITS, queryCost } from '../src/graphql/cost.ts';
import { buildSchema } from '../src/graphql/server.ts';
import { expectNoErrorLogs, gql, paymentInput, type Stack, startStack, type TestCustomer } from './helpers.ts';

/**
 * Budgets per customer on the mutations that write or call out (RATE_LIMITED), the caps on saved
 * payees and active standing orders, and lists that are capped and costed by their real size.
 */

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({
    worker: false,
    env: {
      PAYEE_CHECK_RATE_LIMIT_PER_MINUTE: '4',
      STANDING_ORDER_RATE_LIMIT_PER_MINUTE: '4',
      WEBHOOK_ENDPOINT_RATE_LIMIT_PER_MINUTE: '2',
      WEBHOOK_REDELIVERY_RATE_LIMIT_PER_MINUTE: '2',
      MAX_ACTIVE_STANDING_ORDERS_PER_ACCOUNT: '2',
      MAX_PAYEES_PER_CUSTOMER: '2',
    },
  });
});
afterAll(async () => {
  await stack?.stop();
});
afterEach(() => {
  expectNoErrorLogs(stack);
});

const GRACE = { name: 'Grace Hopper', sortCode: '123456', accountNumber: '12345678' };
const CHECK = 'mutation($r: RecipientInput!) { checkPayee(input: $r) { id result } }';
const ADD = 'mutation($r: RecipientInput!) { addPayee(input: $r) { id name } }';
const ORDER = /* GraphQL */ `
  mutation($input: CreateStandingOrderInput!) {
    createStandingOrder(input: $input) { standingOrder { id active } errors { code message field } }
  }
`;
const CREATE_ENDPOINT = /* GraphQL */ `
  mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { endpoint { id } errors { code message } } }
`;
const DELETE_ENDPOINT = 'mutation($id: ID!) { deleteWebhookEndpoint(id: $id) }';
const REDELIVER = 'mutation($e: ID!, $ev: ID!) { redeliverWebhookEvent(endpointId: $e, eventId: $ev) { id } }';

type Errors = Array<{ message: string; extensions?: { code?: string } & Record<string, unknown> }> | undefined;
const codeOf = (errors: Errors) => errors?.[0]?.extensions?.code;

const orderInput = (accountId: string, key: string) => ({
  idempotencyKey: key,
  fromAccountId: accountId,
  amount: 1_000,
  recipient: { name: 'Landlord Ltd', sortCode: '20-00-00', accountNumber: '55555555' },
  reference: 'Rent',
  frequency: 'MONTHLY',
  firstPaymentOn: '2099-01-01'.replace('2099', String(new Date().getUTCFullYear() + 1)).slice(0, 10),
});

describe('budgets per customer', () => {
  it('refuses checkPayee and addPayee together past PAYEE_CHECK_RATE_LIMIT_PER_MINUTE with RATE_LIMITED, for that customer only', async () => {
    const alice = await stack.newCustomer(0);
    const bob = await stack.newCustomer(0);
    for (let i = 0; i < 3; i++) expect((await gql(stack.apiUrl, alice.token, CHECK, { r: GRACE })).errors).toBeUndefined();
    expect((await gql(stack.apiUrl, alice.token, ADD, { r: GRACE })).errors).toBeUndefined();
    const checked = await gql(stack.apiUrl, alice.token, CHECK, { r: GRACE });
    expect(codeOf(checked.errors)).toBe('RATE_LIMITED');
    expect(checked.errors?.[0]?.message).toMatch(/payee checks.*try again in \d+ s/);
    expect(codeOf((await gql(stack.apiUrl, alice.token, ADD, { r: GRACE })).errors)).toBe('RATE_LIMITED');
    // Nothing was asked of the bank or stored for the refused ones.
    expect(await stack.db.payeeCheck.count({ where: { customerId: alice.customerId } })).toBe(4);
    expect((await gql(stack.apiUrl, bob.token, CHECK, { r: GRACE })).errors).toBeUndefined();
  });

  it('refuses createStandingOrder past its budget with a RATE_LIMITED UserError, and a third active order per account with LIMIT_EXCEEDED', async () => {
    const carol = await stack.newCustomer(10_000);
    const create = async (key: string) =>
      (
        await gql<{
          createStandingOrder: { standingOrder: { id: string } | null; errors: Array<{ code: string; field: string[] | null }> };
        }>(stack.apiUrl, carol.token, ORDER, { input: orderInput(carol.accountId, key) })
      ).data?.createStandingOrder;
    const first = await create('so-1');
    expect(first?.errors).toEqual([]);
    expect((await create('so-2'))?.errors).toEqual([]);
    const third = await create('so-3');
    expect(third).toMatchObject({ standingOrder: null, errors: [{ code: 'LIMIT_EXCEEDED', field: ['fromAccountId'] }] });
    // A retry of an order made before the account filled up still gets it.
    expect((await create('so-1'))?.standingOrder?.id).toBe(first?.standingOrder?.id);
    expect(await create('so-4')).toMatchObject({ standingOrder: null, errors: [{ code: 'RATE_LIMITED' }] });
    expect(await stack.db.standingOrder.count({ where: { accountId: carol.accountId } })).toBe(2);
  });

  it('refuses webhook endpoint changes and redeliveries past their budgets with RATE_LIMITED', async () => {
    const dave = await stack.newCustomer(0);
    const created = await gql<{ createWebhookEndpoint: { endpoint: { id: string } | null; errors: Array<{ code: string }> } }>(
      stack.apiUrl,
      dave.token,
      CREATE_ENDPOINT,
      { input: { accountId: dave.accountId, url: 'http://127.0.0.1:9/hooks' } },
    );
    const endpointId = created.data?.createWebhookEndpoint.endpoint?.id ?? '';
    expect(endpointId).not.toBe('');
    expect((await gql(stack.apiUrl, dave.token, DELETE_ENDPOINT, { id: endpointId })).data).toEqual({ deleteWebhookEndpoint: true });
    const again = await gql<{ createWebhookEndpoint: { endpoint: null; errors: Array<{ code: string }> } }>(
      stack.apiUrl,
      dave.token,
      CREATE_ENDPOINT,
      { input: { accountId: dave.accountId, url: 'http://127.0.0.1:9/hooks' } },
    );
    expect(again.data?.createWebhookEndpoint).toMatchObject({ endpoint: null, errors: [{ code: 'RATE_LIMITED' }] });
    expect(codeOf((await gql(stack.apiUrl, dave.token, DELETE_ENDPOINT, { id: endpointId })).errors)).toBe('RATE_LIMITED');

    const redeliver = () => gql(stack.apiUrl, dave.token, REDELIVER, { e: endpointId, ev: '0'.repeat(32) });
    expect(codeOf((await redeliver()).errors)).toBe('BAD_USER_INPUT');
    expect(codeOf((await redeliver()).errors)).toBe('BAD_USER_INPUT');
    expect(codeOf((await redeliver()).errors)).toBe('RATE_LIMITED');
  });
});

describe('caps', () => {
  it('saves at most MAX_PAYEES_PER_CUSTOMER payees, with a clear error, and still renames a saved one', async () => {
    const erin = await stack.newCustomer(0);
    const payee = (accountNumber: string, name = 'Someone Else') => ({ name, sortCode: '203040', accountNumber });
    expect((await gql(stack.apiUrl, erin.token, ADD, { r: payee('11112222') })).errors).toBeUndefined();
    expect((await gql(stack.apiUrl, erin.token, ADD, { r: payee('33334444') })).errors).toBeUndefined();
    const third = await gql(stack.apiUrl, erin.token, ADD, { r: payee('55556666') });
    expect(third.errors?.[0]).toMatchObject({
      message: expect.stringMatching(/at most 2 saved payees/i),
      extensions: { code: 'BAD_USER_INPUT', userErrorCode: 'LIMIT_EXCEEDED' },
    });
    // Refused before the bank was asked.
    expect(await stack.db.payeeCheck.count({ where: { customerId: erin.customerId } })).toBe(2);
    expect((await gql(stack.apiUrl, erin.token, ADD, { r: payee('11112222', 'Ada Lovelace') })).errors).toBeUndefined();
    expect(await stack.db.payee.count({ where: { customerId: erin.customerId } })).toBe(2);
    const listed = await gql<{ me: { all: unknown[]; one: unknown[] } }>(
      stack.apiUrl,
      erin.token,
      '{ me { all: payees { id } one: payees(first: 1) { id } } }',
    );
    expect(listed.data?.me.all).toHaveLength(2);
    expect(listed.data?.me.one).toHaveLength(1);
  });
});

describe('lists capped and costed by their real size', () => {
  let frank: TestCustomer;
  let paymentId: string;
  beforeAll(async () => {
    frank = await stack.newCustomer(10_000);
    paymentId = (await stack.send(frank.token, paymentInput(frank.accountId))).payment?.id ?? '';
    await stack.db.paymentAttempt.createMany({ data: Array.from({ length: 130 }, () => ({ paymentId, outcome: 'transient' })) });
  });

  it('shows at most 100 attempts of a payment, 20 unless asked', async () => {
    const read = await gql<{ payment: { some: unknown[]; most: unknown[] } }>(
      stack.apiUrl,
      frank.token,
      'query($id: ID!) { payment(id: $id) { some: attempts { number } most: attempts(first: 1000) { number } } }',
      { id: paymentId },
    );
    expect(read.errors).toBeUndefined();
    expect(read.data?.payment.some).toHaveLength(20);
    expect(read.data?.payment.most).toHaveLength(100);
  });

  it('costs paymentEvents by the page it reads (up to 500) and payees, standing orders and attempts by theirs', () => {
    const schema = buildSchema();
    const cost = (query: string, variables: Record<string, unknown> = {}) =>
      queryCost({ schema, document: parse(query), variables: { id: frank.accountId, ...variables } }) ?? 0;
    const events = (n: number) =>
      cost('query($id: ID!, $n: Int) { paymentEvents(accountId: $id, first: $n) { edges { node { id status } } } }', { n });
    expect(events(500)).toBeGreaterThan(4 * events(100));
    expect(events(500)).toBeLessThanOrEqual(COST_LIMITS.maxCost);
    expect(events(10_000)).toBe(events(500));
    // Defaults are the lists' real sizes: every payee (500), every active order (100), 20 attempts.
    expect(cost('{ me { payees { id } } }')).toBe(cost('{ me { payees(first: 500) { id } } }'));
    expect(cost('{ me { payees { id } } }')).toBeGreaterThan(cost('{ me { payees(first: 100) { id } } }'));
    expect(cost('query($id: ID!) { account(id: $id) { standingOrders { id } } }')).toBe(
      cost('query($id: ID!) { account(id: $id) { standingOrders(first: 100) { id } } }'),
    );
    expect(cost('query($id: ID!) { payment(id: $id) { attempts(first: 100) { number } } }')).toBeGreaterThan(
      cost('query($id: ID!) { payment(id: $id) { attempts { number } } }'),
    );
  });

  it('serves a paymentEvents page of 500 that the cost rules allow, and refuses 501 as BAD_USER_INPUT on first', async () => {
    const page = (first: number) =>
      gql(
        stack.apiUrl,
        frank.token,
        'query($id: ID!, $n: Int) { paymentEvents(accountId: $id, first: $n) { edges { node { id payment { id status } } } } }',
        {
          id: frank.accountId,
          n: first,
        },
      );
    expect((await page(500)).errors).toBeUndefined();
    expect((await page(501)).errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: ['first'] });
  });
});

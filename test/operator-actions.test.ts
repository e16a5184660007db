import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signToken } from '../src/auth.ts';
import { gql, type Stack, startStack, TEST_OPERATOR, TEST_SECRET } from './helpers.ts';

let stack: Stack;
let bobToken: string;
beforeAll(async () => {
  stack = await startStack({ worker: false });
  bobToken = await signToken({ role: 'operator', operatorId: 'bob@bank' }, TEST_SECRET, 600);
});
afterAll(async () => {
  await stack?.stop();
});

const CREATE_CUSTOMER = 'mutation($name: String!) { createCustomer(input: { name: $name }) { id } }';
const OPEN_ACCOUNT = 'mutation($c: ID!) { openAccount(input: { customerId: $c, name: "Current" }) { id } }';
const DEPOSIT =
  'mutation($a: ID!, $amount: Money!, $key: String!) { depositFunds(input: { accountId: $a, amount: $amount, idempotencyKey: $key }) { balance } }';

const actionsOn = (targetId: string) => stack.db.operatorAction.findMany({ where: { targetId }, orderBy: { id: 'asc' } });

async function customerAndAccount(token: string) {
  const customer = await gql<{ createCustomer: { id: string } }>(stack.apiUrl, token, CREATE_CUSTOMER, { name: 'Dora' });
  const customerId = customer.data?.createCustomer.id ?? '';
  const account = await gql<{ openAccount: { id: string } }>(stack.apiUrl, token, OPEN_ACCOUNT, { c: customerId });
  return { customerId, accountId: account.data?.openAccount.id ?? '' };
}

describe('operator actions', () => {
  it('records exactly one action, with the operator from the token, for each operator mutation', async () => {
    const { customerId, accountId } = await customerAndAccount(stack.operatorToken);
    const deposit = await gql(stack.apiUrl, bobToken, DEPOSIT, { a: accountId, amount: 12_345, key: 'payday' });
    expect(deposit.errors).toBeUndefined();

    expect((await actionsOn(customerId)).map((a) => [a.operator, a.action])).toEqual([[TEST_OPERATOR, 'createCustomer']]);
    const onAccount = await actionsOn(accountId);
    expect(onAccount.map((a) => [a.operator, a.action])).toEqual([
      [TEST_OPERATOR, 'openAccount'],
      ['bob@bank', 'depositFunds'],
    ]);
    expect(onAccount[1]?.detail).toBe('12345 pence, idempotency key payday');
  });

  it('writes no second action when a deposit is replayed with the same key', async () => {
    const { accountId } = await customerAndAccount(stack.operatorToken);
    const vars = { a: accountId, amount: 500, key: 'once' };
    await Promise.all(Array.from({ length: 4 }, () => gql(stack.apiUrl, bobToken, DEPOSIT, vars)));
    await gql(stack.apiUrl, bobToken, DEPOSIT, vars);
    expect((await actionsOn(accountId)).filter((a) => a.action === 'depositFunds')).toHaveLength(1);
  });

  it('writes no action when an operator mutation fails', async () => {
    const { accountId } = await customerAndAccount(stack.operatorToken);
    await gql(stack.apiUrl, bobToken, DEPOSIT, { a: accountId, amount: 500, key: 'k1' });
    const before = await stack.db.operatorAction.count();
    const failures = await Promise.all([
      gql(stack.apiUrl, bobToken, CREATE_CUSTOMER, { name: '' }),
      gql(stack.apiUrl, bobToken, OPEN_ACCOUNT, { c: '00000000-0000-4000-8000-000000000000' }),
      gql(stack.apiUrl, bobToken, DEPOSIT, { a: '00000000-0000-4000-8000-000000000000', amount: 1, key: 'k' }),
      gql(stack.apiUrl, bobToken, DEPOSIT, { a: accountId, amount: 501, key: 'k1' }),
    ]);
    for (const failure of failures) expect(failure.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect(await stack.db.operatorAction.count()).toBe(before);
  });

  it('lists the actions to operators, newest first and page by page, and to no one else', async () => {
    const { customerId, accountId } = await customerAndAccount(bobToken);
    const QUERY =
      'query($after: String) { operatorActions(first: 1, after: $after) { edges { cursor node { id operator action targetId detail at } } pageInfo { hasNextPage endCursor } } }';
    type Page = {
      operatorActions: {
        edges: Array<{ node: { operator: string; action: string; targetId: string; at: string } }>;
        pageInfo: { hasNextPage: boolean; endCursor: string | null };
      };
    };
    const first = await gql<Page>(stack.apiUrl, stack.operatorToken, QUERY);
    expect(first.data?.operatorActions.edges.map((e) => e.node)).toEqual([
      expect.objectContaining({ operator: 'bob@bank', action: 'openAccount', targetId: accountId, at: expect.any(String) }),
    ]);
    expect(first.data?.operatorActions.pageInfo.hasNextPage).toBe(true);
    const second = await gql<Page>(stack.apiUrl, stack.operatorToken, QUERY, { after: first.data?.operatorActions.pageInfo.endCursor });
    expect(second.data?.operatorActions.edges.map((e) => [e.node.action, e.node.targetId])).toEqual([['createCustomer', customerId]]);

    const customer = await stack.newCustomer(0);
    const refused = await gql(stack.apiUrl, customer.token, QUERY);
    expect(refused.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });
});

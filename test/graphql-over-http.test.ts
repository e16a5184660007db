import { serverAudits } from 'graphql-http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gql, paymentInput, type Stack, startStack } from './helpers.ts';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ worker: false });
});
afterAll(async () => {
  await stack?.stop();
});

describe('GraphQL over HTTP', () => {
  it("passes every MUST and SHOULD audit of graphql-http's server suite", async () => {
    const results = await Promise.all(serverAudits({ url: stack.apiUrl }).map((audit) => audit.fn()));
    const failed = results.filter((r) => r.status === 'error' || r.status === 'warn').map((r) => `${r.status}: ${r.name}`);
    expect(failed).toEqual([]);
    // The MAY notices left are GET queries without a header a browser cannot send cross-site:
    // Apollo's CSRF prevention refuses them on purpose (docs/security.md).
    const notices = results.filter((r) => r.status === 'notice').map((r) => r.name);
    expect(notices.every((name) => /GET/.test(name))).toBe(true);
    expect(results.length).toBeGreaterThan(40);
  });

  it.each([
    ['a document that does not parse', { query: '{' }, 'GRAPHQL_PARSE_FAILED'],
    ['a document that does not validate', { query: '{ nope }' }, 'GRAPHQL_VALIDATION_FAILED'],
    ['variables that do not fit', { query: 'query($id: ID!) { payment(id: $id) { id } }', variables: { id: { no: 1 } } }, 'BAD_USER_INPUT'],
  ])('answers %s with 200 as application/json and 400 as application/graphql-response+json', async (_what, body, code) => {
    for (const [accept, status] of [
      ['application/json', 200],
      ['application/graphql-response+json', 400],
    ] as const) {
      const response = await fetch(stack.apiUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept, authorization: `Bearer ${stack.operatorToken}` },
        body: JSON.stringify(body),
      });
      expect(response.status, accept).toBe(status);
      expect(response.headers.get('content-type')).toMatch(new RegExp(`^${accept.replace('+', '\\+')}`));
      const json = (await response.json()) as { data?: unknown; errors: Array<{ extensions: { code: string } }> };
      expect(json.data).toBeUndefined();
      expect(json.errors[0]?.extensions.code).toBe(code);
    }
  });
});

describe('payloads and pages', () => {
  it('says whether sendPayment answered with an earlier payment of the same key', async () => {
    const alice = await stack.newCustomer(10_000);
    const input = paymentInput(alice.accountId);
    const query = 'mutation($i: SendPaymentInput!) { sendPayment(input: $i) { payment { id } errors { code } replayed } }';
    type Sent = { sendPayment: { payment: { id: string } | null; errors: Array<{ code: string }>; replayed: boolean } };
    const first = await gql<Sent>(stack.apiUrl, alice.token, query, { i: input });
    const again = await gql<Sent>(stack.apiUrl, alice.token, query, { i: input });
    const refused = await gql<Sent>(stack.apiUrl, alice.token, query, { i: { ...input, idempotencyKey: 'other', amount: 20_000 } });
    expect(first.data?.sendPayment.replayed).toBe(false);
    expect(again.data?.sendPayment).toEqual({ payment: first.data?.sendPayment.payment, errors: [], replayed: true });
    expect(refused.data?.sendPayment).toEqual({ payment: null, errors: [{ code: 'INSUFFICIENT_FUNDS' }], replayed: false });
  });

  it('gives connections the whole PageInfo: start and end cursors, and whether there are rows before and after', async () => {
    const alice = await stack.newCustomer(10_000);
    for (let i = 0; i < 3; i++) await stack.send(alice.token, paymentInput(alice.accountId, { amount: 100 + i }));
    const query = `query($id: ID!, $after: String) { account(id: $id) {
      payments(first: 2, after: $after) { edges { cursor } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } }`;
    type Page = { account: { payments: { edges: Array<{ cursor: string }>; pageInfo: Record<string, unknown> } } };
    const one = (await gql<Page>(stack.apiUrl, alice.token, query, { id: alice.accountId })).data?.account.payments;
    expect(one?.pageInfo).toEqual({
      hasNextPage: true,
      hasPreviousPage: false,
      startCursor: one?.edges[0]?.cursor,
      endCursor: one?.edges[1]?.cursor,
    });
    const two = (await gql<Page>(stack.apiUrl, alice.token, query, { id: alice.accountId, after: one?.pageInfo.endCursor })).data?.account
      .payments;
    expect(two?.pageInfo).toEqual({
      hasNextPage: false,
      hasPreviousPage: true,
      startCursor: two?.edges[0]?.cursor,
      endCursor: two?.edges[0]?.cursor,
    });
    expect(two?.edges).toHaveLength(1);
  });
});

describe('the contract', () => {
  it("keeps every type, field and argument of the contract's GraphQL surface (npm run schema:check)", async () => {
    const { execFile } = await import('node:child_process');
    const { promisify } = await import('node:util');
    const result = await promisify(execFile)(process.execPath, ['tools/schema-check.ts'], { cwd: new URL('..', import.meta.url).pathname });
    expect(result.stdout).toMatch(/, 0 breaking\n$/);
  });
});

import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { gql, startStack, type Stack, type TestCustomer } from './helpers.ts';

let stack: Stack;
let alice: TestCustomer;
beforeAll(async () => {
  stack = await startStack({ worker: false });
  alice = await stack.newCustomer(1_000_000);
});
afterAll(async () => {
  await stack?.stop();
});
// Each test says which error lines it expects; none leak into the next.
beforeEach(() => {
  stack.errorLogs.length = 0;
});

const cursor = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

describe('pagination cursors', () => {
  it.each([
    ['payments', 'garbage'],
    ['payments', cursor({ createdAt: '2026-01-01T00:00:00.000Z' })],
    ['payments', cursor(['not a date', '00000000-0000-4000-8000-000000000000'])],
    ['payments', cursor(['2026-01-01T00:00:00.000Z', 'not-a-uuid'])],
    ['payments', cursor([42])],
    ['ledger', 'garbage'],
    ['ledger', cursor(['12x'])],
    ['ledger', cursor(['99999999999999999999'])],
    ['ledger', cursor({ id: '1' })],
    ['ledger', cursor(['2026-01-01T00:00:00.000Z', '00000000-0000-4000-8000-000000000000'])],
  ])('refuses a malformed cursor on Account.%s as BAD_USER_INPUT naming after (%s)', async (field, after) => {
    const response = await gql(stack.apiUrl, alice.token, `query($id: ID!, $after: String) { account(id: $id) { ${field}(after: $after) { edges { cursor } } } }`, {
      id: alice.accountId,
      after,
    });
    expect(response.errors).toEqual([
      expect.objectContaining({ message: expect.stringMatching(/\bafter\b/), extensions: expect.objectContaining({ code: 'BAD_USER_INPUT', field: ['after'] }) }),
    ]);
    expect(stack.errorLogs).toEqual([]);
  });

  it('still pages with the cursors it hands out', async () => {
    for (let i = 0; i < 3; i++) await stack.send(alice.token, { idempotencyKey: `page-${i}`, fromAccountId: alice.accountId, amount: 100 + i, recipient: { name: 'Grace Hopper', sortCode: '123456', accountNumber: '12345678' } });
    const page = async (field: string, after: string | null) =>
      gql<{ account: Record<string, { edges: Array<{ cursor: string }>; pageInfo: { endCursor: string | null; hasNextPage: boolean } }> }>(
        stack.apiUrl,
        alice.token,
        `query($id: ID!, $after: String) { account(id: $id) { ${field}(first: 2, after: $after) { edges { cursor } pageInfo { endCursor hasNextPage } } } }`,
        { id: alice.accountId, after },
      );
    for (const field of ['payments', 'ledger']) {
      const first = await page(field, null);
      const conn = first.data?.account[field];
      expect(conn?.pageInfo.hasNextPage).toBe(true);
      const second = await page(field, conn?.pageInfo.endCursor ?? null);
      expect(second.errors).toBeUndefined();
      expect(second.data?.account[field]?.edges.length).toBeGreaterThan(0);
    }
    expect(stack.errorLogs).toEqual([]);
  });
});

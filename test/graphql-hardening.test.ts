import { parse } from 'graphql';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startApiProcess } from '../src/app/api.ts';
import { loadConfig } from '../src/config.ts';
import { COST_LIMITS, queryCost } from '../src/graphql/cost.ts';
import { buildSchema } from '../src/graphql/server.ts';
import {
  expectNoErrorLogs,
  gql,
  paymentInput,
  type Stack,
  startStack,
  TEST_SECRET,
  TEST_WEBHOOK_KEY,
  type TestCustomer,
} from './helpers.ts';
import { collect, PAYMENT_UPDATED, type PaymentUpdate, wsClient } from './ws-helpers.ts';

let stack: Stack;
let alice: TestCustomer;
/** Every SQL statement the API has sent. */
const statements: string[] = [];
beforeAll(async () => {
  stack = await startStack({ worker: false, onApiQuery: (sql) => statements.push(sql) });
  alice = await stack.newCustomer(1_000_000);
});
afterAll(async () => {
  await stack?.stop();
});
// A test that expects an error line takes it off the list; any other fails the test.
afterEach(() => {
  expectNoErrorLogs(stack);
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
    const response = await gql(
      stack.apiUrl,
      alice.token,
      `query($id: ID!, $after: String) { account(id: $id) { ${field}(after: $after) { edges { cursor } } } }`,
      {
        id: alice.accountId,
        after,
      },
    );
    expect(response.errors).toEqual([
      expect.objectContaining({
        message: expect.stringMatching(/\bafter\b/),
        extensions: expect.objectContaining({ code: 'BAD_USER_INPUT', field: ['after'] }),
      }),
    ]);
    expect(stack.errorLogs).toEqual([]);
  });

  it('still pages with the cursors it hands out', async () => {
    for (let i = 0; i < 3; i++)
      await stack.send(alice.token, {
        idempotencyKey: `page-${i}`,
        fromAccountId: alice.accountId,
        amount: 100 + i,
        recipient: { name: 'Grace Hopper', sortCode: '123456', accountNumber: '12345678' },
      });
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

/** A customer with `count` payments, each with two recorded attempts. */
async function customerWithPayments(count: number): Promise<TestCustomer> {
  const customer = await stack.newCustomer(count * 1_000);
  for (let i = 0; i < count; i++) {
    const sent = await stack.send(customer.token, paymentInput(customer.accountId, { amount: 1_000 }));
    const paymentId = sent.payment?.id ?? '';
    await stack.db.paymentAttempt.createMany({
      data: [
        { paymentId, outcome: 'transient' },
        { paymentId, outcome: 'accepted' },
      ],
    });
  }
  return customer;
}

/** The response to `query` and the SQL statements the API sent to answer it. */
async function measured(token: string, query: string, variables: Record<string, unknown>) {
  const before = statements.length;
  const response = await fetch(stack.apiUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await response.json()) as { data?: unknown; errors?: Array<{ message: string; extensions?: { code?: string } }> };
  return { status: response.status, body, sql: statements.slice(before) };
}

describe('query cost counts the pages a query will really read', () => {
  let bulk: TestCustomer;
  beforeAll(async () => {
    bulk = await customerWithPayments(100);
  });

  const nestedPages = (pageArg: string, aliases = ['a', 'b', 'c']) => /* GraphQL */ `
    query($id: ID!${pageArg.includes('$n') ? ', $n: Int' : ''}) { account(id: $id) {
      ${aliases.map((alias) => `${alias}: payments${pageArg} { edges { node { account { payments${pageArg} { edges { node { id attempts { number } } } } } } } }`).join('\n')}
    } }`;

  it('refuses aliased nested payments pages whose size comes from a variable, before reading anything', async () => {
    const { status, body, sql } = await measured(bulk.token, nestedPages('(first: $n)'), { id: bulk.accountId, n: 100 });
    // Refused before execution: 200 with the errors for application/json (GraphQL over HTTP).
    expect(status).toBe(200);
    expect(body.data).toBeUndefined();
    expect(body.data).toBeUndefined();
    expect(body.errors).toEqual([
      expect.objectContaining({
        message: expect.stringMatching(/cost/i),
        extensions: expect.objectContaining({ code: 'GRAPHQL_VALIDATION_FAILED' }),
      }),
    ]);
    expect(sql).toEqual([]);
  });

  it('counts the same document again with the variables of each request: a small page first does not let a large one through', async () => {
    const query = nestedPages('(first: $n)');
    const small = await measured(bulk.token, query, { id: bulk.accountId, n: 2 });
    expect(small.body.errors).toBeUndefined();
    const large = await measured(bulk.token, query, { id: bulk.accountId, n: 100 });
    expect(large.body.errors).toEqual([
      expect.objectContaining({ extensions: expect.objectContaining({ code: 'GRAPHQL_VALIDATION_FAILED' }) }),
    ]);
    expect(large.sql).toEqual([]);
  });

  it('costs an omitted first at the schema default of 20 per page, and a first over 100 at 100', () => {
    const schema = buildSchema();
    const cost = (pageArg: string, variables: Record<string, unknown>) =>
      queryCost({ schema, document: parse(nestedPages(pageArg)), variables: { id: bulk.accountId, ...variables } });
    expect(cost('', {})).toBe(cost('(first: $n)', { n: 20 }));
    expect(cost('(first: $n)', { n: null })).toBe(cost('(first: $n)', { n: 20 }));
    expect(cost('(first: $n)', { n: 1_000_000 })).toBe(cost('(first: $n)', { n: 100 }));
    expect(cost('(first: $n)', { n: 100 })).toBeGreaterThan(COST_LIMITS.maxCost);
  });

  it('runs one such nested query with default pages', async () => {
    const { status, body } = await measured(bulk.token, nestedPages('', ['a']), { id: bulk.accountId });
    expect(body.errors).toBeUndefined();
    expect(status).toBe(200);
  });

  it('applies the cost limit with variables to operations over the WebSocket', async () => {
    const { client } = wsClient(stack.apiUrl, bulk.token);
    try {
      const nested = (n: number) =>
        collect(
          client,
          `subscription($id: ID!, $n: Int) { accountPaymentsUpdated(accountId: $id) { account { a: payments(first: $n) { edges { node { account { payments(first: $n) { edges { node { id } } } } } } } } } }`,
          { id: bulk.accountId, n },
        );
      const refused = nested(100);
      await refused.done;
      expect(refused.errors).toEqual([
        expect.objectContaining({
          message: expect.stringMatching(/cost/i),
          extensions: expect.objectContaining({ code: 'GRAPHQL_VALIDATION_FAILED' }),
        }),
      ]);
    } finally {
      await client.dispose();
    }
  });

  it('reads a page of 100 payments with their account and attempts in SQL statements that do not grow with the rows', async () => {
    const page = /* GraphQL */ `query($id: ID!) { account(id: $id) {
      payments(first: 100) { edges { node { id account { id balance } attempts { number outcome } } } }
      ledger(first: 100) { edges { node { amount payment { id status account { id } } } } }
    } }`;
    const few = await customerWithPayments(2);
    const small = await measured(few.token, page, { id: few.accountId });
    const large = await measured(bulk.token, page, { id: bulk.accountId });
    expect(small.body.errors).toBeUndefined();
    expect(large.body.errors).toBeUndefined();
    expect(JSON.stringify(large.body).match(/"outcome"/g)).toHaveLength(200);
    expect(large.sql.length).toBe(small.sql.length);
    expect(large.sql.length).toBeLessThanOrEqual(8);
  });
});

describe('errors over the WebSocket', () => {
  it('masks an unexpected failure inside a live subscription and logs it for operators', async () => {
    const sent = await stack.send(alice.token, paymentInput(alice.accountId));
    const paymentId = sent.payment?.id ?? '';
    const { client } = wsClient(stack.apiUrl, alice.token);
    try {
      const sub = collect<PaymentUpdate>(client, PAYMENT_UPDATED, { id: paymentId });
      await sub.until((values) => values.length === 1);
      // Break the database under the live subscription: the payment changes (an event), and the
      // read of the payment that the event triggers fails inside Prisma.
      await stack.db.$transaction([
        stack.db.$executeRaw`UPDATE payments SET status = 'COMPLETED' WHERE id = ${paymentId}::uuid`,
        stack.db.$executeRawUnsafe('ALTER TABLE payments RENAME TO payments_moved'),
      ]);
      await sub.done;
      expect(sub.errors).toEqual([{ message: 'Internal server error', extensions: { code: 'INTERNAL_SERVER_ERROR' } }]);
      expect(JSON.stringify(sub.errors)).not.toMatch(/payments|relation|prisma|exist|at \w+ \(/i);
      expect(stack.errorLogs).toHaveLength(1);
      expect(stack.errorLogs[0]).toMatch(/payments/);
      expect(stack.errorLogs[0]).toMatch(/"operationId":"[^"]+"/);
    } finally {
      await stack.db.$executeRawUnsafe('ALTER TABLE IF EXISTS payments_moved RENAME TO payments');
      await client.dispose();
    }
    stack.errorLogs.length = 0;
  });

  it('passes a known client error through unmasked', async () => {
    const { client } = wsClient(stack.apiUrl, alice.token);
    try {
      const sub = collect(client, PAYMENT_UPDATED, { id: '00000000-0000-4000-8000-000000000000' });
      await sub.done;
      expect(sub.errors).toEqual([expect.objectContaining({ message: 'No such payment', extensions: { code: 'BAD_USER_INPUT' } })]);
      expect(stack.errorLogs).toEqual([]);
    } finally {
      await client.dispose();
    }
  });
});

describe('production settings', () => {
  it('gives no "did you mean" hints over HTTP or the WebSocket when introspection is off', async () => {
    const config = loadConfig({
      NODE_ENV: 'production',
      AUTH_JWT_SECRET: TEST_SECRET,
      WEBHOOK_SECRET_KEY: TEST_WEBHOOK_KEY,
      METRICS_PORT: '0',
    });
    expect(config.introspection).toBe(false);
    const api = await startApiProcess({ config, databaseUrl: stack.databaseUrl, logger: stack.logger, port: 0 });
    const url = api.api.url.replace('localhost', '127.0.0.1');
    const { client } = wsClient(url, alice.token);
    try {
      const typos = [
        ['subscription($id: ID!) { paymentUpdated(paymentId: $id) { stauts } }', { id: alice.accountId }],
        ['subscription($id: ID!) { acountPaymentsUpdated(accountId: $id) { id } }', { id: alice.accountId }],
        ['query($id: ID!) { account(id: $id) { payments(status: PENDNG) { edges { cursor } } } }', { id: alice.accountId }],
        [
          'query($id: ID!, $s: PaymentStatus) { account(id: $id) { payments(status: $s) { edges { cursor } } } }',
          { id: alice.accountId, s: 'PENDNG' },
        ],
      ] as const;
      for (const [query, variables] of typos) {
        const overWs = collect(client, query, variables);
        await overWs.done;
        const overHttp = await gql(url, alice.token, query.replace(/^subscription/, 'query'), variables);
        for (const errors of [overWs.errors, overHttp.errors]) {
          expect(JSON.stringify(errors), query).not.toMatch(/did you mean|\\"(status|accountPaymentsUpdated|PENDING)\\"/i);
          expect(errors, query).toEqual([
            expect.objectContaining({
              extensions: expect.objectContaining({ code: expect.stringMatching(/GRAPHQL_VALIDATION_FAILED|BAD_USER_INPUT/) }),
            }),
          ]);
        }
      }
      expect(stack.errorLogs).toEqual([]);
    } finally {
      await client.dispose();
      await api.stop();
    }
  });
});

describe('metrics', () => {
  const countQueries = () => statements.filter((sql) => /GROUP BY status/i.test(sql)).length;
  const metricsUrl = () => stack.apiUrl.replace(/\/graphql$/, '/metrics');

  it('runs the payments count once for two concurrent scrapes, and not again for a scrape within the window', async () => {
    const before = countQueries();
    const [a, b] = await Promise.all([fetch(metricsUrl()), fetch(metricsUrl())]);
    expect(await a.text()).toMatch(/^payments_by_status\{status="PENDING"\} \d+/m);
    expect(await b.text()).toMatch(/^payments_by_status\{status="PENDING"\} \d+/m);
    expect(countQueries()).toBe(before + 1);
    expect((await fetch(metricsUrl())).status).toBe(200);
    expect(countQueries()).toBe(before + 1);
  });

  it('reads the count again once the window has passed', async () => {
    let counted = 0;
    const api = await startApiProcess({
      config: stack.config,
      databaseUrl: stack.databaseUrl,
      logger: stack.logger,
      port: 0,
      metricsCacheMs: 0,
      onQuery: (sql) => {
        if (/GROUP BY status/i.test(sql)) counted++;
      },
    });
    try {
      const url = api.api.url.replace('/graphql', '/metrics');
      await (await fetch(url)).text();
      await (await fetch(url)).text();
      expect(counted).toBe(2);
    } finally {
      await api.stop();
    }
  });

  it('serves /metrics only on METRICS_PORT in production, and on the public port too outside it', async () => {
    expect(loadConfig({ NODE_ENV: 'production', AUTH_JWT_SECRET: TEST_SECRET, WEBHOOK_SECRET_KEY: TEST_WEBHOOK_KEY })).toMatchObject({
      metricsPublic: false,
      metricsPort: 4300,
    });
    expect(loadConfig({})).toMatchObject({ metricsPublic: true, metricsPort: null });
    expect(() => loadConfig({ METRICS_PUBLIC: 'false' })).toThrow(/METRICS_PORT/);
    expect(() => loadConfig({ METRICS_PORT: 'ninety' })).toThrow(/METRICS_PORT/);

    const config = loadConfig({
      NODE_ENV: 'production',
      AUTH_JWT_SECRET: TEST_SECRET,
      WEBHOOK_SECRET_KEY: TEST_WEBHOOK_KEY,
      METRICS_PORT: '0',
    });
    const api = await startApiProcess({ config, databaseUrl: stack.databaseUrl, logger: stack.logger, port: 0 });
    try {
      const publicBase = api.api.url.replace('localhost', '127.0.0.1').replace(/\/graphql$/, '');
      expect((await fetch(`${publicBase}/metrics`)).status).toBe(404);
      expect((await fetch(`${publicBase}/readyz`)).status).toBe(200);
      expect(api.opsUrl).not.toBeNull();
      const ops = await fetch(`${api.opsUrl}/metrics`);
      expect(ops.status).toBe(200);
      expect(await ops.text()).toMatch(/^payments_by_status\{status="PENDING"\} \d+/m);
      expect((await fetch(`${api.opsUrl}/readyz`)).status).toBe(200);
      expect((await fetch(`${api.opsUrl}/healthz`)).status).toBe(200);
    } finally {
      await api.stop();
    }
    // Outside production the one port keeps serving it, as the contract says.
    expect((await fetch(metricsUrl())).status).toBe(200);
  });
});

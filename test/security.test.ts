import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApiProcess } from '../src/app/api.ts';
import { loadConfig } from '../src/config.ts';
import { QUERY_LIMITS } from '../src/graphql/limits.ts';
import {
  gql,
  paymentInput,
  rowCounts,
  SEND_PAYMENT,
  type SendPaymentData,
  type Stack,
  startStack,
  TEST_SECRET,
  TEST_WEBHOOK_KEY,
  type TestCustomer,
} from './helpers.ts';
import { collect, wsClient } from './ws-helpers.ts';

let stack: Stack;
let alice: TestCustomer;
beforeAll(async () => {
  stack = await startStack({ worker: false, logLevel: 'trace', env: { SEND_PAYMENT_RATE_LIMIT_PER_MINUTE: '0' } });
  alice = await stack.newCustomer(1_000_000);
});
afterAll(async () => {
  await stack?.stop();
});

const code = (r: { errors?: Array<{ extensions?: { code?: string } }> }) => r.errors?.[0]?.extensions?.code;

describe('query abuse is refused before execution', () => {
  const nested = (depth: number) => {
    let selection = 'id';
    for (let i = 0; i < depth; i++) selection = `account { payments(first: 1) { edges { node { ${selection} } } } }`;
    return `query($id: ID!) { payment(id: $id) { ${selection} } }`;
  };

  it.each([
    ['too deep', nested(4), /depth/i],
    ['too many aliases', `{ ${Array.from({ length: QUERY_LIMITS.maxAliases + 1 }, (_, i) => `a${i}: me { id }`).join(' ')} }`, /aliases/i],
    [
      'too many directives',
      `{ me { ${Array.from({ length: QUERY_LIMITS.maxDirectives + 1 }, () => 'id @include(if: true)').join(' ')} } }`,
      /directives/i,
    ],
    [
      'too costly',
      `{ me { accounts { ${Array.from({ length: 12 }, (_, i) => `p${i}: payments(first: 100) { edges { node { id createdAt updatedAt amount attempts { number at outcome detail } } } }`).join(' ')} } } }`,
      /cost/i,
    ],
    ['too many tokens', `{ me { ${'id '.repeat(QUERY_LIMITS.maxTokens)} } }`, /token/i],
  ])('refuses a query that is %s', async (_what, query, reason) => {
    const response = await gql(stack.apiUrl, alice.token, query, { id: '00000000-0000-4000-8000-000000000000' });
    expect(response.data).toBeUndefined();
    expect(response.errors?.[0]?.message).toMatch(reason);
    expect(['GRAPHQL_VALIDATION_FAILED', 'GRAPHQL_PARSE_FAILED', 'BAD_USER_INPUT']).toContain(code(response));
  });

  it('refuses a batch of operations in one request', async () => {
    const response = await fetch(stack.apiUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${alice.token}` },
      body: JSON.stringify([{ query: '{ me { id } }' }, { query: '{ me { id } }' }]),
    });
    expect(response.status).toBe(400);
  });

  it('applies the same limits to subscriptions over the WebSocket', async () => {
    const { client } = wsClient(stack.apiUrl, alice.token);
    try {
      let selection = 'id';
      for (let i = 0; i < 4; i++) selection = `account { payments(first: 1) { edges { node { ${selection} } } } }`;
      const sub = collect(client, `subscription($id: ID!) { paymentUpdated(paymentId: $id) { ${selection} } }`, {
        id: '00000000-0000-4000-8000-000000000000',
      });
      await sub.done;
      expect(sub.values).toEqual([]);
      expect(sub.errors).toEqual([expect.objectContaining({ message: expect.stringMatching(/depth/i) })]);
    } finally {
      await client.dispose();
    }
  });
});

describe('rate limits', () => {
  it('answers RATE_LIMITED past the per-customer limit on sendPayment, and writes nothing', async () => {
    const own = await startStack({ worker: false, env: { SEND_PAYMENT_RATE_LIMIT_PER_MINUTE: '3' } });
    try {
      const bob = await own.newCustomer(10_000);
      const carol = await own.newCustomer(10_000);
      for (let i = 0; i < 3; i++) expect((await own.send(bob.token, paymentInput(bob.accountId, { amount: 1 }))).errors).toEqual([]);
      const before = await rowCounts(own.db);
      const limited = await own.send(bob.token, paymentInput(bob.accountId, { amount: 1 }));
      expect(limited).toEqual({
        payment: null,
        errors: [{ code: 'RATE_LIMITED', message: expect.stringMatching(/try again/), field: null }],
      });
      expect(await rowCounts(own.db)).toEqual(before);
      // Per customer: another customer is unaffected.
      expect((await own.send(carol.token, paymentInput(carol.accountId, { amount: 1 }))).errors).toEqual([]);
    } finally {
      await own.stop();
    }
  });

  it('holds the limit across API processes that share the database', async () => {
    const own = await startStack({ worker: false, env: { SEND_PAYMENT_RATE_LIMIT_PER_MINUTE: '3' } });
    const second = await startApiProcess({ config: own.config, databaseUrl: own.databaseUrl, logger: own.logger, port: 0 });
    try {
      const secondUrl = second.api.url.replace('localhost', '127.0.0.1');
      const bob = await own.newCustomer(10_000);
      const viaSecond = async () =>
        (await gql<SendPaymentData>(secondUrl, bob.token, SEND_PAYMENT, { input: paymentInput(bob.accountId, { amount: 1 }) })).data
          ?.sendPayment;
      expect((await own.send(bob.token, paymentInput(bob.accountId, { amount: 1 }))).errors).toEqual([]);
      expect((await viaSecond())?.errors).toEqual([]);
      expect((await own.send(bob.token, paymentInput(bob.accountId, { amount: 1 }))).errors).toEqual([]);
      expect((await viaSecond())?.errors.map((e) => e.code)).toEqual(['RATE_LIMITED']);
      expect((await own.send(bob.token, paymentInput(bob.accountId, { amount: 1 }))).errors.map((e) => e.code)).toEqual(['RATE_LIMITED']);
      expect(await own.db.payment.count({ where: { accountId: bob.accountId } })).toBe(3);
    } finally {
      await second.stop();
      await own.stop();
    }
  });
});

describe('production mode', () => {
  it('refuses to start without a strong secret', () => {
    expect(() => loadConfig({ NODE_ENV: 'production', AUTH_JWT_SECRET: 'too-short' })).toThrow(/AUTH_JWT_SECRET/);
  });

  it('turns off the IDE and introspection unless asked for', async () => {
    const config = loadConfig({
      NODE_ENV: 'production',
      AUTH_JWT_SECRET: TEST_SECRET,
      WEBHOOK_SECRET_KEY: TEST_WEBHOOK_KEY,
      SEND_PAYMENT_RATE_LIMIT_PER_MINUTE: '0',
      METRICS_PORT: '0',
    });
    expect(config).toMatchObject({ ide: false, introspection: false });
    expect(
      loadConfig({ NODE_ENV: 'production', AUTH_JWT_SECRET: TEST_SECRET, WEBHOOK_SECRET_KEY: TEST_WEBHOOK_KEY, GRAPHQL_IDE: 'true' }),
    ).toMatchObject({ ide: true, introspection: true });

    const api = await startApiProcess({ config, databaseUrl: stack.databaseUrl, logger: stack.logger, port: 0 });
    try {
      const url = api.api.url.replace('localhost', '127.0.0.1');
      const page = await fetch(url, { headers: { accept: 'text/html' } });
      expect(await page.text()).not.toContain('GraphiQL');
      const introspection = await gql(url, alice.token, '{ __schema { types { name } } }');
      expect(code(introspection)).toBe('GRAPHQL_VALIDATION_FAILED');
      // No "did you mean" hints either.
      const typo = await gql(url, alice.token, '{ me { acounts { id } } }');
      expect(JSON.stringify(typo)).not.toMatch(/Did you mean/);
    } finally {
      await api.stop();
    }
  });
});

describe('what leaves the service', () => {
  it('never logs tokens or full account numbers, even at trace level', async () => {
    const before = stack.logLines.length;
    const recipientAccount = '87654321';
    await stack.send(
      alice.token,
      paymentInput(alice.accountId, { recipient: { name: 'Grace', sortCode: '123456', accountNumber: recipientAccount } }),
    );
    await gql(stack.apiUrl, `${alice.token}x`, '{ me { id } }');
    const own = await stack.db.account.findUniqueOrThrow({ where: { id: alice.accountId } });
    const logged = stack.logLines.slice(before).join('\n');
    expect(logged.length).toBeGreaterThan(0);
    expect(logged).not.toContain(alice.token.split('.')[2]);
    expect(logged).not.toContain(recipientAccount);
    expect(logged).not.toContain(own.accountNumber);
  });
});

describe('fuzzing sendPayment', () => {
  const anything = fc.oneof(
    fc.string(),
    fc.integer(),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
    fc.array(fc.string(), { maxLength: 2 }),
    fc.string({ unit: 'binary' }),
  );
  const maybe = <T>(valid: fc.Arbitrary<T>) => fc.oneof({ weight: 3, arbitrary: valid }, { weight: 1, arbitrary: anything });

  it('never answers 5xx and never writes for an invalid input', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          idempotencyKey: maybe(fc.stringMatching(/^[A-Za-z0-9._:-]{1,40}$/)),
          fromAccountId: maybe(fc.constant(alice.accountId)),
          amount: maybe(fc.integer({ min: -10, max: 200_000_000 })),
          recipient: maybe(
            fc.record({
              name: maybe(fc.string({ minLength: 0, maxLength: 80 })),
              sortCode: maybe(fc.stringMatching(/^\d{2}-?\d{2}-?\d{2}$/)),
              accountNumber: maybe(fc.stringMatching(/^\d{7,9}$/)),
            }),
          ),
          reference: maybe(fc.option(fc.string({ maxLength: 20 }))),
        }),
        async (input) => {
          const before = await rowCounts(stack.db);
          const response = await fetch(stack.apiUrl, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${alice.token}` },
            body: JSON.stringify({ query: SEND_PAYMENT, variables: { input } }),
          });
          expect(response.status).toBeLessThan(500);
          const body = (await response.json()) as { data?: SendPaymentData | null; errors?: Array<{ extensions?: { code?: string } }> };
          expect(body.errors?.map((e) => e.extensions?.code) ?? []).not.toContain('INTERNAL_SERVER_ERROR');
          const accepted = body.data?.sendPayment?.payment != null;
          if (!accepted) expect(await rowCounts(stack.db)).toEqual(before);
        },
      ),
      { numRuns: 150 },
    );
    expect(stack.errorLogs).toEqual([]);
  });
});

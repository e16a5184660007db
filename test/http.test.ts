import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack, type TestCustomer } from './helpers.ts';

let stack: Stack;
let alice: TestCustomer;
beforeAll(async () => {
  stack = await startStack({ worker: false });
  alice = await stack.newCustomer(1_000);
});
afterAll(async () => {
  await stack?.stop();
});

describe('the HTTP surface', () => {
  it('answers GraphQL over GET for a request that carries a token', async () => {
    const url = `${stack.apiUrl}?query=${encodeURIComponent('{ me { accounts { balance } } }')}`;
    const response = await fetch(url, { headers: { authorization: `Bearer ${alice.token}`, accept: 'application/graphql-response+json' } });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ data: { me: { accounts: [{ balance: 1_000 }] } } });
  });

  it('refuses a mutation over GET', async () => {
    const url = `${stack.apiUrl}?query=${encodeURIComponent('mutation { createCustomer(input: { name: "X" }) { id } }')}`;
    const response = await fetch(url, { headers: { authorization: `Bearer ${stack.operatorToken}` } });
    expect(response.status).toBe(405);
  });

  it('serves the IDE to browsers from the project itself, with nothing loaded from elsewhere', async () => {
    const response = await fetch(stack.apiUrl, { headers: { accept: 'text/html,application/xhtml+xml' } });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/text\/html/);
    const html = await response.text();
    expect(html).toContain('<title>Payments API</title>');
    expect(html).toContain('sendPayment');
    expect(html).not.toMatch(/<script[^>]+src=["']https?:/i);
    expect(html).not.toMatch(/<link[^>]+href=["']https?:/i);
  });

  it('reports liveness and readiness', async () => {
    const base = stack.apiUrl.replace(/\/graphql$/, '');
    expect(await (await fetch(`${base}/healthz`)).json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
  });

  it('answers a body that is not JSON with a JSON error and no stack trace', async () => {
    const response = await fetch(stack.apiUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${alice.token}` },
      body: '{"query": "{ me { id } }"',
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toEqual({ errors: [{ message: 'Malformed request', extensions: { code: 'BAD_REQUEST' } }] });
  });

  it('answers a POST the same on every spelling of the path, echoing the request id', async () => {
    const base = stack.apiUrl.replace(/\/graphql$/, '');
    // `/graphql` and `/graphql?…` go straight to GraphQL; the others through Express's router.
    for (const path of ['/graphql', '/graphql?trace=1', '/graphql/', '/GraphQL']) {
      const response = await fetch(`${base}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${alice.token}`, 'x-request-id': `req-${path.length}` },
        body: JSON.stringify({ query: '{ me { accounts { balance } } }' }),
      });
      expect(response.status, path).toBe(200);
      expect(response.headers.get('x-request-id'), path).toBe(`req-${path.length}`);
      expect(await response.json(), path).toEqual({ data: { me: { accounts: [{ balance: 1_000 }] } } });
    }
  });

  it('refuses a body over 64 kB', async () => {
    const response = await fetch(stack.apiUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${alice.token}` },
      body: JSON.stringify({ query: `{ me { id } }`, padding: 'x'.repeat(70_000) }),
    });
    expect(response.status).toBe(413);
  });
});

describe('unexpected errors', () => {
  it('are masked for the client and logged for the operator', async () => {
    const own = await startStack({ worker: false });
    try {
      const bob = await own.newCustomer(0);
      // Break the database under the API: every read of customers now fails inside Prisma.
      await own.db.$executeRawUnsafe('ALTER TABLE customers RENAME TO customers_moved');
      const response = await fetch(own.apiUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${bob.token}` },
        body: JSON.stringify({ query: '{ me { name } }' }),
      });
      const text = await response.text();
      expect(JSON.parse(text)).toEqual({
        data: { me: null },
        errors: [{ message: 'Internal server error', path: ['me'], extensions: { code: 'INTERNAL_SERVER_ERROR' } }],
      });
      expect(text).not.toMatch(/customers|relation|prisma|at \w+ \(/i);
      expect(own.errorLogs).toHaveLength(1);
      expect(own.errorLogs[0]).toMatch(/customers/);
      expect(own.errorLogs[0]).toMatch(/"path":\["me"\]/);
      own.errorLogs.length = 0;
    } finally {
      await own.stop();
    }
  });
});

import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  type GraphQLResponse,
  paymentInput,
  SEND_PAYMENT,
  type SendPaymentData,
  type Stack,
  startStack,
  type TestCustomer,
} from './helpers.ts';
import { type StallingProxy, startStallingProxy } from './tcp-proxy.ts';
import { collect, wsClient } from './ws-helpers.ts';

/**
 * The database goes away (every connection reset, new ones refused) and comes back, behind the
 * same address, as on a restart or a promoted standby: the API says 503 on /readyz and
 * SERVICE_UNAVAILABLE with HTTP 503 on GraphQL, never a masked 500; nothing exits (every pool's
 * idle connections die under it); and it serves again by itself, its event feed included.
 */

const ACCOUNT_EVENTS = /* GraphQL */ `
  subscription($id: ID!) { accountEvents(accountId: $id) { id paymentId status } }
`;

let stack: Stack;
let proxy: StallingProxy;
let alice: TestCustomer;

beforeAll(async () => {
  const server = new URL(inject('adminUrl'));
  proxy = await startStallingProxy({ host: server.hostname, port: Number(server.port || 5432) });
  stack = await startStack({
    // The limiter's pool exists only with a limit.
    env: { SEND_PAYMENT_RATE_LIMIT_PER_MINUTE: '1000' },
    via: (url) => proxy.via(url),
  });
  alice = await stack.newCustomer(100_000);
}, 60_000);

afterAll(async () => {
  await stack?.stop();
  await proxy?.close();
});

async function post(token: string, query: string, variables?: Record<string, unknown>) {
  const response = await fetch(stack.apiUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  return {
    status: response.status,
    retryAfter: response.headers.get('retry-after'),
    body: (await response.json()) as GraphQLResponse<SendPaymentData>,
  };
}

const readyz = async () => (await fetch(stack.apiUrl.replace('/graphql', '/readyz'))).status;

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('while the database is unreachable', () => {
  it('answers 503 SERVICE_UNAVAILABLE, exits nothing, and serves again by itself when the database is back', async () => {
    const { client } = wsClient(stack.apiUrl, alice.token);
    const events = collect<{ accountEvents: { paymentId: string; status: string } }>(client, ACCOUNT_EVENTS, { id: alice.accountId });
    try {
      const before = await stack.send(alice.token, paymentInput(alice.accountId));
      expect(before.errors).toEqual([]);
      await events.until((v) => v.some((e) => e.accountEvents.paymentId === before.payment?.id));
      expect(await readyz()).toBe(200);

      await proxy.cut();

      await until('/readyz to say 503', async () => ((await readyz()) === 503 ? true : undefined));
      const input = paymentInput(alice.accountId, { idempotencyKey: 'during-outage' });
      const refused = await post(alice.token, SEND_PAYMENT, { input });
      expect(refused.status).toBe(503);
      expect(refused.retryAfter).toBe('1');
      expect(refused.body.errors?.map((e) => e.extensions?.code)).toEqual(['SERVICE_UNAVAILABLE']);
      const read = await post(alice.token, '{ me { accounts { id balance } } }');
      expect(read.status).toBe(503);
      expect(read.body.errors?.map((e) => e.extensions?.code)).toEqual(['SERVICE_UNAVAILABLE']);

      await proxy.restore();

      await until('/readyz to say 200', async () => ((await readyz()) === 200 ? true : undefined));
      // The client retries with the same key: one payment, accepted now.
      const retried = await until('the retried payment', async () => {
        const r = await post(alice.token, SEND_PAYMENT, { input });
        return r.status === 200 ? r.body.data?.sendPayment : undefined;
      });
      expect(retried.errors).toEqual([]);
      expect(retried.payment?.idempotencyKey).toBe('during-outage');
      // The feed reconnected by itself: the live subscription gets the new payment's event.
      await events.until((v) => v.some((e) => e.accountEvents.paymentId === retried.payment?.id));
      // Settlement resumed too (the worker's pools came back).
      await until('settlement', async () => {
        const p = await stack.db.payment.findUnique({ where: { id: retried.payment?.id ?? '' } });
        return p?.status === 'COMPLETED' ? p : undefined;
      });
      // Errors logged during the outage are about the outage, nothing else.
      const unrelated = stack.errorLogs.filter((l) => !/ECONNREFUSED|ECONNRESET|Connection terminated|closed the connection/i.test(l));
      expect(unrelated).toEqual([]);
    } finally {
      events.unsubscribe();
      await client.dispose();
    }
  });
});

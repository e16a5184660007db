import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startApiProcess } from '../src/app/api.ts';
import { loadConfig } from '../src/config.ts';
import { prismaSql } from '../src/db/prisma.ts';
import { START } from '../src/events/cursor.ts';
import { readEvents, type StoredEvent } from '../src/events/store.ts';
import { createAddressGuard, type Resolver, refusedRange } from '../src/webhooks/address.ts';
import { retryDelayMs } from '../src/webhooks/deliver.ts';
import { postWebhook } from '../src/webhooks/http.ts';
import { decryptSecret, encryptSecret, newSigningSecret } from '../src/webhooks/secrets.ts';
import { signatureHeader, verifyWebhookSignature } from '../src/webhooks/verify.ts';
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
import { type ReceivedWebhook, type Receiver, startReceiver } from './webhook-receiver.ts';

/**
 * Webhooks (issue 13): every event of an account reaches each of its endpoints at least once,
 * signed, through the receiver's outages, without one endpoint slowing another; SSRF refused in
 * production. Real PostgreSQL, real HTTP receivers on 127.0.0.1; retry delays shortened and the
 * worker's clock (signatures, retry windows) moved by the test.
 */

const CREATE = /* GraphQL */ `
  mutation($input: CreateWebhookEndpointInput!) {
    createWebhookEndpoint(input: $input) { endpoint { id url accountId createdAt } secret errors { code message field } }
  }
`;
const DELIVERIES = /* GraphQL */ `
  query($id: ID!) {
    account(id: $id) {
      webhookEndpoints { id url deliveries(first: 50) { edges { node { id eventId attempts status lastResponseStatus lastAttemptAt } } pageInfo { hasNextPage } } }
    }
  }
`;
const REDELIVER = /* GraphQL */ `
  mutation($endpointId: ID!, $eventId: ID!) { redeliverWebhookEvent(endpointId: $endpointId, eventId: $eventId) { id eventId status attempts } }
`;

interface CreateData {
  createWebhookEndpoint: {
    endpoint: { id: string; url: string; accountId: string } | null;
    secret: string | null;
    errors: Array<{ code: string; message: string; field: string[] | null }>;
  };
}
interface DeliveryNode {
  id: string;
  eventId: string;
  attempts: number;
  status: string;
  lastResponseStatus: number | null;
  lastAttemptAt: string | null;
}
interface DeliveriesData {
  account: { webhookEndpoints: Array<{ id: string; deliveries: { edges: Array<{ node: DeliveryNode }> } }> } | null;
}

const CONTRACT_FIELDS = ['id', 'type', 'accountId', 'paymentId', 'previousStatus', 'status', 'amount', 'occurredAt'];

let stack: Stack;
/** The worker's clock runs this far ahead of the real one. */
let clockOffsetMs = 0;
const receivers: Receiver[] = [];

beforeAll(async () => {
  stack = await startStack({
    env: {
      WEBHOOK_RETRY_DELAY_MS: '50',
      WEBHOOK_RETRY_DELAY_MAX_MS: '400',
      WEBHOOK_TIMEOUT_MS: '10000',
      WEBHOOK_DISPATCH_INTERVAL_MS: '50',
      // These tests watch every retry of a failing endpoint; its circuit is tested in webhook-fairness.test.ts.
      WEBHOOK_CIRCUIT_FAILURES: '1000',
    },
    webhookClock: { now: () => new Date(Date.now() + clockOffsetMs) },
  });
});
afterAll(async () => {
  await Promise.all(receivers.map((r) => r.close()));
  await stack?.stop();
});

async function receiver(...args: Parameters<typeof startReceiver>): Promise<Receiver> {
  const r = await startReceiver(...args);
  receivers.push(r);
  return r;
}

async function register(customer: TestCustomer, url: string): Promise<{ id: string; secret: string }> {
  const response = await gql<CreateData>(stack.apiUrl, customer.token, CREATE, { input: { accountId: customer.accountId, url } });
  const { endpoint, secret } = response.data?.createWebhookEndpoint ?? {};
  if (!endpoint || !secret) throw new Error(`createWebhookEndpoint failed: ${JSON.stringify(response)}`);
  return { id: endpoint.id, secret };
}

/** Sends `n` payments and waits until each has settled; returns every event of the account. */
async function paymentsSettled(customer: TestCustomer, n: number): Promise<StoredEvent[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 10) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(10, n - i) }, () => stack.send(customer.token, paymentInput(customer.accountId, { amount: 100 }))),
    );
    ids.push(...batch.map((r) => r.payment?.id ?? 'missing'));
  }
  await vi.waitFor(async () => expect(await stack.db.payment.count({ where: { id: { in: ids }, status: 'PENDING' } })).toBe(0), {
    timeout: 30_000,
    interval: 100,
  });
  return vi.waitFor(
    async () => {
      const events = await readEvents(prismaSql(stack.db), { after: START, limit: 10_000, accountId: customer.accountId });
      expect(events).toHaveLength(2 * n);
      return events;
    },
    { timeout: 10_000, interval: 100 },
  );
}

const deliveriesOf = (endpointId: string) => stack.db.webhookDelivery.findMany({ where: { endpointId } });

function byEvent(received: ReceivedWebhook[]): Map<string, ReceivedWebhook[]> {
  const map = new Map<string, ReceivedWebhook[]>();
  for (const r of received) map.set(r.eventId ?? '?', [...(map.get(r.eventId ?? '?') ?? []), r]);
  return map;
}

describe('delivering payment events to a receiver', () => {
  it('gives a receiver each event of 100 payments with a valid signature, and the helper refuses a tampered body or an old timestamp', async () => {
    const alice = await stack.newCustomer(1_000_000);
    const hooks = await receiver('ok');
    const endpoint = await register(alice, hooks.url);
    const events = await paymentsSettled(alice, 100);

    await vi.waitFor(() => expect(hooks.delivered().size).toBe(events.length), { timeout: 60_000, interval: 100 });
    expect([...hooks.delivered()].sort()).toEqual(events.map((e) => e.id).sort());
    const byId = new Map(events.map((e) => [e.id, e]));
    for (const request of hooks.received) {
      expect(verifyWebhookSignature({ secret: endpoint.secret, rawBody: request.rawBody, header: request.signature })).toMatchObject({
        ok: true,
      });
      const body = JSON.parse(request.rawBody) as Record<string, unknown>;
      expect(Object.keys(body)).toEqual(CONTRACT_FIELDS);
      const event = byId.get(String(body.id));
      expect(request.eventId).toBe(body.id);
      expect(body).toEqual({
        id: event?.id,
        type: `payment.${event?.status.toLowerCase()}`,
        accountId: alice.accountId,
        paymentId: event?.paymentId,
        previousStatus: event?.previousStatus,
        status: event?.status,
        amount: 100,
        occurredAt: event?.occurredAt.toISOString(),
      });
    }

    const [sample] = hooks.received;
    if (!sample) throw new Error('nothing received');
    const tampered = sample.rawBody.replace('"amount":100', '"amount":100000');
    expect(verifyWebhookSignature({ secret: endpoint.secret, rawBody: tampered, header: sample.signature })).toEqual({
      ok: false,
      reason: 'bad signature',
    });
    const t = Number(/t=(\d+)/.exec(sample.signature ?? '')?.[1]);
    expect(
      verifyWebhookSignature({ secret: endpoint.secret, rawBody: sample.rawBody, header: sample.signature, nowSeconds: t + 301 }),
    ).toEqual({ ok: false, reason: 'too old' });
    expect(verifyWebhookSignature({ secret: 'whsec_another', rawBody: sample.rawBody, header: sample.signature })).toEqual({
      ok: false,
      reason: 'bad signature',
    });

    // Visible to the customer, and the secret is nowhere in the database in plain text.
    const listed = await gql<DeliveriesData>(stack.apiUrl, alice.token, DELIVERIES, { id: alice.accountId });
    const nodes = listed.data?.account?.webhookEndpoints[0]?.deliveries.edges.map((e) => e.node) ?? [];
    expect(nodes).toHaveLength(50);
    expect(nodes.every((n) => n.status === 'SUCCEEDED' && n.lastResponseStatus === 200 && n.attempts >= 1)).toBe(true);
    const [stored] = await stack.db.$queryRaw<
      { row: string }[]
    >`SELECT row_to_json(w)::text AS row FROM webhook_endpoints w WHERE id = ${endpoint.id}::uuid`;
    expect(stored?.row).not.toContain(endpoint.secret);
    expect(stored?.row).not.toContain(Buffer.from(endpoint.secret).toString('hex'));
    expectNoErrorLogs(stack);
  });

  it('retries through 2 minutes of 500s and then delivers every event: none lost, repeats only as retries of the same event id', async () => {
    const alice = await stack.newCustomer(100_000);
    const hooks = await receiver('fail');
    const endpoint = await register(alice, hooks.url);
    const events = await paymentsSettled(alice, 5);

    // The outage lasts 2 minutes of the worker's clock; every event is tried again in each 30 s of it.
    for (let step = 1; step <= 4; step++) {
      await vi.waitFor(
        async () => {
          const deliveries = await deliveriesOf(endpoint.id);
          expect(deliveries).toHaveLength(events.length);
          expect(deliveries.every((d) => d.status === 'PENDING' && d.attempts >= step && d.lastResponseStatus === 500)).toBe(true);
        },
        { timeout: 20_000, interval: 50 },
      );
      clockOffsetMs += 30_000;
    }
    hooks.setMode('ok');
    await vi.waitFor(async () => expect((await deliveriesOf(endpoint.id)).every((d) => d.status === 'SUCCEEDED')).toBe(true), {
      timeout: 20_000,
      interval: 50,
    });

    expect([...hooks.delivered()].sort()).toEqual(events.map((e) => e.id).sort());
    const attempts = new Map((await deliveriesOf(endpoint.id)).map((d) => [d.eventId, d.attempts]));
    for (const [eventId, requests] of byEvent(hooks.received)) {
      expect(attempts.has(eventId)).toBe(true);
      // Failures, then one success; the same bytes every time, each signed.
      expect(requests.map((r) => r.answered)).toEqual([...requests.slice(0, -1).map(() => 500), 200]);
      expect(requests.length).toBe(attempts.get(eventId));
      expect(requests.length).toBeGreaterThanOrEqual(5);
      expect(new Set(requests.map((r) => r.rawBody)).size).toBe(1);
      for (const r of requests) {
        expect(
          verifyWebhookSignature({ secret: endpoint.secret, rawBody: r.rawBody, header: r.signature, toleranceSeconds: 3600 }).ok,
        ).toBe(true);
      }
    }
    expectNoErrorLogs(stack);
  });

  it('keeps delivering to a second endpoint, and settling payments, while the first never answers', async () => {
    const alice = await stack.newCustomer(100_000);
    const dead = await receiver('hang');
    const live = await receiver('ok');
    const hanging = await register(alice, dead.url);
    await register(alice, live.url);
    const events = await paymentsSettled(alice, 10);

    await vi.waitFor(() => expect(live.delivered().size).toBe(events.length), { timeout: 20_000, interval: 50 });
    // The first endpoint is still hanging (its attempts wait for a 10 s timeout), held to its own slots.
    expect(dead.inFlight()).toBeGreaterThan(0);
    expect(dead.inFlight()).toBeLessThanOrEqual(stack.config.webhooks.endpointConcurrency);
    expect(dead.received.every((r) => r.answered === null)).toBe(true);
    // Measured: from each event to its arrival at the live endpoint, far below the dead one's timeout.
    const occurred = new Map(events.map((e) => [e.id, e.occurredAt.getTime()]));
    const latencies = live.received.map((r) => r.at - (occurred.get(r.eventId ?? '') ?? 0));
    expect(Math.max(...latencies)).toBeLessThan(stack.config.webhooks.timeoutMs / 2);

    const deleted = await gql<{ deleteWebhookEndpoint: boolean }>(
      stack.apiUrl,
      alice.token,
      'mutation($id: ID!) { deleteWebhookEndpoint(id: $id) }',
      { id: hanging.id },
    );
    expect(deleted.data?.deleteWebhookEndpoint).toBe(true);
    expect((await deliveriesOf(hanging.id)).every((d) => d.status !== 'PENDING')).toBe(true);
    const listed = await gql<DeliveriesData>(stack.apiUrl, alice.token, DELIVERIES, { id: alice.accountId });
    expect(listed.data?.account?.webhookEndpoints.map((e) => e.id)).not.toContain(hanging.id);
    await dead.close();
    expectNoErrorLogs(stack);
  });

  it('ends a delivery FAILED after WEBHOOK_RETRY_HOURS of failures, shows it, and redelivers it on request', async () => {
    const alice = await stack.newCustomer(100_000);
    const bob = await stack.newCustomer(0);
    const hooks = await receiver('fail');
    const endpoint = await register(alice, hooks.url);
    const events = await paymentsSettled(alice, 1);
    // Every event's delivery exists (the dispatcher may fan the second out after the first's retries) and was retried.
    await vi.waitFor(
      async () => {
        const deliveries = await deliveriesOf(endpoint.id);
        expect(deliveries).toHaveLength(events.length);
        expect(deliveries.every((d) => d.attempts >= 2)).toBe(true);
      },
      { timeout: 20_000, interval: 50 },
    );

    clockOffsetMs += (stack.config.webhooks.retryHours + 1) * 3_600_000;
    await vi.waitFor(async () => expect((await deliveriesOf(endpoint.id)).every((d) => d.status === 'FAILED')).toBe(true), {
      timeout: 20_000,
      interval: 50,
    });
    const listed = await gql<DeliveriesData>(stack.apiUrl, alice.token, DELIVERIES, { id: alice.accountId });
    const nodes = listed.data?.account?.webhookEndpoints[0]?.deliveries.edges.map((e) => e.node) ?? [];
    expect(nodes).toHaveLength(events.length);
    for (const node of nodes) {
      expect(node).toMatchObject({ status: 'FAILED', lastResponseStatus: 500 });
      expect(node.attempts).toBeGreaterThanOrEqual(3);
      expect(node.lastAttemptAt).not.toBeNull();
    }
    // No attempt is scheduled once FAILED.
    expect((await deliveriesOf(endpoint.id)).every((d) => d.jobId === null && d.nextAttemptAt === null)).toBe(true);

    hooks.setMode('ok');
    const eventId = events[0]?.id ?? '';
    // Not Bob's endpoint: answered as if there were none. Not an event of the endpoint's account: named.
    const stranger = await gql(stack.apiUrl, bob.token, REDELIVER, { endpointId: endpoint.id, eventId });
    expect(stranger.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: ['endpointId'] });
    const wrongEvent = await gql(stack.apiUrl, alice.token, REDELIVER, { endpointId: endpoint.id, eventId: '0'.repeat(32) });
    expect(wrongEvent.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: ['eventId'] });

    const again = await gql<{ redeliverWebhookEvent: { eventId: string; status: string } }>(stack.apiUrl, alice.token, REDELIVER, {
      endpointId: endpoint.id,
      eventId,
    });
    expect(again.data?.redeliverWebhookEvent).toMatchObject({ eventId, status: 'PENDING' });
    await vi.waitFor(() => expect(hooks.delivered()).toEqual(new Set([eventId])), { timeout: 20_000, interval: 50 });
    const final = await deliveriesOf(endpoint.id);
    expect(final.find((d) => d.eventId === eventId)?.status).toBe('SUCCEEDED');
    expect(final.filter((d) => d.eventId !== eventId).every((d) => d.status === 'FAILED')).toBe(true);
    expectNoErrorLogs(stack);
  });
});

describe('registering endpoints', () => {
  it("refuses bad input with an error naming the field, another customer's account as not found, and writes nothing", async () => {
    const alice = await stack.newCustomer(0);
    const bob = await stack.newCustomer(0);
    const before = await stack.db.webhookEndpoint.count();
    const create = (token: string, input: Record<string, unknown>) => gql<CreateData>(stack.apiUrl, token, CREATE, { input });
    for (const url of ['not a url', 'ftp://127.0.0.1/hooks', 'http://user:pw@127.0.0.1/hooks', `http://127.0.0.1/${'x'.repeat(2100)}`]) {
      const r = await create(alice.token, { accountId: alice.accountId, url });
      expect(r.data?.createWebhookEndpoint).toMatchObject({
        endpoint: null,
        secret: null,
        errors: [{ code: 'INVALID_INPUT', field: ['url'] }],
      });
    }
    const badId = await create(alice.token, { accountId: 'nope', url: 'http://127.0.0.1/hooks' });
    expect(badId.data?.createWebhookEndpoint.errors).toMatchObject([{ code: 'INVALID_INPUT', field: ['accountId'] }]);
    const notYours = await create(bob.token, { accountId: alice.accountId, url: 'http://127.0.0.1/hooks' });
    expect(notYours.data?.createWebhookEndpoint.errors).toMatchObject([{ code: 'ACCOUNT_NOT_FOUND', field: ['accountId'] }]);
    const operator = await create(stack.operatorToken, { accountId: alice.accountId, url: 'http://127.0.0.1/hooks' });
    expect(operator.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect(await stack.db.webhookEndpoint.count()).toBe(before);

    const mine = await register(alice, 'http://127.0.0.1:9/hooks');
    const bobDeletes = await gql<{ deleteWebhookEndpoint: boolean }>(
      stack.apiUrl,
      bob.token,
      'mutation($id: ID!) { deleteWebhookEndpoint(id: $id) }',
      { id: mine.id },
    );
    expect(bobDeletes.data?.deleteWebhookEndpoint).toBe(false);
    expect(await gql(stack.apiUrl, bob.token, DELIVERIES, { id: alice.accountId })).toEqual({ data: { account: null } });
    expectNoErrorLogs(stack);
  });

  it.each([
    ['with NODE_ENV=production', { NODE_ENV: 'production', METRICS_PORT: '0' }],
    ['with NODE_ENV unset', {}],
  ])(
    '%s refuses http://127.0.0.1, https://10.0.0.1 and a host resolving to 169.254.169.254 as INVALID_INPUT on url',
    async (_, nodeEnv) => {
      const names: Record<string, string[]> = {
        'metadata.example.test': ['169.254.169.254'],
        'mixed.example.test': ['93.184.216.34', '10.1.2.3'],
        'public.example.test': ['93.184.216.34'],
      };
      const resolveHost: Resolver = async (host) =>
        (names[host] ?? []).map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
      // The endpoint budget is off: this test makes more attempts than a customer may in a minute.
      const config = loadConfig({
        ...nodeEnv,
        AUTH_JWT_SECRET: TEST_SECRET,
        WEBHOOK_SECRET_KEY: TEST_WEBHOOK_KEY,
        WEBHOOK_ENDPOINT_RATE_LIMIT_PER_MINUTE: '0',
      });
      const api = await startApiProcess({ config, databaseUrl: stack.databaseUrl, logger: stack.logger, port: 0, resolveHost });
      try {
        const url = api.api.url.replace('localhost', '127.0.0.1');
        const alice = await stack.newCustomer(0);
        const before = await stack.db.webhookEndpoint.count();
        const refused = [
          'http://127.0.0.1/hooks',
          'https://127.0.0.1/hooks',
          'https://10.0.0.1/hooks',
          'https://metadata.example.test/latest',
          'https://mixed.example.test/hooks',
          'https://[::ffff:169.254.169.254]/',
          'https://[fd00:ec2::254]/',
          'https://100.64.0.1/',
          'https://unknown.example.test/',
          'http://public.example.test/hooks',
        ];
        for (const target of refused) {
          const r = await gql<CreateData>(url, alice.token, CREATE, { input: { accountId: alice.accountId, url: target } });
          expect(r.data?.createWebhookEndpoint, target).toMatchObject({
            endpoint: null,
            errors: [{ code: 'INVALID_INPUT', field: ['url'] }],
          });
        }
        expect(await stack.db.webhookEndpoint.count()).toBe(before);
        const ok = await gql<CreateData>(url, alice.token, CREATE, {
          input: { accountId: alice.accountId, url: 'https://public.example.test/hooks' },
        });
        expect(ok.data?.createWebhookEndpoint.errors).toEqual([]);
        expect(ok.data?.createWebhookEndpoint.secret).toMatch(/^whsec_/);
      } finally {
        await api.stop();
      }
    },
  );
});

describe('webhook building blocks', () => {
  it('classifies addresses: only public unicast is allowed, IPv4-mapped forms judged as IPv4', () => {
    for (const address of [
      '127.0.0.1',
      '10.0.0.1',
      '172.16.5.4',
      '192.168.1.1',
      '169.254.169.254',
      '100.64.0.1',
      '0.0.0.0',
      '224.0.0.1',
      '::1',
      '::',
      'fe80::1',
      'fc00::1',
      'fd00:ec2::254',
      '::ffff:127.0.0.1',
      '::ffff:169.254.169.254',
      '64:ff9b::a00:1',
    ]) {
      expect(refusedRange(address), address).not.toBeNull();
    }
    for (const address of ['93.184.216.34', '8.8.8.8', '2606:4700:4700::1111', '::ffff:8.8.8.8'])
      expect(refusedRange(address), address).toBeNull();
  });

  it('checks the address again at delivery time and never connects when the host now resolves to a private address', async () => {
    const hooks = await receiver('ok');
    const port = new URL(hooks.url).port;
    const guard = createAddressGuard({ strict: true, resolve: async () => [{ address: '127.0.0.1', family: 4 }] });
    const outcome = await postWebhook({
      url: `https://rebound.example.test:${port}/hooks`,
      body: '{}',
      headers: {},
      timeoutMs: 1000,
      guard,
    });
    expect(outcome).toMatchObject({ kind: 'refused' });
    expect(hooks.received).toHaveLength(0);
    // Outside production the same address is fine, and redirects are answered, not followed.
    const open = createAddressGuard({ strict: false, resolve: async () => [{ address: '127.0.0.1', family: 4 }] });
    expect(
      await postWebhook({ url: `http://rebound.example.test:${port}/hooks`, body: '{}', headers: {}, timeoutMs: 1000, guard: open }),
    ).toEqual({ kind: 'response', status: 200 });
    expect(hooks.received).toHaveLength(1);
  });

  it('backs off exponentially with jitter, capped', () => {
    const settings = { retryDelayMs: 1_000, retryDelayMaxMs: 60_000 };
    expect([1, 2, 3, 4].map((n) => retryDelayMs(n, settings, () => 0))).toEqual([500, 1_000, 2_000, 4_000]);
    expect([1, 2, 3, 4].map((n) => retryDelayMs(n, settings, () => 1))).toEqual([1_000, 2_000, 4_000, 8_000]);
    expect(retryDelayMs(50, settings, () => 1)).toBe(60_000);
  });

  it('stores secrets encrypted, bound to their endpoint', () => {
    const key = Buffer.from(TEST_WEBHOOK_KEY, 'hex');
    const secret = newSigningSecret();
    const stored = encryptSecret(key, 'endpoint-a', secret);
    expect(stored.toString('latin1')).not.toContain(secret);
    expect(decryptSecret(key, 'endpoint-a', stored)).toBe(secret);
    expect(() => decryptSecret(key, 'endpoint-b', stored)).toThrow();
    expect(() => decryptSecret(Buffer.alloc(32, 1), 'endpoint-a', stored)).toThrow();
  });

  it('signs as the contract says and verifies with the helper', () => {
    const header = signatureHeader('whsec_x', 1_700_000_000, '{"a":1}');
    expect(header).toMatch(/^t=1700000000,v1=[0-9a-f]{64}$/);
    expect(verifyWebhookSignature({ secret: 'whsec_x', rawBody: '{"a":1}', header, nowSeconds: 1_700_000_100 })).toEqual({
      ok: true,
      timestamp: 1_700_000_000,
    });
    expect(verifyWebhookSignature({ secret: 'whsec_x', rawBody: '{"a":1}', header: 'garbage' })).toEqual({
      ok: false,
      reason: 'malformed',
    });
  });

  it('requires WEBHOOK_SECRET_KEY in production and refuses a key that is not 32 bytes', () => {
    expect(() => loadConfig({ NODE_ENV: 'production', AUTH_JWT_SECRET: TEST_SECRET })).toThrow(/WEBHOOK_SECRET_KEY/);
    expect(() => loadConfig({ WEBHOOK_SECRET_KEY: 'abcd' })).toThrow(/WEBHOOK_SECRET_KEY/);
    expect(loadConfig({ WEBHOOK_SECRET_KEY: TEST_WEBHOOK_KEY }).webhooks.secretKey).toEqual(Buffer.from(TEST_WEBHOOK_KEY, 'hex'));
  });
});

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { expectNoErrorLogs, gql, paymentInput, type Stack, startStack, type TestCustomer } from './helpers.ts';
import { type Receiver, startReceiver } from './webhook-receiver.ts';

/**
 * Webhook fairness between customers: one customer's endpoints cannot take every delivery slot of
 * a worker, and an endpoint that keeps failing stops being called for a while (its circuit opens).
 * Real receivers over HTTP; short timeouts and delays through the settings.
 */

const CREATE = /* GraphQL */ `
  mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { endpoint { id } errors { code message } } }
`;

const receivers: Receiver[] = [];
async function receiver(mode: 'ok' | 'fail' | 'hang'): Promise<Receiver> {
  const r = await startReceiver(mode);
  receivers.push(r);
  return r;
}

async function register(stack: Stack, customer: TestCustomer, url: string): Promise<string> {
  const response = await gql<{ createWebhookEndpoint: { endpoint: { id: string } | null } }>(stack.apiUrl, customer.token, CREATE, {
    input: { accountId: customer.accountId, url },
  });
  const id = response.data?.createWebhookEndpoint.endpoint?.id;
  if (!id) throw new Error(`createWebhookEndpoint failed: ${JSON.stringify(response)}`);
  return id;
}

afterAll(async () => {
  await Promise.all(receivers.map((r) => r.close()));
});

describe('one customer cannot take every delivery slot', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      env: {
        // Attempts to a hanging endpoint hold their slot this long: far longer than the delay allowed below.
        WEBHOOK_TIMEOUT_MS: '15000',
        WEBHOOK_DISPATCH_INTERVAL_MS: '50',
        WEBHOOK_CONCURRENCY: '16',
        WEBHOOK_ENDPOINT_CONCURRENCY: '2',
      },
    });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it("delivers to another customer's healthy endpoint within seconds while ten endpoints of one customer hang", async () => {
    const hog = await stack.newCustomer(100_000);
    const other = await stack.newCustomer(100_000);
    const hanging = await Promise.all(Array.from({ length: 10 }, () => receiver('hang')));
    for (const r of hanging) await register(stack, hog, r.url);
    const healthy = await receiver('ok');
    await register(stack, other, healthy.url);

    // Two payments, each created then completed: four events owed to each of the ten endpoints.
    for (let i = 0; i < 2; i++) await stack.send(hog.token, paymentInput(hog.accountId, { amount: 100 }));
    const inFlight = () => hanging.reduce((n, r) => n + r.inFlight(), 0);
    await vi.waitFor(() => expect(inFlight()).toBeGreaterThanOrEqual(4), { timeout: 15_000, interval: 50 });

    const sentAt = Date.now();
    const sent = await stack.send(other.token, paymentInput(other.accountId, { amount: 100 }));
    expect(sent.errors).toEqual([]);
    await vi.waitFor(() => expect(healthy.received.length).toBeGreaterThan(0), { timeout: 20_000, interval: 20 });
    const delayMs = (healthy.received[0]?.at ?? Number.POSITIVE_INFINITY) - sentAt;
    expect(delayMs).toBeLessThan(4_000);
    // The hog's endpoints hold no more than its share of the worker's slots.
    expect(inFlight()).toBeLessThanOrEqual(stack.config.webhooks.customerConcurrency);
    expectNoErrorLogs(stack);
  });
});

describe('an endpoint that keeps failing', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      env: {
        WEBHOOK_RETRY_DELAY_MS: '50',
        WEBHOOK_RETRY_DELAY_MAX_MS: '100',
        WEBHOOK_DISPATCH_INTERVAL_MS: '50',
        WEBHOOK_CIRCUIT_FAILURES: '3',
        WEBHOOK_CIRCUIT_OPEN_SECONDS: '3600',
      },
    });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('is not called again once its circuit opens; its deliveries back off without a request', async () => {
    const customer = await stack.newCustomer(100_000);
    const failing = await receiver('fail');
    const endpointId = await register(stack, customer, failing.url);
    await stack.send(customer.token, paymentInput(customer.accountId, { amount: 100 }));
    // Retries every 50-100 ms: without a circuit the receiver would see dozens of requests.
    await vi.waitFor(
      async () => {
        const deliveries = await stack.db.webhookDelivery.findMany({ where: { endpointId } });
        expect(deliveries.reduce((n, d) => n + d.attempts, 0)).toBeGreaterThanOrEqual(12);
        expect(deliveries.some((d) => d.lastError?.includes('circuit open'))).toBe(true);
      },
      { timeout: 20_000, interval: 100 },
    );
    // Three failures in a row open it; an attempt already in flight then (two per endpoint) still ends.
    const requests = failing.received.length;
    expect(requests).toBeGreaterThanOrEqual(3);
    expect(requests).toBeLessThanOrEqual(3 + stack.config.webhooks.endpointConcurrency - 1);
    const attempts = async () => (await stack.db.webhookDelivery.findMany({ where: { endpointId } })).reduce((n, d) => n + d.attempts, 0);
    const before = await attempts();
    await vi.waitFor(async () => expect(await attempts()).toBeGreaterThan(before + 10), { timeout: 20_000, interval: 100 });
    expect(failing.received).toHaveLength(requests);
    expectNoErrorLogs(stack);
  });
});

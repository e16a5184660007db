import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { audit, formatAudit } from '../src/audit.ts';
import { prismaSql } from '../src/db/prisma.ts';
import { START } from '../src/events/cursor.ts';
import { readEvents } from '../src/events/store.ts';
import { verifyWebhookSignature } from '../src/webhooks/verify.ts';
import { startProcess } from '../tools/processes.ts';
import { gql, paymentInput, type Stack, startStack, workerProcessEnv } from './helpers.ts';
import { type Receiver, startReceiver } from './webhook-receiver.ts';

/**
 * A worker process is SIGKILLed while it is delivering webhooks (requests open at the receiver).
 * Nothing may be lost: a fresh worker delivers every event, at least once, signed; the jobs the
 * dead worker held come back when their lease expires.
 */
let stack: Stack;
let hooks: Receiver;
beforeAll(async () => {
  stack = await startStack({ worker: false });
  // Each answer takes a while, so the kill lands with deliveries in flight.
  hooks = await startReceiver('ok', { delayMs: 150 });
});
afterAll(async () => {
  await hooks?.close();
  await stack?.stop();
});

const workerEnv = () =>
  workerProcessEnv(stack, {
    PAYMENT_JOB_EXPIRE_SECONDS: '2',
    PROVIDER_TIMEOUT_MS: '1000',
    WEBHOOK_TIMEOUT_MS: '1000',
    WEBHOOK_RETRY_DELAY_MS: '100',
    WEBHOOK_RETRY_DELAY_MAX_MS: '500',
    WEBHOOK_DISPATCH_INTERVAL_MS: '50',
    WEBHOOK_CONCURRENCY: '4',
    // Every attempt counts here, timeouts of a loaded machine included; the circuit is tested in webhook-fairness.test.ts.
    WEBHOOK_CIRCUIT_FAILURES: '1000',
  });

describe('a worker killed with SIGKILL during webhook deliveries', () => {
  it('loses nothing: the next worker delivers every event, signed, at least once', async () => {
    const alice = await stack.newCustomer(100_000);
    const created = await gql<{ createWebhookEndpoint: { endpoint: { id: string } | null; secret: string | null } }>(
      stack.apiUrl,
      alice.token,
      'mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { endpoint { id } secret } }',
      { input: { accountId: alice.accountId, url: hooks.url } },
    );
    const secret = created.data?.createWebhookEndpoint.secret ?? '';
    const doomed = await startProcess('main-worker.ts', workerEnv(), 'worker started');
    for (let i = 0; i < 30; i++) await stack.send(alice.token, paymentInput(alice.accountId, { amount: 100 }));

    await vi.waitFor(
      () => {
        expect(hooks.received.length).toBeGreaterThanOrEqual(10);
        expect(hooks.inFlight()).toBeGreaterThan(0);
      },
      { timeout: 30_000, interval: 10 },
    );
    await doomed.kill();
    const deliveredAtKill = hooks.delivered().size;

    const rescuer = await startProcess('main-worker.ts', workerEnv(), 'worker started');
    try {
      const events = await vi.waitFor(
        async () => {
          expect(await stack.db.payment.count({ where: { accountId: alice.accountId, status: 'PENDING' } })).toBe(0);
          const all = await readEvents(prismaSql(stack.db), { after: START, limit: 1_000, accountId: alice.accountId });
          expect(all).toHaveLength(60);
          expect(hooks.delivered().size).toBe(60);
          return all;
        },
        { timeout: 60_000, interval: 100 },
      );
      expect(deliveredAtKill).toBeLessThan(60);
      expect([...hooks.delivered()].sort()).toEqual(events.map((e) => e.id).sort());
      for (const r of hooks.received) {
        expect(verifyWebhookSignature({ secret, rawBody: r.rawBody, header: r.signature, toleranceSeconds: 3600 }).ok).toBe(true);
      }
      await vi.waitFor(async () => expect(await stack.db.webhookDelivery.count({ where: { status: { not: 'SUCCEEDED' } } })).toBe(0), {
        timeout: 30_000,
        interval: 100,
      });
      const report = await audit({ prisma: stack.db });
      expect(report.ok, formatAudit(report)).toBe(true);
    } finally {
      expect(await rescuer.stop()).toBe(0);
    }
  });
});

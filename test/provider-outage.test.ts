import type { PgBoss } from 'pg-boss';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { queuePolicy, startQueue } from '../src/app/queue.ts';
import { loadConfig } from '../src/config.ts';
import { settlementHandlers } from '../src/jobs/handlers.ts';
import { type RunningJobs, startConsumers } from '../src/jobs/worker.ts';
import { createMetrics } from '../src/ops/metrics.ts';
import { createSettlement } from '../src/payments/settlement.ts';
import { createProviderClient, type ProviderClientOptions } from '../src/provider/client.ts';
import { paymentInput, type Stack, startStack } from './helpers.ts';

// A retry budget of about three seconds (2 retries, 1 s apart), and a provider that stops calls
// for longer than that: an open circuit, or a Retry-After. Attempts that never reached the provider
// must not spend that budget.
let stack: Stack;
let boss: PgBoss | null = null;
let workers: RunningJobs | null = null;
beforeEach(async () => {
  stack = await startStack({
    worker: false,
    env: { PAYMENT_RETRY_LIMIT: '2', PAYMENT_RETRY_DELAY_SECONDS: '1', PAYMENT_RETRY_DELAY_MAX_SECONDS: '1' },
  });
});
afterEach(async () => {
  await workers?.stop();
  workers = null;
  await boss?.stop({ graceful: false, close: true });
  boss = null;
  await stack?.stop();
});

/** A worker on this stack's queue whose provider client has the given breaker settings. */
async function startWorker(client: Partial<ProviderClientOptions>) {
  const provider = createProviderClient({ baseUrl: stack.emulator.url, apiKey: stack.config.providerApiKey, timeoutMs: 1_000, ...client });
  boss = await startQueue({ databaseUrl: stack.databaseUrl, config: stack.config, logger: stack.logger });
  workers = await startConsumers({
    boss,
    prisma: stack.db,
    policy: queuePolicy(stack.config),
    handlers: settlementHandlers(createSettlement({ prisma: stack.db, provider, logger: stack.logger, metrics: createMetrics() })),
    logger: stack.logger,
    concurrency: 2,
    polling: { busySeconds: 0.5, idleSeconds: 0.5 },
    providerEventsPollSeconds: 1,
    webhooks: { concurrency: 1, endpointConcurrency: 1 },
  });
}

/** Sends a payment, waits for the one real failure that stops calls, then lets the provider recover. */
async function paymentThroughOutage(recover: () => void) {
  const alice = await stack.newCustomer(10_000);
  const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 2_500 }));
  const paymentId = sent.payment?.id ?? '';
  await vi.waitFor(async () => expect(await stack.db.paymentAttempt.count({ where: { paymentId } })).toBe(1), {
    timeout: 10_000,
    interval: 50,
  });
  recover();
  const settled = await vi.waitFor(
    async () => {
      const payment = await stack.db.payment.findUniqueOrThrow({
        where: { id: paymentId },
        include: { attempts: { orderBy: { id: 'asc' } }, account: true },
      });
      expect(payment.status).not.toBe('PENDING');
      return payment;
    },
    { timeout: 30_000, interval: 100 },
  );
  const held = (await (
    await fetch(`${stack.emulator.url}/admin/payments`, { headers: { 'x-api-key': stack.config.providerApiKey } })
  ).json()) as Array<{ idempotencyKey: string }>;
  return { settled, heldByProvider: held.filter((p) => p.idempotencyKey === paymentId).length };
}

describe('a provider outage longer than the retry budget', () => {
  it('does not fail payments while the circuit is open, and settles them once it closes', async () => {
    // One failure opens the circuit for 6 s: twice the whole retry budget.
    await startWorker({ breakerThreshold: 1, breakerHalfOpenAfterMs: 6_000 });
    stack.emulator.setFaults({ errorRate: 1 });
    const { settled, heldByProvider } = await paymentThroughOutage(() => stack.emulator.setFaults({ errorRate: 0 }));
    expect(settled.status).toBe('COMPLETED');
    expect(settled.attempts.map((a) => a.outcome)).toEqual(['RETRY', 'COMPLETED']);
    expect(settled.account.balance).toBe(7_500n);
    expect(heldByProvider).toBe(1);
  });

  it('does not fail payments while a Retry-After pauses calls, and settles them after it', async () => {
    await startWorker({ breakerThreshold: 1_000 });
    stack.emulator.setFaults({ rateLimitRate: 1, retryAfterSeconds: 6 });
    const { settled, heldByProvider } = await paymentThroughOutage(() => stack.emulator.setFaults({ rateLimitRate: 0 }));
    expect(settled.status).toBe('COMPLETED');
    expect(settled.attempts.map((a) => a.outcome)).toEqual(['RETRY', 'COMPLETED']);
    expect(heldByProvider).toBe(1);
    // Never more than one live settlement job for the payment at any time.
    const live = await stack.db.$queryRaw<{ n: bigint }[]>`
      SELECT count(*) AS n FROM pgboss.job WHERE name = 'payment.settle' AND data->>'paymentId' = ${settled.id} AND state IN ('created', 'retry', 'active')`;
    expect(Number(live[0]?.n)).toBe(0);
  });
});

describe('job expiry against the provider timeout', () => {
  it('refuses a job expiry shorter than twice the provider timeout, naming PAYMENT_JOB_EXPIRE_SECONDS', () => {
    expect(() => loadConfig({ PAYMENT_JOB_EXPIRE_SECONDS: '9', PROVIDER_TIMEOUT_MS: '5000' })).toThrow(/PAYMENT_JOB_EXPIRE_SECONDS/);
    expect(loadConfig({ PAYMENT_JOB_EXPIRE_SECONDS: '10', PROVIDER_TIMEOUT_MS: '5000' }).queue.jobExpireSeconds).toBe(10);
  });
});

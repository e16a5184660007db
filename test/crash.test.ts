import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { audit, formatAudit } from '../src/audit.ts';
import type { Failpoint } from '../src/failpoints.ts';
import { startProcess } from '../tools/processes.ts';
import { paymentInput, type Stack, startStack, workerProcessEnv } from './helpers.ts';

/**
 * A worker is killed with SIGKILL at each dangerous point of settlement (a failpoint makes it
 * kill itself exactly there). Nothing may be left inconsistent, and a fresh worker must finish
 * the job: the job's lease expires after 2 s here (30 s in production) and is handed on.
 */
let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ worker: false, env: { PAYMENT_JOB_EXPIRE_SECONDS: '2', PROVIDER_TIMEOUT_MS: '1000' } });
});
afterAll(async () => {
  await stack?.stop();
});

const workerEnv = (failpoints: string) => workerProcessEnv(stack, { PAYMENT_RETRY_DELAY_SECONDS: '1', FAILPOINTS: failpoints });

async function providerHolds(paymentId: string): Promise<number> {
  const response = await fetch(`${stack.emulator.url}/admin/payments`, { headers: { 'x-api-key': stack.config.providerApiKey } });
  const held = (await response.json()) as Array<{ idempotencyKey: string; createRequests: number }>;
  return held.find((p) => p.idempotencyKey === paymentId)?.createRequests ?? 0;
}

async function crashThenRecover(failpoint: Failpoint, recipientSortCode: string) {
  const alice = await stack.newCustomer(10_000);
  const doomed = await startProcess('main-worker.ts', workerEnv(failpoint), 'worker started');
  const sent = await stack.send(
    alice.token,
    paymentInput(alice.accountId, { amount: 3_000, recipient: { name: 'Grace', sortCode: recipientSortCode, accountNumber: '12345678' } }),
  );
  const paymentId = sent.payment?.id ?? '';
  expect(await doomed.exited).toEqual({ code: null, signal: 'SIGKILL' });

  // Right after the crash: still PENDING, the money still held, nothing half-written.
  const afterCrash = await stack.db.payment.findUniqueOrThrow({
    where: { id: paymentId },
    include: { ledgerEntries: true, account: true },
  });
  expect(afterCrash.status).toBe('PENDING');
  expect(afterCrash.ledgerEntries.map((e) => e.kind)).toEqual(['PAYMENT_DEBIT']);
  expect(afterCrash.account.balance).toBe(7_000n);
  const heldAfterCrash = await providerHolds(paymentId);

  const rescuer = await startProcess('main-worker.ts', workerEnv(''), 'worker started');
  try {
    const settled = await vi.waitFor(
      async () => {
        const p = await stack.db.payment.findUniqueOrThrow({ where: { id: paymentId }, include: { ledgerEntries: true, account: true } });
        expect(p.status).not.toBe('PENDING');
        return p;
      },
      { timeout: 30_000, interval: 100 },
    );
    const report = await audit({ prisma: stack.db, provider: { url: stack.emulator.url, apiKey: stack.config.providerApiKey } });
    expect(report.ok, formatAudit(report)).toBe(true);
    return { settled, heldAfterCrash, heldAtEnd: await providerHolds(paymentId) };
  } finally {
    expect(await rescuer.stop()).toBe(0);
  }
}

describe('a worker killed with SIGKILL', () => {
  it('before calling the provider: the payment is sent once, by the next worker', async () => {
    const { settled, heldAfterCrash, heldAtEnd } = await crashThenRecover('settle.before-provider', '123456');
    expect(heldAfterCrash).toBe(0);
    expect(settled.status).toBe('COMPLETED');
    expect(heldAtEnd).toBe(1);
    expect(settled.account.balance).toBe(7_000n);
  });

  it('after the provider accepted: the next worker finds it there and completes it without a second POST', async () => {
    const { settled, heldAfterCrash, heldAtEnd } = await crashThenRecover('settle.after-provider-accepted', '123456');
    expect(heldAfterCrash).toBe(1);
    expect(settled.status).toBe('COMPLETED');
    expect(heldAtEnd).toBe(1);
  });

  it('during the refund: nothing of the refund is kept, and the next worker refunds exactly once', async () => {
    const { settled, heldAtEnd } = await crashThenRecover('settle.during-refund', '000000');
    expect(settled.status).toBe('CANCELLED');
    expect(settled.ledgerEntries.map((e) => e.kind).sort()).toEqual(['PAYMENT_DEBIT', 'PAYMENT_REFUND']);
    expect(settled.account.balance).toBe(10_000n);
    expect(heldAtEnd).toBe(0);
  });

  it('in the middle of its first provider call: the next worker asks first and the payment is sent once', async () => {
    const alice = await stack.newCustomer(10_000);
    stack.emulator.setFaults({ stallKeys: ['*'] });
    const doomed = await startProcess('main-worker.ts', workerEnv(''), 'worker started');
    let paymentId = '';
    try {
      const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 3_000 }));
      paymentId = sent.payment?.id ?? '';
      // The worker's POST has reached the provider and waits there for its answer.
      await vi.waitFor(() => expect(stack.emulator.requests().byKey[paymentId]?.create).toBe(1), { timeout: 30_000, interval: 50 });
      await doomed.kill();
    } finally {
      // The provider goes on to accept the POST whose sender is gone.
      stack.emulator.setFaults({ stallKeys: [] });
    }
    await vi.waitFor(async () => expect(await providerHolds(paymentId)).toBe(1), { timeout: 30_000, interval: 50 });

    const rescuer = await startProcess('main-worker.ts', workerEnv(''), 'worker started');
    try {
      await vi.waitFor(
        async () => expect((await stack.db.payment.findUniqueOrThrow({ where: { id: paymentId } })).status).toBe('COMPLETED'),
        { timeout: 30_000, interval: 100 },
      );
    } finally {
      expect(await rescuer.stop()).toBe(0);
    }
    expect(stack.emulator.requests().byKey[paymentId]).toEqual({ get: 1, create: 1, void: 0 });
    const settled = await stack.db.payment.findUniqueOrThrow({ where: { id: paymentId }, include: { attempts: true, account: true } });
    expect(settled.attempts.map((a) => a.outcome)).toEqual(['COMPLETED']);
    expect(settled.account.balance).toBe(7_000n);
    const report = await audit({ prisma: stack.db, provider: { url: stack.emulator.url, apiKey: stack.config.providerApiKey } });
    expect(report.ok, formatAudit(report)).toBe(true);
  });
});

import { CircuitState } from 'cockatiel';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startEmulator, type RunningEmulator } from '../src/emulator/server.ts';
import { createProviderClient } from '../src/provider/client.ts';

const KEY = 'client-test-key';
let emulator: RunningEmulator;
beforeAll(async () => {
  emulator = await startEmulator({ apiKey: KEY, port: 0 });
});
afterAll(async () => {
  await emulator?.close();
});

const paymentRequest = (idempotencyKey: string) => ({
  idempotencyKey,
  amount: 5,
  currency: 'GBP',
  sender: { name: 'A', sortCode: '123456', accountNumber: '12345678' },
  recipient: { name: 'B', sortCode: '123456', accountNumber: '12345678' },
  reference: null,
});

describe('the provider client', () => {
  it('opens the circuit after consecutive failures, fails fast while open, and closes after a good probe', async () => {
    const client = createProviderClient({ baseUrl: emulator.url, apiKey: KEY, timeoutMs: 1_000, breakerThreshold: 3, breakerHalfOpenAfterMs: 300 });
    emulator.setFaults({ errorRate: 1 });
    for (let i = 0; i < 3; i++) expect(await client.getPayment('p')).toEqual({ kind: 'transient', detail: 'HTTP 500' });
    expect(client.circuitState()).toBe(CircuitState.Open);

    // While open, not even a slow provider is waited for: the answer is immediate.
    emulator.setFaults({ errorRate: 0, latencyMs: 800 });
    const started = performance.now();
    expect(await client.getPayment('p')).toEqual({ kind: 'transient', detail: 'circuit open: provider failing' });
    expect(performance.now() - started).toBeLessThan(100);

    emulator.setFaults({ latencyMs: 0 });
    // After halfOpenAfter, one probe goes through; a good answer closes the circuit.
    await vi.waitFor(async () => expect(await client.getPayment('p')).toEqual({ kind: 'absent' }), { timeout: 5_000, interval: 50 });
    expect(client.circuitState()).toBe(CircuitState.Closed);
  });

  it('honours Retry-After: no call reaches the provider until it has passed', async () => {
    const client = createProviderClient({ baseUrl: emulator.url, apiKey: KEY, timeoutMs: 1_000 });
    emulator.setFaults({ rateLimitRate: 1 });
    expect(await client.getPayment('p')).toEqual({ kind: 'transient', detail: 'HTTP 429', retryAfterSeconds: 1 });
    emulator.setFaults({ rateLimitRate: 0 });
    expect(await client.getPayment('p')).toMatchObject({ kind: 'transient', detail: expect.stringMatching(/Retry-After/) });
    await vi.waitFor(async () => expect(await client.getPayment('p')).toEqual({ kind: 'absent' }), { timeout: 3_000, interval: 100 });
  });

  it('times out every call', async () => {
    const client = createProviderClient({ baseUrl: emulator.url, apiKey: KEY, timeoutMs: 200 });
    emulator.setFaults({ timeoutRate: 1 });
    try {
      expect(await client.createPayment(paymentRequest('slow'))).toEqual({ kind: 'transient', detail: 'timed out after 200 ms' });
    } finally {
      emulator.setFaults({ timeoutRate: 0 });
    }
  });

  it('classifies a 400 as rejected and a 422 as a conflict', async () => {
    const client = createProviderClient({ baseUrl: emulator.url, apiKey: KEY, timeoutMs: 1_000 });
    const request = paymentRequest('k422');
    expect(await client.createPayment(request)).toMatchObject({ kind: 'accepted' });
    expect(await client.createPayment({ ...request, amount: 6 })).toMatchObject({ kind: 'conflict' });
    expect(await client.createPayment({ ...request, idempotencyKey: 'k400', recipient: { ...request.recipient, sortCode: '000000' } })).toEqual({
      kind: 'rejected',
      code: 'RECIPIENT_REJECTED',
      message: 'the recipient bank rejected the payment',
    });
    expect(await client.voidPayment('k422')).toMatchObject({ kind: 'accepted' });
    expect(await client.voidPayment('never-sent')).toEqual({ kind: 'voided' });
  });
});

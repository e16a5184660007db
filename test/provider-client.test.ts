import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CircuitState } from 'cockatiel';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type RunningEmulator, startEmulator } from '../src/emulator/server.ts';
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
    const client = createProviderClient({
      baseUrl: emulator.url,
      apiKey: KEY,
      timeoutMs: 1_000,
      breakerThreshold: 3,
      breakerHalfOpenAfterMs: 300,
    });
    emulator.setFaults({ errorRate: 1 });
    for (let i = 0; i < 3; i++) expect(await client.getPayment('p')).toEqual({ kind: 'transient', detail: 'HTTP 500' });
    expect(client.circuitState()).toBe(CircuitState.Open);

    // While open, not even a slow provider is waited for: the answer is immediate.
    emulator.setFaults({ errorRate: 0, latencyMs: 800 });
    const started = performance.now();
    expect(await client.getPayment('p')).toEqual({ kind: 'unavailable', detail: 'circuit open: provider failing', resumeInSeconds: 1 });
    expect(performance.now() - started).toBeLessThan(100);

    emulator.setFaults({ latencyMs: 0 });
    // After halfOpenAfter, one probe goes through; a good answer closes the circuit.
    await vi.waitFor(async () => expect(await client.getPayment('p')).toEqual({ kind: 'absent' }), { timeout: 5_000, interval: 50 });
    expect(client.circuitState()).toBe(CircuitState.Closed);
  });

  it('honours Retry-After: no call reaches the provider until it has passed', async () => {
    const client = createProviderClient({ baseUrl: emulator.url, apiKey: KEY, timeoutMs: 1_000 });
    emulator.setFaults({ rateLimitRate: 1 });
    // A 429 is the provider refusing to handle the request: certainly not acted on.
    expect(await client.getPayment('p')).toEqual({ kind: 'transient', detail: 'HTTP 429', retryAfterSeconds: 1, notActedOn: true });
    emulator.setFaults({ rateLimitRate: 0 });
    expect(await client.getPayment('p')).toMatchObject({
      kind: 'unavailable',
      detail: expect.stringMatching(/Retry-After/),
      resumeInSeconds: 1,
    });
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
    expect(
      await client.createPayment({ ...request, idempotencyKey: 'k400', recipient: { ...request.recipient, sortCode: '000000' } }),
    ).toEqual({
      kind: 'rejected',
      code: 'RECIPIENT_REJECTED',
      message: 'the recipient bank rejected the payment',
    });
    expect(await client.voidPayment('k422')).toMatchObject({ kind: 'accepted' });
    expect(await client.voidPayment('never-sent')).toEqual({ kind: 'voided' });
  });
});

describe('answers that are not the provider speaking', () => {
  // A real HTTP server standing where the provider should be, answering what a misrouted proxy, a
  // load balancer's error page or a provider in an unexpected state would answer.
  let reply: { status: number; body: string; type: string } = { status: 200, body: '', type: 'application/json' };
  let server: Server;
  let url: string;
  beforeAll(async () => {
    server = createServer((req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(reply.status, { 'content-type': reply.type }).end(reply.body));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });
  const answer = (status: number, body: unknown, type = 'application/json') => {
    reply = { status, body: typeof body === 'string' ? body : JSON.stringify(body), type };
  };
  const html = '<html><body><h1>400 Bad Request</h1>nginx</body></html>';
  const client = () => createProviderClient({ baseUrl: url, apiKey: KEY, timeoutMs: 1_000, breakerThreshold: 1_000 });

  it('treats a 400 without the provider’s error body as unknown, never as a rejection', async () => {
    answer(400, html, 'text/html');
    expect(await client().createPayment(paymentRequest('p1'))).toMatchObject({ kind: 'transient' });
    answer(400, { message: 'bad request' });
    expect(await client().createPayment(paymentRequest('p1'))).toMatchObject({ kind: 'transient' });
    answer(400, { error: { code: 'RECIPIENT_REJECTED', message: 'the recipient bank rejected the payment' } });
    expect(await client().createPayment(paymentRequest('p1'))).toEqual({
      kind: 'rejected',
      code: 'RECIPIENT_REJECTED',
      message: 'the recipient bank rejected the payment',
    });
  });

  it('counts a payment as accepted only when the provider’s record says "accepted"', async () => {
    for (const status of ['pending', 'failed', 'voided']) {
      answer(200, { id: 'pp_1', idempotencyKey: 'p1', status });
      expect(await client().getPayment('p1'), status).toMatchObject({ kind: 'transient' });
      answer(201, { id: 'pp_1', idempotencyKey: 'p1', status });
      expect(await client().createPayment(paymentRequest('p1')), status).toMatchObject({ kind: 'transient' });
    }
    answer(200, '<html>OK</html>', 'text/html');
    expect(await client().getPayment('p1')).toMatchObject({ kind: 'transient' });
    answer(200, { id: 'pp_1', idempotencyKey: 'p1', status: 'accepted' });
    expect(await client().getPayment('p1')).toEqual({ kind: 'accepted', providerId: 'pp_1' });
  });

  it('believes "absent" and "voided" only from the provider’s own answers', async () => {
    answer(404, '<html>Not Found</html>', 'text/html');
    expect(await client().getPayment('p1')).toMatchObject({ kind: 'transient' });
    answer(410, '<html>Gone</html>', 'text/html');
    expect(await client().getPayment('p1')).toMatchObject({ kind: 'transient' });
    answer(200, '<html>OK</html>', 'text/html');
    expect(await client().voidPayment('p1')).toMatchObject({ kind: 'transient' });

    answer(404, { error: { code: 'NOT_FOUND', message: 'no such payment' } });
    expect(await client().getPayment('p1')).toEqual({ kind: 'absent' });
    answer(410, { error: { code: 'VOIDED', message: 'this payment was voided' } });
    expect(await client().getPayment('p1')).toEqual({ kind: 'voided' });
    answer(200, { idempotencyKey: 'p1', status: 'voided' });
    expect(await client().voidPayment('p1')).toEqual({ kind: 'voided' });
  });
});

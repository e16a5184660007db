import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../src/emulator/server.ts';

const KEY = 'emulator-test-key';
let emulator: RunningEmulator;

beforeAll(async () => {
  emulator = await startEmulator({ apiKey: KEY, port: 0 });
});
afterAll(async () => {
  await emulator?.close();
});

async function call(method: string, path: string, body?: unknown, apiKey = KEY) {
  const response = await fetch(`${emulator.url}${path}`, {
    method,
    headers: { 'x-api-key': apiKey, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

const payment = (key: string, overrides: Record<string, unknown> = {}) => ({
  idempotencyKey: key,
  amount: 1000,
  currency: 'GBP',
  sender: { name: 'Alice', sortCode: '608371', accountNumber: '10000001' },
  recipient: { name: 'Grace', sortCode: '123456', accountNumber: '12345678' },
  reference: 'Lunch',
  ...overrides,
});

describe('the provider emulator', () => {
  it('requires its API key', async () => {
    expect((await call('GET', '/v1/payments/x', undefined, 'wrong')).status).toBe(401);
    expect((await call('GET', '/admin/faults', undefined, '')).status).toBe(401);
  });

  it('accepts a payment once and replays it for the same key and body', async () => {
    const first = await call('POST', '/v1/payments', payment('p1'));
    expect(first).toEqual({ status: 201, body: { id: expect.any(String), idempotencyKey: 'p1', status: 'accepted' } });
    expect(await call('POST', '/v1/payments', payment('p1'))).toEqual({ ...first, status: 200 });
    expect(await call('GET', '/v1/payments/p1')).toEqual({ ...first, status: 200 });
  });

  it('answers 422 for the same key with another body', async () => {
    await call('POST', '/v1/payments', payment('p2'));
    expect((await call('POST', '/v1/payments', payment('p2', { amount: 999 }))).status).toBe(422);
  });

  it('answers 404 for an unknown payment', async () => {
    expect((await call('GET', '/v1/payments/never-seen')).status).toBe(404);
  });

  it('rejects an invalid payment and the 000000 sort code with 400', async () => {
    expect(await call('POST', '/v1/payments', payment('p3', { amount: -1 }))).toMatchObject({
      status: 400,
      body: { error: { code: 'INVALID_PAYMENT' } },
    });
    expect(
      await call('POST', '/v1/payments', payment('p4', { recipient: { name: 'X', sortCode: '000000', accountNumber: '12345678' } })),
    ).toMatchObject({ status: 400, body: { error: { code: 'RECIPIENT_REJECTED' } } });
  });

  it('voids an unknown key for good, and refuses to void an accepted one', async () => {
    expect((await call('POST', '/v1/payments/p5/void')).status).toBe(200);
    expect((await call('GET', '/v1/payments/p5')).status).toBe(410);
    expect((await call('POST', '/v1/payments', payment('p5'))).status).toBe(410);
    await call('POST', '/v1/payments', payment('p6'));
    expect((await call('POST', '/v1/payments/p6/void')).status).toBe(409);
  });

  it('injects faults set through the admin API, and lists accepted payments', async () => {
    expect((await call('PUT', '/admin/faults', { errorRate: 1 })).status).toBe(200);
    expect(await call('GET', '/admin/faults')).toMatchObject({ body: { errorRate: 1, rateLimitRate: 0 } });
    expect((await call('GET', '/v1/payments/p1')).status).toBe(500);
    await call('PUT', '/admin/faults', { rateLimitRate: 1 });
    const limited = await fetch(`${emulator.url}/v1/payments/p1`, { headers: { 'x-api-key': KEY } });
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toBe('1');
    await call('PUT', '/admin/faults', { acceptThenFailRate: 1 });
    expect((await call('POST', '/v1/payments', payment('p7'))).status).toBe(500);
    await call('PUT', '/admin/faults', {});
    expect((await call('GET', '/v1/payments/p7')).status).toBe(200);
    expect((await call('PUT', '/admin/faults', { errorRate: 2 })).status).toBe(400);

    const listed = await fetch(`${emulator.url}/admin/payments`, { headers: { 'x-api-key': KEY } });
    const keys = ((await listed.json()) as Array<{ idempotencyKey: string }>).map((p) => p.idempotencyKey);
    expect(keys).toEqual(expect.arrayContaining(['p1', 'p2', 'p6', 'p7']));
    expect(keys).not.toContain('p5');
  });

  it('holds a request past the client timeout when asked to time out', async () => {
    emulator.setFaults({ timeoutRate: 1 });
    try {
      await expect(
        fetch(`${emulator.url}/v1/payments/p1`, { headers: { 'x-api-key': KEY }, signal: AbortSignal.timeout(200) }),
      ).rejects.toThrow(/timeout|aborted/i);
    } finally {
      emulator.setFaults({ timeoutRate: 0 });
    }
  });

  describe('Confirmation of Payee (POST /v1/payee-checks)', () => {
    const checkOf = (name: string, sortCode = '123456', accountNumber = '12345678') =>
      call('POST', '/v1/payee-checks', { name, sortCode, accountNumber });

    it('answers by the fixed rule on the name held for the account', async () => {
      expect(await checkOf('Grace Hopper')).toEqual({ status: 200, body: { result: 'MATCH', matchedName: null } });
      expect((await checkOf('grace  hopper.')).body).toEqual({ result: 'MATCH', matchedName: null });
      // At most two edits apart, or the same surname: close, with the name held.
      expect((await checkOf('Grace Hoppr')).body).toEqual({ result: 'CLOSE_MATCH', matchedName: 'Grace Hopper' });
      expect((await checkOf('Grase Hoppr')).body).toEqual({ result: 'CLOSE_MATCH', matchedName: 'Grace Hopper' });
      expect((await checkOf('Mrs Hopper')).body).toEqual({ result: 'CLOSE_MATCH', matchedName: 'Grace Hopper' });
      expect((await checkOf('Grxse Hoppr')).body).toEqual({ result: 'NO_MATCH', matchedName: null });
      expect((await checkOf('Grace Hopper', '123456', '00000000')).body).toEqual({ result: 'NO_MATCH', matchedName: null });
    });

    it('holds the names set through /admin/payee-names', async () => {
      expect(
        (await call('PUT', '/admin/payee-names', { name: 'Katherine Johnson', sortCode: '404040', accountNumber: '40404040' })).status,
      ).toBe(200);
      expect((await checkOf('Katherine Johnson', '404040', '40404040')).body).toEqual({ result: 'MATCH', matchedName: null });
    });

    it('refuses a malformed request with 400', async () => {
      expect(
        (await call('POST', '/v1/payee-checks', { name: 'Grace Hopper', sortCode: '12-34-56', accountNumber: '12345678' })).status,
      ).toBe(400);
    });

    it('answers 503 UNAVAILABLE under an injected error', async () => {
      emulator.setFaults({ errorRate: 1 });
      try {
        expect(await checkOf('Grace Hopper')).toEqual({ status: 503, body: { result: 'UNAVAILABLE', matchedName: null } });
      } finally {
        emulator.setFaults({ errorRate: 0 });
      }
    });
  });
});

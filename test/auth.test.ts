import { createHmac } from 'node:crypto';
import { jwtVerify, SignJWT } from 'jose';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createTokenVerifier, signToken } from '../src/auth.ts';

/**
 * The token verifier keeps verified tokens until they expire: cached or not, it must accept exactly
 * what jose's jwtVerify (HS256 pinned, exp required) accepts.
 */

const SECRET = 'auth-test-secret-that-is-at-least-32-bytes-long';
const key = new TextEncoder().encode(SECRET);
const b64 = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);
const customer = { role: 'customer', sub: '00000000-0000-4000-8000-000000000001' };

/** A compact JWS with any header and payload, signed (HS256) with `secret`. */
function forge(header: unknown, payload: unknown, secret = SECRET): string {
  const signingInput = `${b64(header)}.${b64(payload)}`;
  return `${signingInput}.${createHmac('sha256', secret).update(signingInput).digest('base64url')}`;
}

const cases: Array<[string, () => Promise<string>]> = [
  ['a valid token', () => signToken({ role: 'customer', customerId: customer.sub }, SECRET, 600)],
  ['an expired token', async () => forge({ alg: 'HS256' }, { ...customer, exp: now() - 1 })],
  ['a token expiring this second', async () => forge({ alg: 'HS256' }, { ...customer, exp: now() })],
  ['a token not valid yet (nbf)', async () => forge({ alg: 'HS256' }, { ...customer, exp: now() + 600, nbf: now() + 300 })],
  ['a token valid since (nbf)', async () => forge({ alg: 'HS256' }, { ...customer, exp: now() + 600, nbf: now() - 5 })],
  ['a string iat', async () => forge({ alg: 'HS256' }, { ...customer, exp: now() + 600, iat: 'yesterday' })],
  ['a string nbf', async () => forge({ alg: 'HS256' }, { ...customer, exp: now() + 600, nbf: String(now() - 5) })],
  ['a string exp', async () => forge({ alg: 'HS256' }, { ...customer, exp: String(now() + 600) })],
  ['no exp', async () => forge({ alg: 'HS256' }, customer)],
  ['alg none', async () => `${b64({ alg: 'none' })}.${b64({ ...customer, exp: now() + 600 })}.`],
  ['alg HS512', () => new SignJWT(customer).setProtectedHeader({ alg: 'HS512' }).setExpirationTime('10m').sign(key)],
  ['a crit header', async () => forge({ alg: 'HS256', crit: ['exp'], exp: 1 }, { ...customer, exp: now() + 600 })],
  ['another secret', async () => forge({ alg: 'HS256' }, { ...customer, exp: now() + 600 }, `${SECRET}!`)],
  ['an array payload', async () => forge({ alg: 'HS256' }, [1, 2])],
  ['a payload that is not JSON', async () => forge({ alg: 'HS256' }, 'not json')],
  [
    'a changed payload',
    async () => {
      const [h, , s] = (await signToken({ role: 'customer', customerId: customer.sub }, SECRET, 600)).split('.');
      return `${h}.${b64({ role: 'operator', sub: 'mallory', exp: now() + 600 })}.${s}`;
    },
  ],
  ['a changed signature', async () => `${(await signToken({ role: 'operator', operatorId: 'a' }, SECRET, 600)).slice(0, -2)}AA`],
  ['four segments', async () => `${await signToken({ role: 'operator', operatorId: 'a' }, SECRET, 600)}.x`],
  ['garbage', async () => 'not-a-token'],
];

describe('token verification', () => {
  it.each(cases)('accepts %s exactly when jose does', async (_name, make) => {
    const token = await make();
    const jose = await jwtVerify(token, key, { algorithms: ['HS256'], requiredClaims: ['exp'] }).then(
      () => true,
      () => false,
    );
    for (const cacheSize of [0, 10]) {
      const verifier = createTokenVerifier(SECRET, { cacheSize });
      // Twice: the second time a cached token answers from the cache.
      for (let i = 0; i < 2; i++) {
        const ours = await verifier.verify(token).then(
          () => true,
          () => false,
        );
        expect(ours).toBe(jose);
      }
    }
  });

  afterEach(() => {
    vi.useRealTimers();
  });

  it('refuses a cached token once it has expired', async () => {
    vi.useFakeTimers({ now: new Date('2026-12-02T10:00:00Z'), toFake: ['Date'] });
    const verifier = createTokenVerifier(SECRET);
    const token = await signToken({ role: 'operator', operatorId: 'alice@bank' }, SECRET, 60);
    expect((await verifier.verify(token)).viewer).toEqual({ role: 'operator', operatorId: 'alice@bank' });
    vi.setSystemTime(new Date('2026-12-02T10:00:59Z'));
    expect((await verifier.verify(token)).viewer).toEqual({ role: 'operator', operatorId: 'alice@bank' });
    vi.setSystemTime(new Date('2026-12-02T10:01:00Z'));
    await expect(verifier.verify(token)).rejects.toThrow('token expired');
  });

  it('keeps at most cacheSize tokens, and every one still verifies', async () => {
    const verifier = createTokenVerifier(SECRET, { cacheSize: 2 });
    const tokens = await Promise.all(['a', 'b', 'c'].map((id) => signToken({ role: 'operator', operatorId: id }, SECRET, 600)));
    for (let round = 0; round < 2; round++) {
      for (const [i, token] of tokens.entries()) {
        expect((await verifier.verify(token)).viewer).toEqual({ role: 'operator', operatorId: ['a', 'b', 'c'][i] });
      }
    }
  });

  it('hands out sessions nobody can change', async () => {
    const verifier = createTokenVerifier(SECRET);
    const token = await signToken({ role: 'customer', customerId: customer.sub }, SECRET, 600);
    const session = await verifier.verify(token);
    expect(() => {
      (session.viewer as { customerId: string }).customerId = 'someone else';
    }).toThrow(TypeError);
    expect((await verifier.verify(token)).viewer).toEqual({ role: 'customer', customerId: customer.sub });
  });
});

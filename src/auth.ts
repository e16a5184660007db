import { createHmac, createSecretKey, type KeyObject, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';

/**
 * Bearer tokens: HS256 JWTs signed with AUTH_JWT_SECRET. `role` says who is calling; `sub` says
 * which customer (their customer id) or which operator (a person's id, e.g. `alice@bank`, recorded
 * on everything they change). `exp` is required, at most `maxTokenSeconds` ahead, and `alg` is pinned.
 */
export type Viewer = { role: 'customer'; customerId: string } | { role: 'operator'; operatorId: string };

/** An operator's id: printable, no spaces, short enough to read in an audit trail. */
export const operatorId = z.string().regex(/^[A-Za-z0-9._:@+-]{1,100}$/, 'must be 1-100 characters of [A-Za-z0-9._:@+-]');

const claims = z.discriminatedUnion('role', [
  z.object({ role: z.literal('customer'), sub: z.uuid() }),
  z.object({ role: z.literal('operator'), sub: operatorId }),
]);

/** How long a token may live, at most, from now: a leaked long-lived token is refused. */
export const DEFAULT_MAX_TOKEN_SECONDS = 24 * 3600;

/** A verified token: who is calling, and until when. */
export interface Session {
  viewer: Viewer;
  expiresAt: Date;
}

export class AuthError extends Error {
  override name = 'AuthError';
}

export interface TokenVerifier {
  verify(token: string): Promise<Session>;
  /** The session of an `Authorization` header value, null when it is absent. Throws AuthError when it is bad. */
  fromHeader(header: unknown): Promise<Session | null>;
}

/** Verified tokens kept per process by default (see `createTokenVerifier`): a few MB at most. */
export const DEFAULT_VERIFIED_TOKEN_CACHE = 10_000;

/** What a base64url segment of a compact JWS may hold (no padding, nothing else). */
const BASE64URL = /^[A-Za-z0-9_-]+$/;

/** The decoded JSON object of a base64url segment, or null when it is not one. */
function jsonObject(segment: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/**
 * Verifies a compact HS256 JWS with node's HMAC, synchronously (jose goes through WebCrypto: a
 * promise and a thread-pool hop per token), with jose's rules for what this service accepts: the
 * header's `alg` pinned to HS256, no `crit` extensions, a constant-time signature comparison, a
 * JSON object payload, `exp` required and in the future, `nbf` (if any) not in the future, `iat`
 * (if any) a number. Returns the payload; throws AuthError.
 */
function verifyHs256(token: string, key: KeyObject): Record<string, unknown> & { exp: number } {
  const invalid = () => new AuthError('token is invalid');
  const parts = token.split('.');
  const [header, body, signature] = parts;
  if (parts.length !== 3 || !header || !body || !signature) throw invalid();
  if (!BASE64URL.test(header) || !BASE64URL.test(body) || !BASE64URL.test(signature)) throw invalid();
  const protectedHeader = jsonObject(header);
  if (protectedHeader?.alg !== 'HS256' || 'crit' in protectedHeader) throw invalid();
  const expected = createHmac('sha256', key).update(`${header}.${body}`).digest();
  const given = Buffer.from(signature, 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw invalid();
  const payload = jsonObject(body);
  if (!payload || typeof payload.exp !== 'number') throw invalid();
  const now = Math.floor(Date.now() / 1000);
  if (payload.nbf !== undefined && (typeof payload.nbf !== 'number' || payload.nbf > now)) throw invalid();
  if (payload.iat !== undefined && typeof payload.iat !== 'number') throw invalid();
  if (payload.exp <= now) throw new AuthError('token expired');
  return payload as Record<string, unknown> & { exp: number };
}

/**
 * Verifies bearer tokens. A token that verified is kept (the token string is the key, so only the
 * very same bytes hit) until its `exp`, in a least-recently-used map of at most `cacheSize`
 * entries: a client sends the same token with every request, and a hit skips the HMAC and both
 * JSON parses. Expiry is checked on every hit; failures are never kept. `cacheSize` 0 turns it off.
 */
export function createTokenVerifier(secret: string, options: { maxTokenSeconds?: number; cacheSize?: number } = {}): TokenVerifier {
  const key = createSecretKey(Buffer.from(secret, 'utf8'));
  const maxTokenSeconds = options.maxTokenSeconds ?? DEFAULT_MAX_TOKEN_SECONDS;
  const cacheSize = options.cacheSize ?? DEFAULT_VERIFIED_TOKEN_CACHE;
  const verified = new Map<string, { session: Session; exp: number }>();

  function verifyUncached(token: string): { session: Session; exp: number } {
    const payload = verifyHs256(token, key);
    const parsed = claims.safeParse(payload);
    if (!parsed.success) throw new AuthError('token claims are invalid');
    // A minute of slack for clocks that disagree a little.
    if (payload.exp > Date.now() / 1000 + maxTokenSeconds + 60) throw new AuthError('token lifetime exceeds the maximum');
    const viewer: Viewer =
      parsed.data.role === 'customer'
        ? { role: 'customer', customerId: parsed.data.sub }
        : { role: 'operator', operatorId: parsed.data.sub };
    // Shared by every request that presents this token: nobody may change it.
    return { session: Object.freeze({ viewer: Object.freeze(viewer), expiresAt: new Date(payload.exp * 1000) }), exp: payload.exp };
  }

  function verifySync(token: string): Session {
    const hit = verified.get(token);
    if (hit) {
      verified.delete(token);
      // The same rule as an uncached token's: expired once `exp` is not after now (whole seconds).
      if (hit.exp <= Math.floor(Date.now() / 1000)) throw new AuthError('token expired');
      verified.set(token, hit);
      return hit.session;
    }
    const entry = verifyUncached(token);
    if (cacheSize > 0) {
      if (verified.size >= cacheSize) verified.delete(verified.keys().next().value as string);
      verified.set(token, entry);
    }
    return entry.session;
  }

  const verify = async (token: string): Promise<Session> => verifySync(token);
  return {
    verify,
    async fromHeader(header) {
      if (header === undefined || header === null || header === '') return null;
      if (typeof header !== 'string') throw new AuthError('expected "Authorization: Bearer <token>"');
      const match = /^Bearer\s+(\S+)$/i.exec(header.trim());
      if (!match?.[1]) throw new AuthError('expected "Authorization: Bearer <token>"');
      return verifySync(match[1]);
    },
  };
}

/** Signs a token for `viewer` that expires after `ttlSeconds`. */
export async function signToken(viewer: Viewer, secret: string, ttlSeconds: number): Promise<string> {
  // Loaded when a token is first signed (the CLI, tests, the demo): an API process only verifies.
  const { SignJWT } = await import('jose');
  const jwt = new SignJWT({ role: viewer.role })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds);
  jwt.setSubject(viewer.role === 'customer' ? viewer.customerId : viewer.operatorId);
  return jwt.sign(new TextEncoder().encode(secret));
}

import { createSigner, createVerifier, TokenError } from 'fast-jwt';
import { LRUCache } from 'lru-cache';
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

/** RFC 7519's times are NumericDates: a token whose `iat` or `nbf` is anything else is refused. */
const timeClaims = z.object({ exp: z.number(), iat: z.number().optional(), nbf: z.number().optional() });

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

/**
 * Verifies bearer tokens with fast-jwt (HS256 pinned, `exp` required), synchronously: a WebCrypto
 * verify is a promise and a thread-pool hop per token, several times the CPU of node's own HMAC
 * (bench/jwt-verify.ts). A token that verified is kept (the token string is the
 * key, so only the very same bytes hit) until its `exp`, in a least-recently-used cache of at most
 * `cacheSize` entries: a client sends the same token with every request, and a hit skips the HMAC,
 * both JSON parses and the claims check. Expiry is checked on every hit; failures are never kept.
 * `cacheSize` 0 turns it off.
 */
export function createTokenVerifier(secret: string, options: { maxTokenSeconds?: number; cacheSize?: number } = {}): TokenVerifier {
  const maxTokenSeconds = options.maxTokenSeconds ?? DEFAULT_MAX_TOKEN_SECONDS;
  const cacheSize = options.cacheSize ?? DEFAULT_VERIFIED_TOKEN_CACHE;
  const verified = cacheSize > 0 ? new LRUCache<string, { session: Session; exp: number }>({ max: cacheSize }) : null;

  // HS256 only, `exp` required; synchronous (node's own HMAC), so a token costs no thread-pool hop.
  const verifyJwt = createVerifier({ key: secret, algorithms: ['HS256'], requiredClaims: ['exp'] });

  function verifyUncached(token: string): { session: Session; exp: number } {
    let payload: Record<string, unknown>;
    try {
      payload = verifyJwt(token);
    } catch (error) {
      if (error instanceof TokenError && error.code === TokenError.codes.expired) throw new AuthError('token expired');
      throw new AuthError('token is invalid');
    }
    const parsed = claims.safeParse(payload);
    const times = timeClaims.safeParse(payload);
    if (!parsed.success || !times.success) throw new AuthError('token claims are invalid');
    // A minute of slack for clocks that disagree a little.
    const { exp } = times.data;
    if (exp > Date.now() / 1000 + maxTokenSeconds + 60) throw new AuthError('token lifetime exceeds the maximum');
    const viewer: Viewer =
      parsed.data.role === 'customer'
        ? { role: 'customer', customerId: parsed.data.sub }
        : { role: 'operator', operatorId: parsed.data.sub };
    // Shared by every request that presents this token: nobody may change it.
    return { session: Object.freeze({ viewer: Object.freeze(viewer), expiresAt: new Date(exp * 1000) }), exp };
  }

  async function verify(token: string): Promise<Session> {
    const hit = verified?.get(token);
    if (hit) {
      // The rule for an uncached token: expired once `exp` is not after now (whole seconds).
      if (hit.exp <= Math.floor(Date.now() / 1000)) {
        verified?.delete(token);
        throw new AuthError('token expired');
      }
      return hit.session;
    }
    const entry = verifyUncached(token);
    verified?.set(token, entry);
    return entry.session;
  }

  return {
    verify,
    async fromHeader(header) {
      if (header === undefined || header === null || header === '') return null;
      if (typeof header !== 'string') throw new AuthError('expected "Authorization: Bearer <token>"');
      const match = /^Bearer\s+(\S+)$/i.exec(header.trim());
      if (!match?.[1]) throw new AuthError('expected "Authorization: Bearer <token>"');
      return verify(match[1]);
    },
  };
}

/** Signs a token for `viewer` that expires after `ttlSeconds`. */
export async function signToken(viewer: Viewer, secret: string, ttlSeconds: number): Promise<string> {
  const sign = createSigner({ key: secret, algorithm: 'HS256', expiresIn: ttlSeconds * 1000 });
  return sign({ role: viewer.role, sub: viewer.role === 'customer' ? viewer.customerId : viewer.operatorId });
}

import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Webhook signatures, for us (signing) and for integrators (verifying; the README shows the
 * same steps). `Payments-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
 * No dependency on the rest of the service: copy this file into a receiver as it is.
 */

/** Default for how old a signature may be before it is refused as a replay. */
export const DEFAULT_TOLERANCE_SECONDS = 300;

export function signatureHeader(secret: string, timestampSeconds: number, rawBody: string): string {
  const mac = createHmac('sha256', secret).update(`${timestampSeconds}.${rawBody}`).digest('hex');
  return `t=${timestampSeconds},v1=${mac}`;
}

export type Verification = { ok: true; timestamp: number } | { ok: false; reason: 'malformed' | 'too old' | 'bad signature' };

/**
 * Checks a `Payments-Signature` header against the raw request body (the bytes as received,
 * before any JSON parsing) and the endpoint's secret. Refuses timestamps more than
 * `toleranceSeconds` from `nowSeconds`, so a captured request cannot be replayed later.
 */
export function verifyWebhookSignature(options: {
  secret: string;
  rawBody: string | Buffer;
  header: string | null | undefined;
  toleranceSeconds?: number;
  nowSeconds?: number;
}): Verification {
  const match = /^t=(\d{1,12}),v1=([0-9a-f]{64})$/.exec(options.header ?? '');
  if (!match?.[1] || !match[2]) return { ok: false, reason: 'malformed' };
  const timestamp = Number(match[1]);
  const now = options.nowSeconds ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - timestamp) > (options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS)) return { ok: false, reason: 'too old' };
  const expected = createHmac('sha256', options.secret).update(`${timestamp}.`).update(options.rawBody).digest();
  const given = Buffer.from(match[2], 'hex');
  return timingSafeEqual(expected, given) ? { ok: true, timestamp } : { ok: false, reason: 'bad signature' };
}

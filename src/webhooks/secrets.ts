import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

/**
 * Endpoint signing secrets. A secret is shown to the customer once, at creation; the database
 * holds it only encrypted with AES-256-GCM under WEBHOOK_SECRET_KEY, which lives in the
 * environment (the platform's secret store), never in the database. The endpoint id is the
 * additional authenticated data, so a ciphertext copied onto another endpoint's row does not
 * decrypt. Stored as: version (1 byte) | IV (12) | tag (16) | ciphertext.
 */

const VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** A new signing secret: `whsec_` and 32 random bytes in base64url. */
export function newSigningSecret(): string {
  return `whsec_${randomBytes(32).toString('base64url')}`;
}

export function encryptSecret(key: Buffer, endpointId: string, secret: string): Buffer {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(endpointId));
  const ciphertext = Buffer.concat([cipher.update(secret, 'utf8'), cipher.final()]);
  return Buffer.concat([Buffer.from([VERSION]), iv, cipher.getAuthTag(), ciphertext]);
}

/** The secret, or an error when the key, the endpoint or the bytes do not match. */
export function decryptSecret(key: Buffer, endpointId: string, stored: Uint8Array): string {
  const bytes = Buffer.from(stored);
  if (bytes[0] !== VERSION) throw new Error(`unknown webhook secret format ${bytes[0]}`);
  const iv = bytes.subarray(1, 1 + IV_BYTES);
  const tag = bytes.subarray(1 + IV_BYTES, 1 + IV_BYTES + TAG_BYTES);
  const decipher = createDecipheriv('aes-256-gcm', key, iv);
  decipher.setAAD(Buffer.from(endpointId));
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(bytes.subarray(1 + IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
}

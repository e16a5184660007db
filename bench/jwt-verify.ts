import { jwtVerify } from 'jose';
import { createTokenVerifier, signToken } from '../src/auth.ts';

/**
 * `node bench/jwt-verify.ts`: CPU time (process.cpuUsage: this thread and libuv's pool alike) per
 * token verification, three ways: jose's jwtVerify (WebCrypto, what the service used before), the
 * service's verifier with its cache off (fast-jwt, synchronous, on every token), and with its cache
 * (every token seen before). N distinct
 * tokens, verified round-robin, after a warm-up.
 */
const N = Number(process.env.JWT_TOKENS ?? 2_000);
const ROUNDS = Number(process.env.JWT_ROUNDS ?? 10);
const secret = 'bench-secret-that-is-long-enough-for-hs256-0123456789';
const tokens = await Promise.all(
  Array.from({ length: N }, (_, i) =>
    signToken({ role: 'customer', customerId: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}` }, secret, 3600),
  ),
);
const key = new TextEncoder().encode(secret);

async function measure(name: string, verify: (token: string) => Promise<unknown>): Promise<void> {
  for (const t of tokens) await verify(t);
  const cpu = process.cpuUsage();
  const started = performance.now();
  for (let r = 0; r < ROUNDS; r++) for (const t of tokens) await verify(t);
  const used = process.cpuUsage(cpu);
  const count = N * ROUNDS;
  process.stdout.write(
    `| ${name} | ${((used.user + used.system) / count).toFixed(1)} | ${(((performance.now() - started) * 1000) / count).toFixed(1)} |\n`,
  );
}

process.stdout.write(`${N} tokens x ${ROUNDS} rounds\n\n| verifier | CPU µs per verify | wall µs per verify |\n|---|---|---|\n`);
await measure('jose jwtVerify (WebCrypto)', (t) => jwtVerify(t, key, { algorithms: ['HS256'], requiredClaims: ['exp'] }));
const uncached = createTokenVerifier(secret, { cacheSize: 0 });
await measure('verifier, no cache (fast-jwt + claims)', (t) => uncached.verify(t));
const cached = createTokenVerifier(secret);
await measure('verifier with its cache, all hits (+ claims)', (t) => cached.verify(t));

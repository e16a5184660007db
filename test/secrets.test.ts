import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { startApiProcess } from '../src/app/api.ts';
import { startWorkerProcess } from '../src/app/worker.ts';
import { createTokenVerifier, signToken } from '../src/auth.ts';
import { ConfigError, loadConfig } from '../src/config.ts';
import { createLogger } from '../src/logger.ts';
import { demoAllowed, loadDemoConfig } from '../tools/demo.ts';
import { TEST_SECRET, TEST_WEBHOOK_KEY } from './helpers.ts';

// The development secret that src/config.ts used to fall back to: a token signed with it must
// never open anything but `npm start`'s own demo.
const ROOT = new URL('..', import.meta.url).pathname;
const run = promisify(execFile);

/** Runs `node <script> ...args` with exactly `env` (plus PATH); resolves with its exit code and output. */
async function runScript(script: string, args: string[], env: Record<string, string>) {
  return run(process.execPath, [script, ...args], { cwd: ROOT, env: { PATH: process.env.PATH ?? '', ...env }, timeout: 30_000 }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
  );
}

describe('the JWT secret', () => {
  it('is absent unless AUTH_JWT_SECRET is set, outside the all-in-one demo', () => {
    expect(loadConfig({}).jwtSecret).toBeUndefined();
    expect(loadConfig({ AUTH_JWT_SECRET: TEST_SECRET }).jwtSecret).toBe(TEST_SECRET);
  });

  it('has a built-in development value only when the caller allows it, and never in production', () => {
    expect(loadConfig({}, { allowDevSecret: true }).jwtSecret).toEqual(expect.any(String));
    expect(loadConfig({ AUTH_JWT_SECRET: TEST_SECRET }, { allowDevSecret: true }).jwtSecret).toBe(TEST_SECRET);
    expect(() => loadConfig({ NODE_ENV: 'production' }, { allowDevSecret: true })).toThrow(/AUTH_JWT_SECRET/);
  });

  it('stops the API process at start-up with a message naming AUTH_JWT_SECRET', async () => {
    const result = await runScript('src/main-api.ts', [], { DATABASE_URL: 'postgresql://127.0.0.1:1/none', PORT: '0' });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/AUTH_JWT_SECRET/);
  });

  it('stops the token command without AUTH_JWT_SECRET, and signs with the demo secret only with --dev', async () => {
    const refused = await runScript('src/cli/token.ts', ['--operator', 'alice@bank'], {});
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/AUTH_JWT_SECRET/);
    expect(refused.stdout).toBe('');

    const dev = await runScript('src/cli/token.ts', ['--operator', 'alice@bank', '--dev'], {});
    expect(dev.code).toBe(0);
    const devSecret = loadConfig({}, { allowDevSecret: true }).jwtSecret ?? '';
    expect((await createTokenVerifier(devSecret).verify(dev.stdout.trim())).viewer).toEqual({ role: 'operator', operatorId: 'alice@bank' });

    const productionDev = await runScript('src/cli/token.ts', ['--operator', 'alice@bank', '--dev'], { NODE_ENV: 'production' });
    expect(productionDev.code).toBe(1);
    expect(productionDev.stderr).toMatch(/AUTH_JWT_SECRET/);
  });

  it('signs with AUTH_JWT_SECRET, and gives an operator token the operator named, or the default', async () => {
    const named = await runScript('src/cli/token.ts', ['--operator', 'alice@bank'], { AUTH_JWT_SECRET: TEST_SECRET });
    expect((await createTokenVerifier(TEST_SECRET).verify(named.stdout.trim())).viewer).toEqual({
      role: 'operator',
      operatorId: 'alice@bank',
    });
    const bare = await runScript('src/cli/token.ts', ['--operator'], { AUTH_JWT_SECRET: TEST_SECRET });
    expect(bare.code).toBe(0);
    expect((await createTokenVerifier(TEST_SECRET).verify(bare.stdout.trim())).viewer).toMatchObject({
      role: 'operator',
      operatorId: expect.stringMatching(/^operator:/),
    });
  });
});

describe('token lifetime', () => {
  const sign = (hours: number, claims: Record<string, unknown> = { role: 'operator', sub: 'alice@bank' }) =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime(Math.floor(Date.now() / 1000) + hours * 3600)
      .sign(new TextEncoder().encode(TEST_SECRET));

  it('refuses a token whose expiry is further ahead than AUTH_MAX_TOKEN_HOURS', async () => {
    const verifier = createTokenVerifier(TEST_SECRET, { maxTokenSeconds: loadConfig({ AUTH_MAX_TOKEN_HOURS: '24' }).maxTokenSeconds });
    await expect(verifier.verify(await sign(24 * 365))).rejects.toThrow(/lifetime/);
    await expect(verifier.verify(await sign(25))).rejects.toThrow(/lifetime/);
    await expect(verifier.verify(await sign(23))).resolves.toMatchObject({ viewer: { role: 'operator' } });
  });

  it('defaults AUTH_MAX_TOKEN_HOURS to 24 and names it when it is bad', () => {
    expect(loadConfig({}).maxTokenSeconds).toBe(24 * 3600);
    expect(() => loadConfig({ AUTH_MAX_TOKEN_HOURS: '0' })).toThrow(/AUTH_MAX_TOKEN_HOURS/);
  });

  it('refuses an operator token without a subject', async () => {
    const verifier = createTokenVerifier(TEST_SECRET);
    await expect(verifier.verify(await sign(1, { role: 'operator' }))).rejects.toThrow(/claims/);
    await expect(verifier.verify(await sign(1, { role: 'operator', sub: '' }))).rejects.toThrow(/claims/);
    const signed = await signToken({ role: 'operator', operatorId: 'bob@bank' }, TEST_SECRET, 60);
    expect((await verifier.verify(signed)).viewer).toEqual({ role: 'operator', operatorId: 'bob@bank' });
  });
});

describe('the webhook secret key and the SSRF guard, whatever NODE_ENV says', () => {
  // Nothing listens here: a process that got as far as connecting would fail with another error.
  const nowhere = 'postgresql://127.0.0.1:1/none';
  const logger = createLogger({ level: 'silent', name: 'test' });

  it('refuses to start an API or a worker without WEBHOOK_SECRET_KEY, naming it, before connecting to anything', async () => {
    for (const env of [{ AUTH_JWT_SECRET: TEST_SECRET }, { NODE_ENV: 'development', AUTH_JWT_SECRET: TEST_SECRET }]) {
      const config = loadConfig(env);
      expect(config.webhooks.secretKey).toBeUndefined();
      const api = startApiProcess({ config, databaseUrl: nowhere, logger, port: 0 });
      await expect(api).rejects.toThrow(ConfigError);
      await expect(api).rejects.toThrow(/WEBHOOK_SECRET_KEY/);
      const worker = startWorkerProcess({ config, databaseUrl: nowhere, providerUrl: 'http://127.0.0.1:1', logger });
      await expect(worker).rejects.toThrow(ConfigError);
      await expect(worker).rejects.toThrow(/WEBHOOK_SECRET_KEY/);
    }
  });

  it('stops the API and the worker processes at start-up with a message naming WEBHOOK_SECRET_KEY', async () => {
    const env = { DATABASE_URL: nowhere, AUTH_JWT_SECRET: TEST_SECRET, PORT: '0', WORKER_PORT: '0', PROVIDER_URL: 'http://127.0.0.1:1' };
    const [api, worker] = await Promise.all([runScript('src/main-api.ts', [], env), runScript('src/main-worker.ts', [], env)]);
    expect(api.code).toBe(1);
    expect(api.stderr).toMatch(/WEBHOOK_SECRET_KEY: is required/);
    expect(worker.code).toBe(1);
    expect(worker.stderr).toMatch(/WEBHOOK_SECRET_KEY: is required/);
  });

  it('keeps the SSRF guard on unless WEBHOOK_ALLOW_PRIVATE_URLS=true, which production refuses', () => {
    expect(loadConfig({}).webhooks.strictUrls).toBe(true);
    expect(loadConfig({ NODE_ENV: 'development' }).webhooks.strictUrls).toBe(true);
    expect(loadConfig({ NODE_ENV: 'test' }).webhooks.strictUrls).toBe(true);
    expect(loadConfig({ WEBHOOK_ALLOW_PRIVATE_URLS: 'false' }).webhooks.strictUrls).toBe(true);
    expect(loadConfig({ WEBHOOK_ALLOW_PRIVATE_URLS: 'true' }).webhooks.strictUrls).toBe(false);
    expect(() => loadConfig({ WEBHOOK_ALLOW_PRIVATE_URLS: 'yes' })).toThrow(/WEBHOOK_ALLOW_PRIVATE_URLS/);
    expect(() =>
      loadConfig({
        NODE_ENV: 'production',
        AUTH_JWT_SECRET: TEST_SECRET,
        WEBHOOK_SECRET_KEY: TEST_WEBHOOK_KEY,
        WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
      }),
    ).toThrow(/WEBHOOK_ALLOW_PRIVATE_URLS/);
  });

  it('gives only the local demo a development key and private webhook addresses, and not with NODE_ENV=production', () => {
    const demo = loadDemoConfig({});
    expect(demo.webhooks.secretKey?.length).toBe(32);
    expect(demo.webhooks.strictUrls).toBe(false);
    expect(loadDemoConfig({ WEBHOOK_ALLOW_PRIVATE_URLS: 'false' }).webhooks.strictUrls).toBe(true);
    expect(loadDemoConfig({ WEBHOOK_SECRET_KEY: TEST_WEBHOOK_KEY }).webhooks.secretKey).toEqual(Buffer.from(TEST_WEBHOOK_KEY, 'hex'));
    expect(() => loadDemoConfig({ NODE_ENV: 'production', AUTH_JWT_SECRET: TEST_SECRET })).toThrow(/WEBHOOK_SECRET_KEY/);
    const production = loadDemoConfig({ NODE_ENV: 'production', AUTH_JWT_SECRET: TEST_SECRET, WEBHOOK_SECRET_KEY: TEST_WEBHOOK_KEY });
    expect(production.webhooks.strictUrls).toBe(true);
  });
});

describe('the all-in-one demo', () => {
  it('is not seeded, and prints no token, when NODE_ENV is production', () => {
    expect(demoAllowed(loadConfig({ NODE_ENV: 'production', AUTH_JWT_SECRET: TEST_SECRET, WEBHOOK_SECRET_KEY: TEST_WEBHOOK_KEY }))).toBe(
      false,
    );
    expect(demoAllowed(loadDemoConfig({}))).toBe(true);
  });
});

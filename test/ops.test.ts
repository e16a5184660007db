import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { parse } from 'yaml';
import { startWorkerProcess } from '../src/app/worker.ts';
import { signToken } from '../src/auth.ts';
import { startProcess } from '../tools/processes.ts';
import { gql, paymentInput, SEND_PAYMENT, type Stack, startStack, TEST_SECRET, TEST_WEBHOOK_KEY, type TestCustomer } from './helpers.ts';
import { startStallingProxy } from './tcp-proxy.ts';

let stack: Stack;
let alice: TestCustomer;
let base: string;
beforeAll(async () => {
  stack = await startStack({ worker: false });
  alice = await stack.newCustomer(100_000);
  base = stack.apiUrl.replace(/\/graphql$/, '');
});
afterAll(async () => {
  await stack?.stop();
});

const metricsText = async (url: string) => (await fetch(url)).text();

describe('metrics', () => {
  it('shows payments by status, sendPayment and transaction timings, queue depth and subscriptions on the API', async () => {
    await stack.send(alice.token, paymentInput(alice.accountId));
    await stack.send(alice.token, paymentInput(alice.accountId, { amount: 100_000 }));
    // Over PAYEE_CHECK_THRESHOLD with no payee check: refused before any transaction.
    await stack.send(alice.token, paymentInput(alice.accountId, { amount: 100_001 }));
    const text = await metricsText(`${base}/metrics`);
    expect(text).toMatch(/^payments_by_status\{status="PENDING"\} [1-9]/m);
    expect(text).toMatch(/^payments_by_status\{status="COMPLETED"\} 0/m);
    expect(text).toMatch(/^payments_send_payment_duration_seconds_count\{outcome="ok"\} 1$/m);
    expect(text).toMatch(/^payments_send_payment_duration_seconds_count\{outcome="INSUFFICIENT_FUNDS"\} 1$/m);
    expect(text).toMatch(/^payments_send_payment_duration_seconds_count\{outcome="PAYEE_NOT_CONFIRMED"\} 1$/m);
    expect(text).toMatch(/^payments_safety_refusals_total\{code="PAYEE_NOT_CONFIRMED"\} 1$/m);
    expect(text).toMatch(/^payments_by_status\{status="HELD"\} 0$/m);
    expect(text).toMatch(/^payments_send_payment_transaction_seconds_count 2$/m);
    expect(text).toMatch(/^payments_queue_depth\{queue="payment.settle"\} [1-9]/m);
    expect(text).toMatch(/^payments_queue_oldest_job_age_seconds\{queue="payment.settle"\} \d/m);
    expect(text).toMatch(/^payments_subscriptions_active 0$/m);
    expect(text).toMatch(/^payments_event_feed_up 1$/m);
    expect(text).toMatch(/^payments_process_resident_memory_bytes \d+/m);
  });

  it("shows provider calls by outcome, retries and the circuit's state on the worker", async () => {
    const own = await startWorkerProcess({
      config: stack.config,
      databaseUrl: stack.databaseUrl,
      providerUrl: stack.emulator.url,
      logger: stack.logger,
      opsPort: 0,
      pollingIntervalSeconds: 0.5,
    });
    try {
      stack.emulator.setFaults({ failNextCreates: 1 });
      const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 77 }));
      await vi.waitFor(
        async () => expect((await stack.db.payment.findUniqueOrThrow({ where: { id: sent.payment?.id ?? '' } })).status).toBe('COMPLETED'),
        {
          timeout: 20_000,
          interval: 100,
        },
      );
      const text = await metricsText(`${own.opsUrl}/metrics`);
      expect(text).toMatch(/^payments_provider_call_duration_seconds_count\{operation="create",outcome="accepted"\} [1-9]/m);
      expect(text).toMatch(/^payments_provider_call_duration_seconds_count\{operation="create",outcome="transient"\} 1$/m);
      expect(text).toMatch(/^payments_settlement_retries_total\{step="sending to the provider"\} 1$/m);
      expect(text).toMatch(/^payments_settled_total\{status="COMPLETED"\} [1-9]/m);
      expect(text).toMatch(/^payments_provider_circuit_open\{state="\d"\} 1$/m);
      expect((await fetch(`${own.opsUrl}/readyz`)).status).toBe(200);
      expect(await (await fetch(`${own.opsUrl}/healthz`)).json()).toEqual({ status: 'ok' });
    } finally {
      await own.stop();
    }
  });
});

describe('request ids', () => {
  it('gives every request an id, echoes one the caller sent, and refuses to echo junk', async () => {
    const made = await fetch(stack.apiUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"query":"{ __typename }"}',
    });
    expect(made.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const echoed = await fetch(stack.apiUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'lb-1234' },
      body: '{"query":"{ __typename }"}',
    });
    expect(echoed.headers.get('x-request-id')).toBe('lb-1234');
    const junk = await fetch(stack.apiUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'a b <c>' },
      body: '{"query":"{ __typename }"}',
    });
    expect(junk.headers.get('x-request-id')).not.toBe('a b <c>');
  });

  it("writes a payment's request id on its log lines at info", async () => {
    const own = await startStack({ worker: false, logLevel: 'info' });
    try {
      const bob = await own.newCustomer(5_000);
      const response = await fetch(own.apiUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${bob.token}`, 'x-request-id': 'lb-pay-1' },
        body: JSON.stringify({ query: SEND_PAYMENT, variables: { input: paymentInput(bob.accountId) } }),
      });
      const paymentId = (await response.json()).data.sendPayment.payment.id;
      const lines: Array<Record<string, unknown>> = own.logLines.map((line) => JSON.parse(line));
      expect(lines.find((l) => l.msg === 'payment accepted')).toMatchObject({ requestId: 'lb-pay-1', paymentId, amount: 1000 });
      expect(lines.filter((l) => l.msg === 'graphql request' && l.requestId === 'lb-pay-1')).toMatchObject([
        { operation: 'Send', errors: [] },
      ]);
    } finally {
      await own.stop();
    }
  });
});

describe('readiness', () => {
  it('is not ready while the event feed is stalled on a hung connection, and ready again once it follows', async () => {
    const pgUrl = new URL(stack.databaseUrl);
    const proxy = await startStallingProxy({ host: pgUrl.hostname, port: Number(pgUrl.port) });
    const own = await startStack({
      worker: false,
      env: { EVENT_POLL_INTERVAL_MS: '50', EVENT_QUERY_TIMEOUT_MS: '500' },
      eventsDatabaseUrl: (url) => proxy.via(url),
    });
    const ownBase = own.apiUrl.replace(/\/graphql$/, '');
    try {
      // Ready once the feed's first poll has answered (a moment after start on a busy machine).
      await vi.waitFor(async () => expect((await fetch(`${ownBase}/readyz`)).status).toBe(200), { timeout: 10_000, interval: 50 });
      proxy.stall();
      await vi.waitFor(async () => expect((await fetch(`${ownBase}/readyz`)).status).toBe(503), { timeout: 10_000, interval: 50 });
      expect(await metricsText(`${ownBase}/metrics`)).toMatch(/^payments_event_feed_up 0$/m);
      proxy.resume();
      await vi.waitFor(async () => expect((await fetch(`${ownBase}/readyz`)).status).toBe(200), { timeout: 10_000, interval: 50 });
      expect(await (await fetch(`${ownBase}/healthz`)).json()).toEqual({ status: 'ok' });
    } finally {
      await own.stop();
      await proxy.close();
    }
  });
});

describe('the event horizon', () => {
  it('shows a transaction held open in another database of the cluster in the horizon lag within seconds', async () => {
    const other = new URL(stack.databaseUrl);
    other.pathname = '/postgres';
    const client = new pg.Client({ connectionString: other.toString() });
    await client.connect();
    const lag = async () => Number(/^payments_event_horizon_lag_seconds (\S+)$/m.exec(await metricsText(`${base}/metrics`))?.[1] ?? 'NaN');
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_current_xact_id()');
      // Two seconds and more: longer than anything the rest of the suite keeps open.
      await vi.waitFor(async () => expect(await lag()).toBeGreaterThanOrEqual(2), { timeout: 15_000, interval: 200 });
    } finally {
      await client.query('ROLLBACK').catch(() => undefined);
      await client.end();
    }
  });
});

describe('graceful shutdown of a worker', () => {
  it('finishes the payment it is settling before it exits with code 0', async () => {
    const env = {
      DATABASE_URL: stack.databaseUrl,
      AUTH_JWT_SECRET: TEST_SECRET,
      WEBHOOK_SECRET_KEY: TEST_WEBHOOK_KEY,
      PROVIDER_URL: stack.emulator.url,
      PROVIDER_API_KEY: stack.config.providerApiKey,
      WORKER_PORT: '0',
    };
    const worker = await startProcess('main-worker.ts', env, 'worker started');
    try {
      stack.emulator.setFaults({ latencyMs: 1_500 });
      const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 55 }));
      const id = sent.payment?.id ?? '';
      // Wait until the worker holds the job, then ask it to stop.
      await vi.waitFor(
        async () => {
          const rows = await stack.db.$queryRaw<{ state: string }[]>`SELECT state::text FROM pgboss.job WHERE id = ${id}::uuid`;
          expect(rows[0]?.state).toBe('active');
        },
        { timeout: 10_000, interval: 20 },
      );
      expect(await worker.stop()).toBe(0);
      const payment = await stack.db.payment.findUniqueOrThrow({ where: { id } });
      expect(payment.status).toBe('COMPLETED');
      expect(worker.errors).toEqual([]);
    } finally {
      stack.emulator.setFaults({ latencyMs: 0 });
      await worker.kill();
    }
  });
});

describe('docker-compose.yml', () => {
  // Compose resolves YAML merge keys (<<), so the test does too.
  const compose = parse(readFileSync(new URL('../docker-compose.yml', import.meta.url), 'utf8'), { merge: true }) as {
    services: Record<
      string,
      {
        command?: string[];
        deploy?: { replicas?: number };
        healthcheck?: unknown;
        depends_on?: Record<string, { condition: string }>;
        environment?: Record<string, string>;
      }
    >;
  };

  it('runs postgres, a one-shot migration, 2 API and 2 worker replicas and the provider emulator', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['api', 'migrate', 'pgbouncer', 'postgres', 'provider', 'worker']);
    // The processes go through PgBouncer; migrations (a session advisory lock) straight to the server.
    for (const name of ['api', 'worker']) {
      expect(compose.services[name]?.environment?.DATABASE_URL, name).toMatch(/@pgbouncer:6432\//);
      expect(compose.services[name]?.depends_on?.pgbouncer?.condition, name).toBe('service_healthy');
    }
    expect(compose.services.migrate?.environment?.DIRECT_DATABASE_URL).toMatch(/@postgres:5432\//);
    expect(compose.services.api?.deploy?.replicas).toBe(2);
    expect(compose.services.worker?.deploy?.replicas).toBe(2);
    expect(compose.services.migrate?.command).toEqual(['node', 'src/cli/migrate.ts']);
    expect(compose.services.api?.depends_on?.migrate?.condition).toBe('service_completed_successfully');
    expect(compose.services.worker?.depends_on?.migrate?.condition).toBe('service_completed_successfully');
  });

  it('gives every long-running service a health check and the contract environment', () => {
    for (const name of ['postgres', 'api', 'worker', 'provider']) expect(compose.services[name]?.healthcheck, name).toBeDefined();
    for (const name of ['api', 'worker']) {
      const env = compose.services[name]?.environment ?? {};
      for (const key of [
        'DATABASE_URL',
        'AUTH_JWT_SECRET',
        'WEBHOOK_SECRET_KEY',
        'PROVIDER_URL',
        'PROVIDER_API_KEY',
        'LOG_LEVEL',
        'PAYMENT_RETRY_LIMIT',
        'PAYMENT_RETRY_DELAY_SECONDS',
        'PAYMENT_RETRY_DELAY_MAX_SECONDS',
        'SEND_PAYMENT_RATE_LIMIT_PER_MINUTE',
        'NODE_ENV',
      ]) {
        expect(env, `${name} ${key}`).toHaveProperty(key);
      }
    }
  });

  it('only starts commands that exist in this repository', () => {
    for (const service of Object.values(compose.services)) {
      const [program, ...args] = service.command ?? [];
      const file = args.find((a) => !a.startsWith('--'));
      if (program === 'node' && file) expect(() => readFileSync(new URL(`../${file}`, import.meta.url))).not.toThrow();
    }
  });

  it('starts the API with the heap settings of npm run start:api, as the Dockerfile does', () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> };
    const flags = pkg.scripts['start:api']?.split(' ').filter((a) => a.startsWith('--')) ?? [];
    expect(flags).toEqual(expect.arrayContaining([expect.stringMatching(/^--max-old-space-size=\d+$/)]));
    expect(compose.services.api?.command).toEqual(['node', ...flags, 'src/main-api.ts']);
    const dockerfile = readFileSync(new URL('../Dockerfile', import.meta.url), 'utf8');
    expect(dockerfile).toContain(`CMD ${JSON.stringify(['node', ...flags, 'src/main-api.ts']).replaceAll(',', ', ')}`);
  });

  it('starts the worker with the heap settings of npm run start:worker, as docker compose does', () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> };
    const flags = pkg.scripts['start:worker']?.split(' ').filter((a) => a.startsWith('--')) ?? [];
    expect(flags).toEqual(expect.arrayContaining([expect.stringMatching(/^--max-old-space-size=\d+$/)]));
    expect(compose.services.worker?.command).toEqual(['node', ...flags, 'src/main-worker.ts']);
  });
});

describe('tokens', () => {
  it('prints a token with npm run token that the API accepts', async () => {
    const token = execFileSync(process.execPath, ['src/cli/token.ts', '--customer', alice.customerId], {
      cwd: new URL('..', import.meta.url).pathname,
      env: { PATH: process.env.PATH ?? '', AUTH_JWT_SECRET: TEST_SECRET },
    })
      .toString()
      .trim();
    expect(await gql(stack.apiUrl, token, '{ me { id } }')).toEqual({ data: { me: { id: alice.customerId } } });
    const operator = await signToken({ role: 'operator', operatorId: 'ops@bank' }, TEST_SECRET, 60);
    expect((await gql(stack.apiUrl, operator, '{ me { id } }')).data).toEqual({ me: null });
  });
});

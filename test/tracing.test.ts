import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signToken } from '../src/auth.ts';
import { type RunningEmulator, startEmulator } from '../src/emulator/server.ts';
import { type StartedProcess, startProcess } from '../tools/processes.ts';
import {
  createFundedCustomer,
  createTestDatabase,
  gql,
  paymentInput,
  SEND_PAYMENT,
  TEST_OPERATOR,
  TEST_SECRET,
  TEST_WEBHOOK_KEY,
} from './helpers.ts';

/**
 * Tracing end to end: an API process and a worker process export their spans over OTLP/HTTP to a
 * collector of the test's own, which keeps them in memory. One payment must be one trace, from the
 * sendPayment request through the database and the job to the provider call.
 */
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
}
interface OtlpExport {
  resourceSpans: Array<{
    resource: { attributes: Array<{ key: string; value: { stringValue?: string } }> };
    scopeSpans: Array<{ scope: { name: string }; spans: OtlpSpan[] }>;
  }>;
}
type CollectedSpan = OtlpSpan & { service: string; scope: string };

const API_KEY = 'tracing-test-key';
const spans: CollectedSpan[] = [];
let collector: Server;
let collectorUrl: string;
let database: { url: string; drop(): Promise<void> };
let emulator: RunningEmulator;
let roles: StartedProcess[] = [];

beforeAll(async () => {
  collector = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      if (req.url === '/v1/traces' && req.headers['content-type']?.startsWith('application/json')) {
        const exported = JSON.parse(body) as OtlpExport;
        for (const rs of exported.resourceSpans) {
          const service = rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue ?? '?';
          for (const ss of rs.scopeSpans) for (const span of ss.spans) spans.push({ ...span, service, scope: ss.scope.name });
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
  collectorUrl = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
  database = await createTestDatabase();
  emulator = await startEmulator({ apiKey: API_KEY, port: 0 });
  const env = {
    DATABASE_URL: database.url,
    AUTH_JWT_SECRET: TEST_SECRET,
    WEBHOOK_SECRET_KEY: TEST_WEBHOOK_KEY,
    PROVIDER_URL: emulator.url,
    PROVIDER_API_KEY: API_KEY,
    PORT: '0',
    WORKER_PORT: '0',
    SEND_PAYMENT_RATE_LIMIT_PER_MINUTE: '0',
    OTEL_EXPORTER_OTLP_ENDPOINT: collectorUrl,
  };
  roles = await Promise.all([startProcess('main-api.ts', env, 'API listening'), startProcess('main-worker.ts', env, 'worker started')]);
});
afterAll(async () => {
  await Promise.all(roles.map((r) => r.stop()));
  await emulator?.close();
  await database?.drop();
  await new Promise<void>((resolve) => collector?.close(() => resolve()));
});

describe('tracing', () => {
  it('makes one payment one trace: API, database, job and provider spans', async () => {
    const [api] = roles;
    const apiUrl = api?.url ?? '';
    const operator = await signToken({ role: 'operator', operatorId: TEST_OPERATOR }, TEST_SECRET, 600);
    const alice = await createFundedCustomer(apiUrl, operator, 10_000);
    const sent = await gql<{ sendPayment: { payment: { id: string } } }>(apiUrl, alice.token, SEND_PAYMENT, {
      input: paymentInput(alice.accountId),
    });
    const paymentId = sent.data?.sendPayment.payment.id ?? '';
    expect(paymentId).not.toBe('');

    // The worker's span for this payment's job, once both processes have exported: each exports in
    // batches of its own, so the API's request span may arrive after the worker's provider call.
    let trace: CollectedSpan[] = [];
    await expect
      .poll(
        () => {
          const job = spans.find((s) => s.service === 'payments-worker' && s.name === 'payment.settle');
          trace = job ? spans.filter((s) => s.traceId === job.traceId) : [];
          return (
            trace.some((s) => s.service === 'payments-worker' && /^(POST|GET)$/.test(s.name.split(' ')[0] ?? '')) &&
            trace.some((s) => s.service === 'payments-api' && s.scope.includes('instrumentation-http') && s.kind === 2)
          );
        },
        { timeout: 30_000, interval: 200 },
      )
      .toBe(true);

    const byService = (service: string) => trace.filter((s) => s.service === service);
    // The API: the HTTP request, the GraphQL operation, and PostgreSQL statements under them.
    expect(byService('payments-api').some((s) => s.scope.includes('instrumentation-http') && s.kind === 2)).toBe(true);
    expect(byService('payments-api').some((s) => s.scope.includes('instrumentation-graphql'))).toBe(true);
    expect(byService('payments-api').some((s) => s.scope.includes('instrumentation-pg') || s.scope.includes('prisma'))).toBe(true);
    // The worker: the job continues the request's trace, and the provider call is under it.
    const job = byService('payments-worker').find((s) => s.name === 'payment.settle');
    expect(job?.parentSpanId).toBeDefined();
    expect(trace.some((s) => s.spanId === job?.parentSpanId)).toBe(true);
    const provider = byService('payments-worker').find((s) => s.scope.includes('undici'));
    expect(provider).toBeDefined();
    expect(trace.map((s) => s.traceId).every((id) => id === job?.traceId)).toBe(true);
  });
});

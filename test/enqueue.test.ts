import { randomUUID } from 'node:crypto';
import { context, propagation, trace } from '@opentelemetry/api';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import type { PgBoss } from 'pg-boss';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queuePolicy, startQueue } from '../src/app/queue.ts';
import { systemClock } from '../src/calendar.ts';
import { createPaymentJobs, enqueueSettlement } from '../src/jobs/enqueue.ts';
import { JOBS } from '../src/jobs/queues.ts';
import { type Stack, startStack } from './helpers.ts';

/**
 * The settlement enqueue helper, the one way a settlement job is made: it carries the trace of
 * whatever asked for it (a request, an operator's approval), and a deferred job's successor keeps
 * its predecessor's trace.
 */
let stack: Stack;
let boss: PgBoss;
const tracing = new NodeTracerProvider();
beforeAll(async () => {
  tracing.register();
  stack = await startStack({ worker: false });
  boss = await startQueue({ databaseUrl: stack.databaseUrl, config: stack.config, logger: stack.logger });
});
afterAll(async () => {
  await boss?.stop({ graceful: false, close: true });
  await stack?.stop();
  await tracing.shutdown();
  trace.disable();
  propagation.disable();
  context.disable();
});

const traceOf = async (paymentId: string) =>
  (
    await stack.db.$queryRaw<{ traceparent: string | null }[]>`
      SELECT data->'trace'->>'traceparent' AS traceparent FROM pgboss.job WHERE name = ${JOBS.settle.name} AND data->>'paymentId' = ${paymentId}`
  ).map((r) => r.traceparent);

describe('enqueueSettlement', () => {
  it('carries the current trace into the job, whoever asks for the settlement', async () => {
    const jobs = createPaymentJobs({ boss, policy: queuePolicy(stack.config), clock: systemClock });
    const paymentId = randomUUID();
    const traceId = await trace.getTracer('test').startActiveSpan('approvePayment', async (span) => {
      await stack.db.$transaction((tx) => jobs.settle(tx, paymentId));
      span.end();
      return span.spanContext().traceId;
    });
    const [traceparent] = await traceOf(paymentId);
    expect(traceparent).toContain(traceId);
  });

  it("keeps the trace a job was given (a deferred job's successor keeps its predecessor's)", async () => {
    const paymentId = randomUUID();
    const given = { traceparent: `00-${'a'.repeat(32)}-${'b'.repeat(16)}-01` };
    await trace.getTracer('test').startActiveSpan('another', async (span) => {
      await stack.db.$transaction((tx) =>
        enqueueSettlement(boss, tx, queuePolicy(stack.config), { paymentId, trace: given }, { fresh: true }),
      );
      span.end();
    });
    expect(await traceOf(paymentId)).toEqual([given.traceparent]);
  });

  it('adds no trace when there is none', async () => {
    const paymentId = randomUUID();
    await stack.db.$transaction((tx) => enqueueSettlement(boss, tx, queuePolicy(stack.config), { paymentId }));
    expect(await traceOf(paymentId)).toEqual([null]);
  });
});

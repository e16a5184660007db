import { randomUUID } from 'node:crypto';
import { type Db, fromPrisma, type PgBoss } from 'pg-boss';
import { type Clock, secondsUntilDay } from '../calendar.ts';
import type { Tx } from '../db/prisma.ts';
import type { JobInsert, PaymentJobs } from '../payments/outbox.ts';
import { currentTraceCarrier } from '../telemetry/propagation.ts';
import { JOBS, type PayloadOf, type QueuePolicy } from './queues.ts';

/**
 * Every job is sent by one of these helpers, never built by hand: each writes its job in the
 * caller's transaction (`tx`), so the job commits with the change that needs it or not at all.
 */

/** A settlement job's payload with the trace it was given, or else the current one. */
function withTrace(job: PayloadOf<'settle'>): PayloadOf<'settle'> {
  const trace = job.trace ?? currentTraceCarrier();
  return { ...job, ...(trace ? { trace } : {}) };
}

/**
 * A settlement job. It carries the trace it was given (a deferred job's successor keeps its
 * predecessor's) or else the current one, so the worker continues the request's trace. Keyed by the
 * payment unless `fresh` (a swept payment or a deferred job's successor, which may have had a job
 * by that id); `retryLimit` and `startAfter` are a successor's.
 */
export async function enqueueSettlement(
  boss: PgBoss,
  tx: Tx,
  policy: QueuePolicy,
  job: PayloadOf<'settle'>,
  options: { fresh?: boolean; retryLimit?: number; startAfter?: Date } = {},
): Promise<void> {
  await boss.send(JOBS.settle.name, withTrace(job), {
    ...JOBS.settle.job(policy),
    ...(options.fresh ? {} : { id: job.paymentId }),
    ...(options.retryLimit === undefined ? {} : { retryLimit: options.retryLimit }),
    ...(options.startAfter ? { startAfter: options.startAfter } : {}),
    db: fromPrisma(tx),
  });
}

/**
 * What pg-boss runs to send one job, taken instead of run: `send(db)` is a send through `db`, which
 * records the statement and answers as the database would. pg-boss still builds the row (options,
 * the queue's defaults and table, the trace context); the caller runs it inside a statement of its
 * own (`JobInsert`). Throws when pg-boss sent anything but one plain INSERT with the one parameter.
 */
export async function takeJobInsert(send: (db: Db) => Promise<unknown>): Promise<JobInsert> {
  const taken: Array<{ text: string; values: unknown[] }> = [];
  await send({
    executeSql: async (text, values = []) => {
      taken.push({ text, values });
      return { rows: [{ id: null }] };
    },
  });
  const [only] = taken;
  const json = only?.values[0];
  if (
    !only ||
    taken.length !== 1 ||
    only.values.length !== 1 ||
    typeof json !== 'string' ||
    !/^\s*INSERT\b/.test(only.text) ||
    only.text.match(/\$\d+/g)?.join() !== '$1'
  ) {
    throw new Error('pg-boss did not send a job as one INSERT with its JSON as $1; the payment statement cannot carry it');
  }
  return { text: only.text, json };
}

/**
 * The execution of a SCHEDULED payment, due when `executeOn` begins in London by `clock` (the
 * clock of the process that schedules it). The job id is the payment id, so a second enqueue is a
 * no-op; `fresh` replaces a job that is gone or ran too early.
 */
export async function enqueueExecution(
  boss: PgBoss,
  tx: Tx,
  options: { policy: QueuePolicy; clock: Clock },
  job: Parameters<PaymentJobs['execute']>[1],
): Promise<void> {
  const data: PayloadOf<'execute'> = { paymentId: job.paymentId };
  await boss.send(JOBS.execute.name, data, {
    ...JOBS.execute.job(options.policy),
    id: job.fresh ? randomUUID() : job.paymentId,
    startAfter: secondsUntilDay(options.clock, job.executeOn),
    db: fromPrisma(tx),
  });
}

/** The return of an inbound credit to the provider. */
export async function enqueueCreditReturn(boss: PgBoss, tx: Tx, policy: QueuePolicy, creditId: string): Promise<void> {
  const data: PayloadOf<'creditReturn'> = { creditId };
  await boss.send(JOBS.creditReturn.name, data, { ...JOBS.creditReturn.job(policy), db: fromPrisma(tx) });
}

/** A run of the standing-order scheduler now. */
export async function enqueueStandingOrdersRun(boss: PgBoss, tx: Tx): Promise<void> {
  const data: PayloadOf<'standingOrders'> = {};
  await boss.send(JOBS.standingOrders.name, data, { db: fromPrisma(tx) });
}

/** The options of every `webhook.deliver` job (`webhookJobOptions`), as the webhook settings give them. */
/** A reconciliation of `date` (a London day) now, outside its daily schedule. */
export async function enqueueReconciliation(boss: PgBoss, date: string): Promise<void> {
  const data: PayloadOf<'reconcileDay'> = { date };
  await boss.send(JOBS.reconcileDay.name, data);
}

export type WebhookJobOptions = Record<string, number | boolean>;

/** One delivery attempt, as a job of its endpoint's group, with the id its delivery row names. */
export function webhookDeliveryJob(jobOptions: WebhookJobOptions, delivery: { deliveryId: string; endpointId: string; jobId: string }) {
  const data: PayloadOf<'deliverWebhook'> = { deliveryId: delivery.deliveryId };
  return { ...jobOptions, id: delivery.jobId, data, group: { id: delivery.endpointId } };
}

/** One delivery attempt, now or after `startAfterSeconds`. */
export async function enqueueWebhookDelivery(
  boss: PgBoss,
  tx: Tx,
  jobOptions: WebhookJobOptions,
  delivery: { deliveryId: string; endpointId: string; jobId: string; startAfterSeconds?: number },
): Promise<void> {
  const { data, ...options } = webhookDeliveryJob(jobOptions, delivery);
  await boss.send(JOBS.deliverWebhook.name, data, {
    ...options,
    ...(delivery.startAfterSeconds === undefined ? {} : { startAfter: delivery.startAfterSeconds }),
    db: fromPrisma(tx),
  });
}

/** Many delivery attempts in one statement (the dispatcher's fan-out). */
export async function enqueueWebhookDeliveries(
  boss: PgBoss,
  tx: Tx,
  jobOptions: WebhookJobOptions,
  deliveries: Array<{ deliveryId: string; endpointId: string; jobId: string }>,
): Promise<void> {
  if (deliveries.length === 0) return;
  await boss.insert(
    JOBS.deliverWebhook.name,
    deliveries.map((d) => webhookDeliveryJob(jobOptions, d)),
    { db: fromPrisma(tx) },
  );
}

/** The payment services' outbox (src/payments/outbox.ts), on the job queue. */
export function createPaymentJobs(deps: { boss: PgBoss; policy: QueuePolicy; clock: Clock }): PaymentJobs {
  const { boss, policy, clock } = deps;
  return {
    settle: (tx, paymentId) => enqueueSettlement(boss, tx, policy, { paymentId }),
    settlementInsert: (paymentId) =>
      takeJobInsert((db) => boss.send(JOBS.settle.name, withTrace({ paymentId }), { ...JOBS.settle.job(policy), id: paymentId, db })),
    execute: (tx, job) => enqueueExecution(boss, tx, { policy, clock }, job),
    returnCredit: (tx, creditId) => enqueueCreditReturn(boss, tx, policy, creditId),
    runStandingOrders: (tx) => enqueueStandingOrdersRun(boss, tx),
  };
}

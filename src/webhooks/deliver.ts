import { randomInt, randomUUID } from 'node:crypto';
import { BrokenCircuitError, type CircuitBreakerPolicy, ConsecutiveBreaker, circuitBreaker, handleType } from 'cockatiel';
import type { PgBoss } from 'pg-boss';
import type { Clock } from '../calendar.ts';
import type { PrismaClient } from '../db/prisma.ts';
import { enqueueWebhookDelivery } from '../jobs/enqueue.ts';
import type { DeliverWebhookJob } from '../jobs/queues.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { AddressGuard } from './address.ts';
import { type PostOutcome, postWebhook } from './http.ts';
import { decryptSecret } from './secrets.ts';
import { signatureHeader } from './verify.ts';

/**
 * Delivering one event to one endpoint: one attempt per `webhook.deliver` job.
 *
 * Glossary: an *endpoint* is a URL registered for an account; a *delivery* is one event owed to
 * one endpoint (a row, PENDING until SUCCEEDED or FAILED); an *attempt* is one POST of it.
 *
 * The row names the one job allowed to attempt it (`job_id`); a job that is not that one (an
 * attempt overtaken by a redelivery) does nothing. After a failed attempt the same statement that
 * records it hands the delivery to a new job due after the backoff, in one transaction with that
 * job; a 2xx ends it. A worker killed mid-attempt leaves its job to expire and run again: the
 * event may arrive twice, with the same id, and is never lost.
 */

export interface WebhookSettings {
  timeoutMs: number;
  retryHours: number;
  retryDelayMs: number;
  retryDelayMaxMs: number;
  /** Attempts in flight at once in this process for one customer's endpoints (WEBHOOK_CUSTOMER_CONCURRENCY). */
  customerConcurrency: number;
  /** Failed attempts in a row that open an endpoint's circuit (WEBHOOK_CIRCUIT_FAILURES). */
  circuitFailures: number;
  /** How long an open circuit stays open before one attempt tries the endpoint again. */
  circuitOpenMs: number;
}

/** Endpoints whose circuit this process remembers; the oldest is forgotten past this (a closed circuit costs nothing to rebuild). */
const MAX_CIRCUITS = 10_000;

/** A failed attempt, as the circuit breaker counts it. */
class FailedAttempt extends Error {
  readonly outcome: PostOutcome;
  constructor(outcome: PostOutcome) {
    super('webhook attempt failed');
    this.outcome = outcome;
  }
}

/** The body of an event, exactly as the contract gives it; every attempt sends the same bytes. */
export interface WebhookEvent {
  id: string;
  paymentId: string;
  accountId: string;
  previousStatus: string | null;
  status: string;
  amount: bigint;
  occurredAt: Date;
}

export function webhookBody(event: WebhookEvent): string {
  return JSON.stringify({
    id: event.id,
    type: `payment.${event.status.toLowerCase()}`,
    accountId: event.accountId,
    paymentId: event.paymentId,
    previousStatus: event.previousStatus,
    status: event.status,
    // Whole pence, at most 100,000,000: exact as a JSON number.
    amount: Number(event.amount),
    occurredAt: event.occurredAt.toISOString(),
  });
}

/**
 * The wait before attempt `attempt + 1`: exponential from `baseMs`, capped at `maxMs`, with "equal
 * jitter" (half fixed, half random) so endpoints that failed together do not retry together.
 */
export function retryDelayMs(
  failedAttempts: number,
  settings: Pick<WebhookSettings, 'retryDelayMs' | 'retryDelayMaxMs'>,
  random: () => number,
): number {
  const exponential = Math.min(settings.retryDelayMaxMs, settings.retryDelayMs * 2 ** Math.min(Math.max(failedAttempts - 1, 0), 40));
  return Math.round(exponential / 2 + (random() * exponential) / 2);
}

interface DeliveryRow {
  customerId: string;
  status: string;
  lastResponseStatus: number | null;
  jobId: string | null;
  attempts: number;
  retryUntil: Date | null;
  eventId: string;
  endpointId: string;
  url: string;
  secret: Uint8Array;
  deletedAt: Date | null;
  paymentId: string | null;
  accountId: string | null;
  previousStatus: string | null;
  eventStatus: string | null;
  amount: string | null;
  occurredAt: Date;
}

/** An attempt's outcome: what the POST got, or `circuit-open` when the endpoint was not called. */
type AttemptOutcome = PostOutcome | { kind: 'circuit-open' };

const outcomeReason = (outcome: AttemptOutcome) =>
  outcome.kind === 'circuit-open'
    ? 'circuit_open'
    : outcome.kind === 'response'
      ? outcome.status >= 200 && outcome.status < 300
        ? 'ok'
        : 'http_status'
      : outcome.kind === 'refused'
        ? 'refused_address'
        : outcome.kind;

const describe = (outcome: AttemptOutcome) =>
  outcome.kind === 'circuit-open'
    ? 'not sent: the endpoint failed every recent attempt (circuit open)'
    : outcome.kind === 'response'
      ? `HTTP ${outcome.status}`
      : outcome.kind === 'timeout'
        ? 'timed out'
        : `${outcome.kind}: ${outcome.message}`;

export function createWebhookDelivery(deps: {
  prisma: PrismaClient;
  boss: PgBoss;
  logger: Logger;
  metrics: Pick<Metrics, 'webhookDeliveries' | 'webhookLatency'>;
  guard: AddressGuard;
  secretKey: Buffer;
  settings: WebhookSettings;
  jobOptions: Record<string, number | boolean>;
  /** Signature timestamps and retry windows (tests move it forward). */
  clock: Clock;
  random?: () => number;
}) {
  const { prisma, boss, logger, metrics, settings } = deps;
  const now = () => deps.clock.now();
  const random = deps.random ?? (() => randomInt(0, 1_000_000) / 1_000_000);

  const load = async (deliveryId: string) =>
    (
      await prisma.$queryRaw<DeliveryRow[]>`
        SELECT a.customer_id::text AS "customerId", d.status::text AS status, d.last_response_status AS "lastResponseStatus", d.job_id::text AS "jobId", d.attempts, d.retry_until AS "retryUntil", d.event_id AS "eventId",
          w.id::text AS "endpointId", w.url, w.secret_ciphertext AS secret, w.deleted_at AS "deletedAt",
          e.payment_id::text AS "paymentId", e.account_id::text AS "accountId", e.previous_status::text AS "previousStatus",
          e.status::text AS "eventStatus", e.amount::text AS amount, d.event_occurred_at AS "occurredAt"
        FROM webhook_deliveries d
        JOIN webhook_endpoints w ON w.id = d.endpoint_id
        JOIN accounts a ON a.id = w.account_id
        LEFT JOIN payment_events e ON e.seq = d.event_seq
        WHERE d.id = ${deliveryId}::uuid`
    )[0];

  /** Ends a delivery that can never be made (its endpoint deleted, its event past retention). */
  const abandon = (deliveryId: string, jobId: string, reason: string) =>
    prisma.$executeRaw`
      UPDATE webhook_deliveries SET status = 'FAILED', last_error = ${reason}, next_attempt_at = NULL, job_id = NULL
      WHERE id = ${deliveryId}::uuid AND job_id = ${jobId}::uuid AND status = 'PENDING'`;

  // Fairness between customers, in this process: attempts in flight per customer. A customer at
  // its cap does not wait in a slot (that would hold it): its delivery is handed to a new job due
  // a moment later, and the slot goes to whoever is next, another customer's delivery included.
  const inFlight = new Map<string, number>();
  // One circuit per endpoint (cockatiel, as the provider client): an endpoint that keeps failing
  // stops taking slots for WEBHOOK_TIMEOUT_MS at a time until it has been left alone for a while.
  const circuits = new Map<string, CircuitBreakerPolicy>();
  const circuitOf = (endpointId: string): CircuitBreakerPolicy => {
    let circuit = circuits.get(endpointId);
    if (!circuit) {
      circuit = circuitBreaker(handleType(FailedAttempt), {
        halfOpenAfter: settings.circuitOpenMs,
        breaker: new ConsecutiveBreaker(settings.circuitFailures),
      });
      circuits.set(endpointId, circuit);
      const oldest = circuits.keys().next().value;
      if (circuits.size > MAX_CIRCUITS && oldest !== undefined) circuits.delete(oldest);
    }
    return circuit;
  };

  /** Hands the delivery to a new job due after `delayMs`, spending no attempt; false when `jobId` no longer owns it. */
  async function defer(deliveryId: string, endpointId: string, jobId: string, delayMs: number): Promise<boolean> {
    const nextJobId = randomUUID();
    const next = new Date(now().getTime() + delayMs);
    return prisma.$transaction(async (tx) => {
      const updated = await tx.$executeRaw`
        UPDATE webhook_deliveries SET next_attempt_at = ${next}, job_id = ${nextJobId}::uuid
        WHERE id = ${deliveryId}::uuid AND job_id = ${jobId}::uuid AND status = 'PENDING'`;
      if (updated === 0) return false;
      await enqueueWebhookDelivery(boss, tx, deps.jobOptions, {
        deliveryId,
        endpointId,
        jobId: nextJobId,
        startAfterSeconds: delayMs / 1000,
      });
      return true;
    });
  }

  /** One attempt of the delivery, if `jobId` is still the job allowed to make it. */
  async function attempt(jobId: string, job: DeliverWebhookJob): Promise<void> {
    const { deliveryId } = job;
    const row = await load(deliveryId);
    if (row?.status !== 'PENDING' || row.jobId !== jobId) return;
    const log = logger.child({ deliveryId, endpointId: row.endpointId, eventId: row.eventId, jobId });
    if (row.deletedAt) {
      await abandon(deliveryId, jobId, 'endpoint deleted');
      return;
    }
    // Checked and taken with no await in between: the count is exact within this process.
    const busy = inFlight.get(row.customerId) ?? 0;
    if (busy >= settings.customerConcurrency) {
      // A second or two, jittered, so a backlog of one customer's is looked at a little at a time.
      if (await defer(deliveryId, row.endpointId, jobId, 1_000 + Math.round(random() * 1_000))) {
        metrics.webhookDeliveries.inc({ outcome: 'deferred', reason: 'customer_busy' });
      }
      return;
    }
    inFlight.set(row.customerId, busy + 1);
    try {
      await attemptNow(jobId, job, row, log);
    } finally {
      const left = (inFlight.get(row.customerId) ?? 1) - 1;
      if (left > 0) inFlight.set(row.customerId, left);
      else inFlight.delete(row.customerId);
    }
  }

  async function attemptNow(jobId: string, job: DeliverWebhookJob, row: DeliveryRow, log: Logger): Promise<void> {
    const { deliveryId } = job;
    if (row.paymentId === null || row.accountId === null || row.eventStatus === null || row.amount === null) {
      log.warn('event is past retention; delivery abandoned');
      await abandon(deliveryId, jobId, 'event past retention');
      return;
    }
    const body = webhookBody({
      id: row.eventId,
      paymentId: row.paymentId,
      accountId: row.accountId,
      previousStatus: row.previousStatus,
      status: row.eventStatus,
      amount: BigInt(row.amount),
      occurredAt: row.occurredAt,
    });
    const secret = decryptSecret(deps.secretKey, row.endpointId, row.secret);
    const timestamp = Math.floor(now().getTime() / 1000);
    let outcome: AttemptOutcome;
    try {
      outcome = await circuitOf(row.endpointId).execute(async () => {
        const posted = await postWebhook({
          url: row.url,
          body,
          headers: {
            'user-agent': 'payments-webhooks/1',
            'payments-event-id': row.eventId,
            'payments-signature': signatureHeader(secret, timestamp, body),
          },
          timeoutMs: settings.timeoutMs,
          guard: deps.guard,
        });
        if (outcomeReason(posted) !== 'ok') throw new FailedAttempt(posted);
        return posted;
      });
    } catch (error) {
      if (error instanceof FailedAttempt) outcome = error.outcome;
      else if (error instanceof BrokenCircuitError) outcome = { kind: 'circuit-open' };
      else throw error;
    }
    const at = now();
    // An attempt the circuit kept from being sent leaves the last real answer on show.
    const status = outcome.kind === 'response' ? outcome.status : outcome.kind === 'circuit-open' ? row.lastResponseStatus : null;
    const reason = outcomeReason(outcome);

    if (reason === 'ok') {
      const done = await prisma.$executeRaw`
        UPDATE webhook_deliveries SET status = 'SUCCEEDED', attempts = attempts + 1, last_response_status = ${status},
          last_error = NULL, last_attempt_at = ${at}, next_attempt_at = NULL, job_id = NULL
        WHERE id = ${deliveryId}::uuid AND job_id = ${jobId}::uuid AND status = 'PENDING'`;
      if (done > 0) {
        metrics.webhookDeliveries.inc({ outcome: 'succeeded', reason });
        metrics.webhookLatency.observe(Math.max(0, (at.getTime() - row.occurredAt.getTime()) / 1000));
      }
      return;
    }

    const retryUntil = row.retryUntil ?? new Date(at.getTime() + settings.retryHours * 3_600_000);
    const error = describe(outcome);
    if (at.getTime() >= retryUntil.getTime()) {
      const failed = await prisma.$executeRaw`
        UPDATE webhook_deliveries SET status = 'FAILED', attempts = attempts + 1, last_response_status = ${status},
          last_error = ${error}, last_attempt_at = ${at}, next_attempt_at = NULL, retry_until = ${retryUntil}, job_id = NULL
        WHERE id = ${deliveryId}::uuid AND job_id = ${jobId}::uuid AND status = 'PENDING'`;
      if (failed > 0) {
        metrics.webhookDeliveries.inc({ outcome: 'failed', reason });
        log.warn({ attempts: row.attempts + 1, error }, 'webhook delivery failed for good: its retry window is over');
      }
      return;
    }
    const delay = Math.min(retryDelayMs(row.attempts + 1, settings, random), retryUntil.getTime() - at.getTime());
    const next = new Date(at.getTime() + delay);
    const nextJobId = randomUUID();
    const recorded = await prisma.$transaction(async (tx) => {
      const updated = await tx.$executeRaw`
        UPDATE webhook_deliveries SET attempts = attempts + 1, last_response_status = ${status}, last_error = ${error},
          last_attempt_at = ${at}, next_attempt_at = ${next}, retry_until = ${retryUntil}, job_id = ${nextJobId}::uuid
        WHERE id = ${deliveryId}::uuid AND job_id = ${jobId}::uuid AND status = 'PENDING'`;
      if (updated === 0) return false;
      await enqueueWebhookDelivery(boss, tx, deps.jobOptions, {
        deliveryId: job.deliveryId,
        endpointId: row.endpointId,
        jobId: nextJobId,
        startAfterSeconds: delay / 1000,
      });
      return true;
    });
    if (!recorded) return;
    metrics.webhookDeliveries.inc({ outcome: 'retrying', reason });
    log.info({ attempts: row.attempts + 1, error, nextAttemptAt: next }, 'webhook attempt failed; will retry');
  }

  return { attempt };
}

export type WebhookDelivery = ReturnType<typeof createWebhookDelivery>;

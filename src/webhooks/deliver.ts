import { randomInt, randomUUID } from 'node:crypto';
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
  status: string;
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

const outcomeReason = (outcome: PostOutcome) =>
  outcome.kind === 'response'
    ? outcome.status >= 200 && outcome.status < 300
      ? 'ok'
      : 'http_status'
    : outcome.kind === 'refused'
      ? 'refused_address'
      : outcome.kind;

const describe = (outcome: PostOutcome) =>
  outcome.kind === 'response' ? `HTTP ${outcome.status}` : outcome.kind === 'timeout' ? 'timed out' : `${outcome.kind}: ${outcome.message}`;

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
        SELECT d.status::text AS status, d.job_id::text AS "jobId", d.attempts, d.retry_until AS "retryUntil", d.event_id AS "eventId",
          w.id::text AS "endpointId", w.url, w.secret_ciphertext AS secret, w.deleted_at AS "deletedAt",
          e.payment_id::text AS "paymentId", e.account_id::text AS "accountId", e.previous_status::text AS "previousStatus",
          e.status::text AS "eventStatus", e.amount::text AS amount, d.event_occurred_at AS "occurredAt"
        FROM webhook_deliveries d
        JOIN webhook_endpoints w ON w.id = d.endpoint_id
        LEFT JOIN payment_events e ON e.seq = d.event_seq
        WHERE d.id = ${deliveryId}::uuid`
    )[0];

  /** Ends a delivery that can never be made (its endpoint deleted, its event past retention). */
  const abandon = (deliveryId: string, jobId: string, reason: string) =>
    prisma.$executeRaw`
      UPDATE webhook_deliveries SET status = 'FAILED', last_error = ${reason}, next_attempt_at = NULL, job_id = NULL
      WHERE id = ${deliveryId}::uuid AND job_id = ${jobId}::uuid AND status = 'PENDING'`;

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
    const outcome = await postWebhook({
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
    const at = now();
    const status = outcome.kind === 'response' ? outcome.status : null;
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

import { randomUUID } from 'node:crypto';
import type { PgBoss } from 'pg-boss';
import { z } from 'zod';
import { afterCreatedAtId, type KeysetPage } from '../db/keyset.ts';
import type { PrismaClient } from '../db/prisma.ts';
import { DomainError, type UserError, userError } from '../errors.ts';
import { decodeCursor } from '../events/cursor.ts';
import type { WebhookDelivery, WebhookEndpoint } from '../generated/prisma/client.ts';
import { enqueueWebhookDelivery } from '../jobs/enqueue.ts';
import type { Logger } from '../logger.ts';
import { parseInput, uuid } from '../validation.ts';
import { type AddressGuard, hostOf } from './address.ts';
import { encryptSecret, newSigningSecret } from './secrets.ts';

/**
 * Webhook endpoints as customers manage them: register (the secret is returned once, stored
 * only encrypted), delete, list, and redeliver one event now. A customer acts only on its own
 * accounts; anyone else's account or endpoint is answered exactly like a missing one.
 */

/** Live endpoints one account may have. */
export const MAX_ENDPOINTS_PER_ACCOUNT = 10;

const createWebhookEndpointInput = z.object({
  accountId: uuid,
  url: z
    .string()
    .trim()
    .max(2048, 'must be at most 2048 characters')
    .pipe(z.url({ protocol: /^https?$/, message: 'must be an absolute http:// or https:// URL' })),
});

export type CreateEndpointResult =
  | { endpoint: WebhookEndpoint; secret: string; errors: [] }
  | { endpoint: null; secret: null; errors: [UserError] };

const invalidUrl = (message: string) => userError('INVALID_INPUT', `url ${message}`, ['url']);

export function createWebhookService(deps: {
  prisma: PrismaClient;
  boss: PgBoss;
  guard: AddressGuard;
  secretKey: Buffer;
  jobOptions: Record<string, number | boolean>;
  logger: Logger;
}) {
  const { prisma, guard, logger } = deps;

  /** Why webhooks may not be sent to `raw`, or null when they may (production: https, public addresses). */
  async function refuseUrl(raw: string): Promise<UserError | null> {
    const url = new URL(raw);
    if (guard.strict && url.protocol !== 'https:') return invalidUrl('must use https');
    if (url.username || url.password) return invalidUrl('must not contain a user name or password');
    const checked = await guard.check(hostOf(url));
    return checked.ok ? null : invalidUrl(`is not allowed: ${checked.reason}`);
  }

  const ownedEndpoint = (customerId: string, id: string) =>
    z.uuid().safeParse(id).success
      ? prisma.webhookEndpoint.findFirst({ where: { id, deletedAt: null, account: { customerId } } })
      : Promise.resolve(null);

  async function createEndpoint(customerId: string, input: unknown): Promise<CreateEndpointResult> {
    const refused = (error: UserError): CreateEndpointResult => ({ endpoint: null, secret: null, errors: [error] });
    const parsed = parseInput(createWebhookEndpointInput, input);
    if (!parsed.ok) return refused(parsed.error);
    const { accountId, url } = parsed.value;
    const account = await prisma.account.findFirst({ where: { id: accountId, customerId }, select: { id: true } });
    if (!account) return refused(userError('ACCOUNT_NOT_FOUND', 'No such account', ['accountId']));
    const urlError = await refuseUrl(url);
    if (urlError) return refused(urlError);

    const id = randomUUID();
    const secret = newSigningSecret();
    const endpoint = await prisma.$transaction(async (tx) => {
      // One registration per account at a time, so the limit holds under concurrent requests.
      await tx.$executeRaw`SELECT pg_advisory_xact_lock(hashtext('webhook-endpoints'), hashtext(${accountId}))`;
      const live = await tx.webhookEndpoint.count({ where: { accountId, deletedAt: null } });
      if (live >= MAX_ENDPOINTS_PER_ACCOUNT) return null;
      return tx.webhookEndpoint.create({
        data: { id, accountId, url, secretCiphertext: new Uint8Array(encryptSecret(deps.secretKey, id, secret)) },
      });
    });
    if (!endpoint) {
      return refused(
        userError('INVALID_INPUT', `accountId already has ${MAX_ENDPOINTS_PER_ACCOUNT} webhook endpoints; delete one first`, ['accountId']),
      );
    }
    logger.info({ endpointId: id, accountId }, 'webhook endpoint registered');
    return { endpoint, secret, errors: [] };
  }

  /** True when a live endpoint of the caller's was deleted now; false when there is none. */
  async function deleteEndpoint(customerId: string, id: string): Promise<boolean> {
    const endpoint = await ownedEndpoint(customerId, id);
    if (!endpoint) return false;
    const deleted = await prisma.$transaction(async (tx) => {
      const n = await tx.$executeRaw`UPDATE webhook_endpoints SET deleted_at = now() WHERE id = ${id}::uuid AND deleted_at IS NULL`;
      // What it was still owed will not be sent: end it now, visibly, rather than at its next attempt.
      await tx.$executeRaw`
        UPDATE webhook_deliveries SET status = 'FAILED', last_error = 'endpoint deleted', next_attempt_at = NULL, job_id = NULL
        WHERE endpoint_id = ${id}::uuid AND status = 'PENDING'`;
      return n > 0;
    });
    if (deleted) logger.info({ endpointId: id, accountId: endpoint.accountId }, 'webhook endpoint deleted');
    return deleted;
  }

  /** Queues one more attempt of one event to one endpoint, now, with a new retry window. */
  async function redeliver(customerId: string, endpointId: string, eventId: string): Promise<WebhookDelivery> {
    const endpoint = await ownedEndpoint(customerId, endpointId);
    if (!endpoint) throw new DomainError(userError('INVALID_INPUT', 'No such webhook endpoint', ['endpointId']));
    const position = decodeCursor(eventId);
    const [event] = position
      ? await prisma.$queryRaw<{ seq: bigint; occurredAt: Date }[]>`
          SELECT seq, occurred_at AS "occurredAt" FROM payment_events
          WHERE seq = ${position.seq} AND xid = ${position.xid.toString()}::xid8 AND account_id = ${endpoint.accountId}::uuid`
      : [];
    if (!event) throw new DomainError(userError('INVALID_INPUT', "No such event of this endpoint's account", ['eventId']));
    const jobId = randomUUID();
    const delivery = await prisma.$transaction(async (tx) => {
      const [row] = await tx.$queryRaw<{ id: string }[]>`
        INSERT INTO webhook_deliveries (endpoint_id, event_seq, event_id, event_occurred_at, job_id, next_attempt_at)
        VALUES (${endpointId}::uuid, ${event.seq}, ${eventId}, ${event.occurredAt}, ${jobId}::uuid, now())
        ON CONFLICT (endpoint_id, event_seq) DO UPDATE SET
          status = 'PENDING', retry_until = NULL, next_attempt_at = now(), job_id = excluded.job_id
        RETURNING id::text AS id`;
      if (!row) throw new Error('redelivery upsert returned nothing');
      await enqueueWebhookDelivery(deps.boss, tx, deps.jobOptions, { deliveryId: row.id, endpointId, jobId });
      return tx.webhookDelivery.findUniqueOrThrow({ where: { id: row.id } });
    });
    logger.info({ endpointId, eventId, deliveryId: delivery.id }, 'webhook redelivery queued');
    return delivery;
  }

  /** An account's live endpoints, oldest first. */
  const listEndpoints = (accountId: string): Promise<WebhookEndpoint[]> =>
    prisma.webhookEndpoint.findMany({ where: { accountId, deletedAt: null }, orderBy: [{ createdAt: 'asc' }, { id: 'asc' }] });

  /** An endpoint's deliveries, newest first, keyed by (createdAt, id). */
  const deliveryPage = (endpointId: string, page: KeysetPage<[string, string]>): Promise<WebhookDelivery[]> =>
    prisma.webhookDelivery.findMany({
      where: { endpointId, ...afterCreatedAtId(page.after) },
      orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
      take: page.limit + 1,
    });

  return { createEndpoint, deleteEndpoint, redeliver, listEndpoints, deliveryPage };
}

export type WebhookService = ReturnType<typeof createWebhookService>;

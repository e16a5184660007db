import type { PgBoss } from 'pg-boss';
import { type PrismaClient, prismaSql } from '../db/prisma.ts';
import { readEvents } from '../events/store.ts';
import { enqueueWebhookDeliveries } from '../jobs/enqueue.ts';
import type { Logger } from '../logger.ts';

/**
 * The dispatcher: follows the payment event stream from a position stored in the database
 * (`webhook_dispatch_cursor`, one row) and, for each event, creates one delivery per endpoint
 * of its account that exists then, with its `webhook.deliver` job, and moves the position on,
 * all in one transaction. A crash before commit repeats the batch; the unique
 * (endpoint, event) key makes the repeat insert nothing twice.
 *
 * Every worker process runs one; a transaction-scoped advisory lock (`pg_try_advisory_xact_lock`)
 * lets one dispatch at a time and the others skip the round. Reads go through `readEvents`, below the visibility
 * horizon, so an event that commits late is never passed over (ADR 0006).
 */

/** The advisory lock a dispatching transaction holds (any fixed number no other lock uses). */
const DISPATCH_LOCK = 7_130_520_261_125n;

/** Events fanned out per transaction. */
export const DISPATCH_BATCH = 500;

/** One round: returns how many events it read, or null when another dispatcher holds the cursor. */
export async function dispatchOnce(deps: {
  prisma: PrismaClient;
  boss: PgBoss;
  jobOptions: Record<string, number | boolean>;
  batch?: number;
}): Promise<number | null> {
  const limit = deps.batch ?? DISPATCH_BATCH;
  return deps.prisma.$transaction(
    async (tx) => {
      // An advisory lock, not FOR UPDATE on the cursor row: a row lock would give this transaction
      // an xid at once, and while it runs the visibility horizon of every reader of the stream (the
      // API's feeds too) would stop at it. Until it writes, this transaction holds no xid.
      const [lock] = await tx.$queryRaw<{ locked: boolean }[]>`SELECT pg_try_advisory_xact_lock(${DISPATCH_LOCK}) AS locked`;
      if (!lock?.locked) return null;
      const [cursor] = await tx.$queryRaw<
        { xid: string; seq: string }[]
      >`SELECT xid::text AS xid, seq::text AS seq FROM webhook_dispatch_cursor`;
      if (!cursor) throw new Error('webhook_dispatch_cursor has no row');
      const events = await readEvents(prismaSql(tx), { after: { xid: BigInt(cursor.xid), seq: BigInt(cursor.seq) }, limit });
      const last = events.at(-1);
      if (!last) return 0;
      const created = await tx.$queryRawUnsafe<{ id: string; endpointId: string; jobId: string }[]>(
        `INSERT INTO webhook_deliveries (endpoint_id, event_seq, event_id, event_occurred_at, job_id, next_attempt_at)
         SELECT w.id, ev.seq, ev.id, ev.occurred_at, gen_random_uuid(), now()
         FROM unnest($1::bigint[], $2::text[], $3::uuid[], $4::timestamptz[]) AS ev(seq, id, account_id, occurred_at)
         JOIN webhook_endpoints w ON w.account_id = ev.account_id AND w.deleted_at IS NULL
         ORDER BY ev.seq, w.id
         ON CONFLICT (endpoint_id, event_seq) DO NOTHING
         RETURNING id::text AS id, endpoint_id::text AS "endpointId", job_id::text AS "jobId"`,
        events.map((e) => e.position.seq.toString()),
        events.map((e) => e.id),
        events.map((e) => e.accountId),
        events.map((e) => e.occurredAt),
      );
      await enqueueWebhookDeliveries(
        deps.boss,
        tx,
        deps.jobOptions,
        created.map((d) => ({ deliveryId: d.id, endpointId: d.endpointId, jobId: d.jobId })),
      );
      await tx.$executeRaw`
        UPDATE webhook_dispatch_cursor SET xid = ${last.position.xid.toString()}::xid8, seq = ${last.position.seq}, updated_at = now()`;
      return events.length;
    },
    { maxWait: 10_000, timeout: 30_000 },
  );
}

export interface Dispatcher {
  stop(): Promise<void>;
}

/** Runs `dispatchOnce` in a loop: at once again while batches come back full, else every `intervalMs`. */
export function startDispatcher(deps: {
  prisma: PrismaClient;
  boss: PgBoss;
  logger: Logger;
  jobOptions: Record<string, number | boolean>;
  intervalMs: number;
}): Dispatcher {
  const { logger } = deps;
  const stopping = new AbortController();
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      const abort = () => {
        clearTimeout(timer);
        resolve();
      };
      stopping.signal.addEventListener('abort', abort, { once: true });
    });
  let failures = 0;
  const loop = (async () => {
    while (!stopping.signal.aborted) {
      try {
        const read = await dispatchOnce(deps);
        failures = 0;
        if (read !== null && read >= DISPATCH_BATCH) continue;
      } catch (error) {
        failures++;
        // The database restarting is expected now and then: say so once, then only at debug level.
        if (failures === 1) logger.warn({ err: error }, 'webhook dispatch failed; will retry');
        else logger.debug({ err: error, failures }, 'webhook dispatch failed again');
        await pause(Math.min(deps.intervalMs * 2 ** failures, 10_000));
        continue;
      }
      await pause(deps.intervalMs);
    }
  })();
  return {
    async stop() {
      stopping.abort();
      await loop;
    },
  };
}

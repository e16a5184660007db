import type { PgBoss } from 'pg-boss';
import type { Clock } from '../calendar.ts';
import type { PrismaClient } from '../db/prisma.ts';
import type { Logger } from '../logger.ts';
import { enqueueExecution, enqueueSettlement } from './enqueue.ts';
import { QUEUES, type QueuePolicy } from './queues.ts';

/**
 * The sweeper: a PENDING payment must always have a live job (created, retry or active) in the
 * settlement or reconciliation queue. One that has none (its job was deleted by pg-boss's retention,
 * or by hand) would wait forever; the sweeper, run every minute, gives it a fresh settlement job.
 * Likewise a SCHEDULED payment must have a live execution job; one that has none gets a fresh one
 * for its day.
 */

// One sweep at a time across every worker process: the second waits for nothing and finds nothing.
const SWEEP_LOCK = "hashtext('payments.sweep')";

/** Enqueues a settlement job for each PENDING payment older than `minAgeSeconds` that has no live job. Returns their ids. */
export async function sweepOrphanedPayments(deps: {
  prisma: PrismaClient;
  boss: PgBoss;
  queue: QueuePolicy;
  minAgeSeconds: number;
  clock: Clock;
  logger: Logger;
  limit?: number;
}): Promise<string[]> {
  const { prisma, boss } = deps;
  const ids = await prisma.$transaction(async (tx) => {
    const [lock] = await tx.$queryRawUnsafe<{ locked: boolean }[]>(`SELECT pg_try_advisory_xact_lock(${SWEEP_LOCK}) AS locked`);
    if (!lock?.locked) return [];
    const orphans = await tx.$queryRaw<{ id: string }[]>`
      SELECT p.id::text AS id FROM payments p
      WHERE p.status = 'PENDING' AND p.created_at < now() - make_interval(secs => ${deps.minAgeSeconds})
        AND NOT EXISTS (
          SELECT 1 FROM pgboss.job j
          WHERE j.name IN (${QUEUES.settle}, ${QUEUES.reconcile})
            AND j.state IN ('created', 'retry', 'active')
            AND j.data->>'paymentId' = p.id::text)
      ORDER BY p.created_at
      LIMIT ${deps.limit ?? 500}`;
    for (const { id } of orphans) await enqueueSettlement(boss, tx, deps.queue, { paymentId: id, swept: true }, { fresh: true });
    const unscheduled = await tx.$queryRaw<{ id: string; execute_on: string }[]>`
      SELECT p.id::text AS id, to_char(p.execute_on, 'YYYY-MM-DD') AS execute_on FROM payments p
      WHERE p.status = 'SCHEDULED' AND p.created_at < now() - make_interval(secs => ${deps.minAgeSeconds})
        AND NOT EXISTS (
          SELECT 1 FROM pgboss.job j
          WHERE j.name = ${QUEUES.execute} AND j.state IN ('created', 'retry', 'active') AND j.data->>'paymentId' = p.id::text)
      ORDER BY p.execute_on
      LIMIT ${deps.limit ?? 500}`;
    for (const { id, execute_on } of unscheduled) {
      await enqueueExecution(boss, tx, { policy: deps.queue, clock: deps.clock }, { paymentId: id, executeOn: execute_on, fresh: true });
    }
    return [...orphans, ...unscheduled].map((o) => o.id);
  });
  if (ids.length > 0) deps.logger.warn({ paymentIds: ids }, 'PENDING or SCHEDULED payments without a job were enqueued again');
  return ids;
}

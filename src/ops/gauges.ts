import { type PrismaClient, prismaSql } from '../db/prisma.ts';
import type { EventFeed } from '../events/feed.ts';
import { horizonHolders } from '../events/store.ts';
import { JOBS } from '../jobs/queues.ts';
import { PAYMENT_STATUSES } from '../payments/lifecycle.ts';
import { type Metrics, observeGauge, sharedRead } from './metrics.ts';

/** How long a scrape's database counts are reused by the next scrapes. */
export const METRICS_CACHE_MS = 15_000;

/**
 * The API process's gauges, read at scrape time from the database and the subscription hub. The
 * database counts are shared by concurrent scrapes and reused for `cacheMs`, so scrapes (or
 * someone hammering /metrics) cost at most one count per window.
 */
export function observeApiGauges(metrics: Metrics, prisma: PrismaClient, events: EventFeed, cacheMs: number): void {
  const { registry } = metrics;
  const statusCounts = sharedRead(
    () => prisma.$queryRaw<{ status: string; n: bigint }[]>`SELECT status::text AS status, count(*) AS n FROM payments GROUP BY status`,
    cacheMs,
  );
  observeGauge(registry, { name: 'payments_by_status', help: 'Payments in the database, by status', labelNames: ['status'] }, async () => {
    const counts = new Map((await statusCounts()).map((r) => [r.status, Number(r.n)]));
    return PAYMENT_STATUSES.map((status) => ({ labels: { status }, value: counts.get(status) ?? 0 }));
  });
  // Depth and age come from one query; both gauges of a scrape share it. The age is how long the
  // oldest job that is due (new, or a retry whose backoff has passed) has waited for a worker: a
  // retry waiting out its backoff is not a backlog. The predicate is exactly
  // that of pg-boss's fetch index (job_i11: name, priority, created_on, start_after WHERE state <
  // 'active' AND NOT blocked), so it is answered by an index-only scan of the waiting jobs' entries
  // whenever they are a small part of the table, never by reading the completed history.
  const queueRows = sharedRead(
    () => prisma.$queryRaw<{ name: string; depth: bigint; age: number }[]>`
          SELECT name, count(*) AS depth,
            coalesce(extract(epoch FROM now() - min(start_after) FILTER (WHERE start_after <= now())), 0)::float8 AS age
          FROM pgboss.job WHERE name IN (${JOBS.settle.name}, ${JOBS.reconcile.name}) AND state < 'active' AND NOT blocked GROUP BY name`,
    1_000,
  );
  observeGauge(
    registry,
    { name: 'payments_queue_depth', help: 'Jobs waiting (created or retry), by queue', labelNames: ['queue'] },
    async () => (await queueRows()).map((r) => ({ labels: { queue: r.name }, value: Number(r.depth) })),
  );
  observeGauge(
    registry,
    {
      name: 'payments_queue_oldest_job_age_seconds',
      help: 'How long the oldest job due to run has waited for a worker, by queue',
      labelNames: ['queue'],
    },
    async () => (await queueRows()).map((r) => ({ labels: { queue: r.name }, value: r.age })),
  );
  observeGauge(registry, { name: 'payments_subscriptions_active', help: 'Live subscriptions on this API process' }, () => [
    { value: events.size() },
  ]);
  observeGauge(
    registry,
    { name: 'payments_event_feed_up', help: '1 while this process follows the payment event stream (its polls succeed)' },
    () => [{ value: events.isHealthy() ? 1 : 0 }],
  );
  // The feed's own lag, whatever its cause (a held horizon, a lost connection, a backlog): what a
  // subscriber of this process waits at most for an event. Alert above 2 x the idle-in-transaction
  // timeout (30 s by default), page above 120 s (README, "Timeouts").
  observeGauge(
    registry,
    {
      name: 'payments_event_feed_position_age_seconds',
      help: 'This process has delivered every event of transactions that began more than this many seconds ago; alert above 30',
    },
    () => [{ value: events.positionAgeSeconds() }],
  );
  // The event stream is read below the cluster-wide horizon: a transaction holding an xid anywhere
  // on the cluster (another database included, or a frozen process mid-transaction) holds back
  // every subscriber and webhook until it ends, while everything else looks healthy.
  const holders = sharedRead(() => horizonHolders(prismaSql(prisma)), 1_000);
  observeGauge(
    registry,
    {
      name: 'payments_event_horizon_lag_seconds',
      help: 'How long the oldest transaction holding the event horizon back has been open (0 when none); alert above 60',
    },
    async () => [{ value: Math.max(0, ...(await holders()).map((h) => h.seconds)) }],
  );
}

/** The worker process's gauges: the provider's circuit, its jobs in flight, and the oldest event owed to a webhook endpoint. */
export function observeWorkerGauges(
  metrics: Metrics,
  prisma: PrismaClient,
  worker: { circuitState(): unknown; inFlight(): Record<string, number> },
): void {
  const { registry } = metrics;
  observeGauge(
    registry,
    { name: 'payments_provider_circuit_open', help: 'State of the circuit breaker around the provider', labelNames: ['state'] },
    () => [{ labels: { state: String(worker.circuitState()) }, value: 1 }],
  );
  observeGauge(
    registry,
    {
      name: 'payments_worker_jobs_in_flight',
      help: 'Jobs this worker process is running now, by queue (at most WORKER_CONCURRENCY for settlement)',
      labelNames: ['queue'],
    },
    () => Object.entries(worker.inFlight()).map(([queue, value]) => ({ labels: { queue }, value })),
  );
  const oldest = sharedRead(
    () => prisma.$queryRaw<{ age: number | null }[]>`
      SELECT extract(epoch FROM now() - min(event_occurred_at))::float8 AS age FROM webhook_deliveries WHERE status = 'PENDING'`,
    1_000,
  );
  observeGauge(
    registry,
    {
      name: 'payments_webhook_oldest_undelivered_event_age_seconds',
      help: 'Age of the oldest event still owed to a webhook endpoint (PENDING delivery); 0 when none',
    },
    async () => [{ value: (await oldest())[0]?.age ?? 0 }],
  );
}

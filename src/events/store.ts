/*
 * The SQL of the payment event stream. Every read is cut at the visibility horizon,
 * `pg_snapshot_xmin(pg_current_snapshot())`: every transaction below it has finished, so no
 * event can still appear below it. Reading "after my position, below the horizon, in (xid, seq)
 * order" therefore never skips an event that commits later (ADR 0006).
 *
 * The functions take a `Sql` runner so the same statements serve a Prisma client (queries) and
 * the event feed's own dedicated connection.
 */

import type { Sql } from '../db/prisma.ts';
import type { PaymentStatus } from '../payments/lifecycle.ts';
import { type EventPosition, encodeCursor } from './cursor.ts';

export interface StoredEvent {
  /** The cursor of this event. */
  id: string;
  position: EventPosition;
  paymentId: string;
  accountId: string;
  previousStatus: PaymentStatus | null;
  status: PaymentStatus;
  amount: bigint;
  occurredAt: Date;
}

interface EventRow {
  xid: string;
  seq: string;
  paymentId: string;
  accountId: string;
  previousStatus: PaymentStatus | null;
  status: PaymentStatus;
  amount: string;
  occurredAt: Date;
}

// These output names shadow the columns in ORDER BY (an output name wins there): queries order by
// the qualified columns, or the text of an xid would sort 1000 before 999.
const EVENT_COLUMNS = `xid::text AS xid, seq::text AS seq, payment_id::text AS "paymentId", account_id::text AS "accountId",
  previous_status::text AS "previousStatus", status::text AS status, amount::text AS amount, occurred_at AS "occurredAt"`;

const HORIZON = 'pg_snapshot_xmin(pg_current_snapshot())';

function toEvent(row: EventRow): StoredEvent {
  const position = { xid: BigInt(row.xid), seq: BigInt(row.seq) };
  return {
    id: encodeCursor(position),
    position,
    paymentId: row.paymentId,
    accountId: row.accountId,
    previousStatus: row.previousStatus,
    status: row.status,
    amount: BigInt(row.amount),
    occurredAt: row.occurredAt,
  };
}

/** Raised by a read from a position that retention has already passed: the events after it were deleted. */
export class EventsPrunedError extends Error {
  override name = 'EventsPrunedError';
  constructor() {
    super('the position is older than the event retention: events after it were deleted');
  }
}

/**
 * Events after `after` (exclusive) and below the horizon, oldest first: of one account, or of
 * every account when `accountId` is omitted (the feed's tail).
 *
 * With `refusePruned`, the statement also reads how far retention has deleted and throws
 * `EventsPrunedError` when that is past `after`. One statement is one snapshot: retention records
 * its boundary before it deletes anything, so a snapshot that sees any event deleted sees the
 * boundary too. Checking in a statement of its own before the read would let a prune slip in
 * between, and the read would skip what it deleted without a word.
 */
export async function readEvents(
  sql: Sql,
  options: { after: EventPosition; limit: number; accountId?: string; refusePruned?: boolean },
): Promise<StoredEvent[]> {
  const params: unknown[] = [options.after.xid.toString(), options.after.seq.toString(), options.limit];
  const account = options.accountId === undefined ? '' : `account_id = $${params.push(options.accountId)}::uuid AND`;
  const where = `${account} (xid, seq) > ($1::xid8, $2::bigint) AND xid < ${HORIZON}`;
  if (!options.refusePruned) {
    const rows = await sql<EventRow>(
      `SELECT ${EVENT_COLUMNS} FROM payment_events WHERE ${where} ORDER BY payment_events.xid, payment_events.seq LIMIT $3`,
      params,
    );
    return rows.map(toEvent);
  }
  // One row when there is nothing to return (gone, or no event), else one per event.
  const rows = await sql<Partial<EventRow> & { gone: boolean }>(
    `SELECT r.gone, e."xid", e."seq", e."paymentId", e."accountId", e."previousStatus", e.status, e.amount, e."occurredAt"
     FROM (SELECT EXISTS (SELECT 1 FROM payment_event_retention
             WHERE (pruned_xid, pruned_seq) > ($1::xid8, $2::bigint)) AS gone) r
     LEFT JOIN LATERAL (
       SELECT ${EVENT_COLUMNS}, payment_events.xid AS sort_xid, payment_events.seq AS sort_seq FROM payment_events
       WHERE NOT r.gone AND ${where} ORDER BY payment_events.xid, payment_events.seq LIMIT $3) e ON true
     ORDER BY e.sort_xid, e.sort_seq`,
    params,
  );
  if (rows[0]?.gone) throw new EventsPrunedError();
  return rows.filter((row): row is EventRow & { gone: boolean } => row.xid !== null && row.xid !== undefined).map(toEvent);
}

/**
 * A position every event that becomes readable from now on sorts after: (horizon, 0). Events
 * already readable sort before it.
 */
export async function currentHorizon(sql: Sql): Promise<EventPosition> {
  const [row] = await sql<{ xid: string }>(`SELECT ${HORIZON}::text AS xid`, []);
  if (!row) throw new Error('no snapshot horizon');
  return { xid: BigInt(row.xid), seq: 0n };
}

/**
 * The current snapshot's bounds: every xid below `xmin` has ended (the horizon), every xid from
 * `xmax` on had not been assigned yet when it was taken.
 */
export async function snapshotBounds(sql: Sql): Promise<{ xmin: bigint; xmax: bigint }> {
  const [row] = await sql<{ xmin: string; xmax: string }>(
    'SELECT pg_snapshot_xmin(s)::text AS xmin, pg_snapshot_xmax(s)::text AS xmax FROM pg_current_snapshot() AS s',
    [],
  );
  if (!row) throw new Error('no snapshot');
  return { xmin: BigInt(row.xmin), xmax: BigInt(row.xmax) };
}

/** A transaction that holds the horizon back: it has an xid and has not ended. */
export interface HorizonHolder {
  /** The backend's pid; null for a prepared transaction (it belongs to no session). */
  pid: number | null;
  database: string | null;
  application: string | null;
  /** The session's state (`idle in transaction` is the usual culprit), or `prepared`. */
  state: string | null;
  since: Date;
  seconds: number;
}

/**
 * Every transaction on the cluster that holds an xid (any database, and prepared transactions),
 * oldest first. The horizon cannot pass the oldest of them, so events committed after it start
 * cannot be read until it ends: its age is how far the event stream lags (0 when there is none).
 * Sessions of other roles show only to a role with pg_read_all_stats (or a superuser).
 */
export async function horizonHolders(sql: Sql): Promise<HorizonHolder[]> {
  return sql<HorizonHolder>(
    `SELECT pid, datname::text AS database, application_name AS application, state, xact_start AS since,
       greatest(extract(epoch FROM now() - xact_start), 0)::float8 AS seconds
     FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
     UNION ALL
     SELECT NULL, database::text, 'prepared transaction ' || gid, 'prepared', prepared,
       greatest(extract(epoch FROM now() - prepared), 0)::float8
     FROM pg_prepared_xacts
     ORDER BY since`,
    [],
  );
}

/** How far retention has deleted events; null when it never has. */
export async function prunedThrough(sql: Sql): Promise<EventPosition | null> {
  const [row] = await sql<{ xid: string; seq: string }>(
    'SELECT pruned_xid::text AS xid, pruned_seq::text AS seq FROM payment_event_retention',
    [],
  );
  return row ? { xid: BigInt(row.xid), seq: BigInt(row.seq) } : null;
}

/**
 * Deletes the events that occurred before `before`, as a prefix of the stream: first the
 * boundary is recorded (so an older cursor is refused from then on), then rows are deleted in
 * batches. Safe to run concurrently and to re-run after a crash. Returns the number deleted.
 */
export async function pruneEvents(sql: Sql, options: { before: Date; batchSize?: number }): Promise<number> {
  const [boundary] = await sql<{ xid: string; seq: string }>(
    `WITH boundary AS (
       SELECT xid, seq FROM payment_events
       WHERE occurred_at < $1 AND xid < ${HORIZON}
       ORDER BY xid DESC, seq DESC LIMIT 1)
     INSERT INTO payment_event_retention (pruned_xid, pruned_seq)
     SELECT xid, seq FROM boundary
     ON CONFLICT (id) DO UPDATE SET pruned_xid = excluded.pruned_xid, pruned_seq = excluded.pruned_seq, pruned_at = now()
       WHERE (payment_event_retention.pruned_xid, payment_event_retention.pruned_seq) < (excluded.pruned_xid, excluded.pruned_seq)
     RETURNING pruned_xid::text AS xid, pruned_seq::text AS seq`,
    [options.before],
  );
  const through = boundary ?? (await prunedThrough(sql));
  if (!through) return 0;
  let deleted = 0;
  for (;;) {
    const [row] = await sql<{ n: string }>(
      `WITH gone AS (
         DELETE FROM payment_events WHERE seq IN (
           SELECT seq FROM payment_events WHERE (xid, seq) <= ($1::xid8, $2::bigint) ORDER BY xid, seq LIMIT $3)
         RETURNING 1)
       SELECT count(*)::text AS n FROM gone`,
      [through.xid.toString(), through.seq.toString(), options.batchSize ?? 5_000],
    );
    const n = Number(row?.n ?? 0);
    deleted += n;
    if (n === 0) return deleted;
  }
}

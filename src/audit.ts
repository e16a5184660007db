import { z } from 'zod';
import { type Clock, type Frequency, londonToday, occurrenceDate, systemClock } from './calendar.ts';
import { type PrismaClient, prismaSql } from './db/prisma.ts';
import { horizonHolders } from './events/store.ts';
import { Prisma } from './generated/prisma/client.ts';
import { QUEUES } from './jobs/queues.ts';
import { checkDoubleEntry } from './ledger/books.ts';
import { COUNTS_AGAINST_DAILY_LIMIT, EXECUTED, isIn, STOPPED, sqlStatuses } from './payments/lifecycle.ts';

/**
 * The bank's invariants, checked from the outside against the database (and the provider, when
 * its URL is given). Every check returns its violations; an empty list means it holds.
 */

export interface AuditCheck {
  name: string;
  checked: number;
  violations: string[];
}

/** A measurement the audit reports whether or not it is in bounds. */
export interface AuditFigure {
  name: string;
  value: number;
  unit: string;
  /** Above this it is flagged, as a violation of the check it belongs to. */
  threshold: number;
}

export interface AuditReport {
  checks: AuditCheck[];
  figures: AuditFigure[];
  ok: boolean;
}

const MAX_LISTED = 20;

const providerPayments = z.array(
  z.object({ idempotencyKey: z.string(), amount: z.number(), status: z.string(), returnCode: z.string().nullish() }),
);
const providerCreditList = z.array(
  z.object({ id: z.string(), amount: z.number(), receivedAt: z.string(), returned: z.object({}).loose().nullable() }),
);

type Check = (name: string, checked: number, violations: string[]) => void;

/**
 * Every credit the provider delivered and we read is credited once (one INBOUND_CREDIT entry of its
 * amount, to its account) or sent back (no entry at all), and none waits long to be sent back.
 */
async function checkProviderCredits(prisma: PrismaClient, check: Check, pendingMaxAgeSeconds: number): Promise<void> {
  const credits = await prisma.$queryRaw<{ id: string; outcome: string; problem: string }[]>`
    WITH agg AS (
      SELECT c.id, c.outcome, c.amount, c.account_id, c.received_at, count(l.id) AS n, coalesce(sum(l.amount), 0) AS credited,
        bool_and(l.account_id = c.account_id) AS same_account
      FROM provider_credits c LEFT JOIN ledger_entries l ON l.provider_credit_id = c.id
      GROUP BY c.id)
    SELECT id, outcome, concat_ws('; ',
        CASE WHEN outcome = 'CREDITED' AND n <> 1 THEN 'credited ' || n || ' times' END,
        CASE WHEN outcome = 'CREDITED' AND n = 1 AND (credited <> amount OR NOT same_account) THEN 'credited with another amount or account' END,
        CASE WHEN outcome <> 'CREDITED' AND n > 0 THEN outcome || ' but credited' END,
        CASE WHEN outcome = 'RETURNING' AND received_at <= now() - make_interval(secs => ${pendingMaxAgeSeconds}) THEN 'not yet returned to the provider since ' || received_at END
      ) AS problem
    FROM agg
    WHERE (outcome = 'CREDITED' AND (n <> 1 OR credited <> amount OR NOT same_account))
      OR (outcome <> 'CREDITED' AND n > 0)
      OR (outcome = 'RETURNING' AND received_at <= now() - make_interval(secs => ${pendingMaxAgeSeconds}))`;
  const strays = await prisma.$queryRaw<{ id: bigint }[]>`
    SELECT l.id FROM ledger_entries l LEFT JOIN provider_credits c ON c.id = l.provider_credit_id
    WHERE l.kind = 'INBOUND_CREDIT' AND (c.id IS NULL OR c.outcome <> 'CREDITED')`;
  const total = Number((await prisma.$queryRaw<{ n: bigint }[]>`SELECT count(*) AS n FROM provider_credits`)[0]?.n ?? 0);
  check('every provider credit is credited once or returned, never both', total, [
    ...credits.map((r) => `credit ${r.id} (${r.outcome}): ${r.problem}`),
    ...strays.map((r) => `ledger entry ${r.id}: INBOUND_CREDIT without a credited provider credit`),
  ]);
}

/**
 * Standing orders: each occurrence once, on its schedule's dates, none skipped before the next one
 * due; none still owed (an active order whose next date is `lastDueDay` or earlier: the scheduler
 * runs every minute); and a cancelled order has no occurrence left waiting to run.
 */
async function checkStandingOrders(prisma: PrismaClient, check: Check, lastDueDay: string): Promise<void> {
  const orders = await prisma.$queryRaw<{ id: string; first: string; frequency: Frequency; n: number; dates: string[] }[]>`
    SELECT s.id::text, to_char(s.first_payment_on, 'YYYY-MM-DD') AS first, s.frequency::text AS frequency, s.occurrences_created AS n,
      coalesce(array_agg(to_char(p.execute_on, 'YYYY-MM-DD') ORDER BY p.execute_on) FILTER (WHERE p.id IS NOT NULL), '{}') AS dates
    FROM standing_orders s LEFT JOIN payments p ON p.standing_order_id = s.id
    GROUP BY s.id`;
  const badKeys = await prisma.$queryRaw<{ id: string }[]>`
    SELECT id::text FROM payments
    WHERE standing_order_id IS NOT NULL AND idempotency_key <> 'so:' || standing_order_id || ':' || to_char(execute_on, 'YYYY-MM-DD')`;
  const problems = badKeys.map((r) => `payment ${r.id}: not keyed so:<order>:<date>`);
  for (const order of orders) {
    const expected = Array.from({ length: order.n }, (_, i) => occurrenceDate(order.first, order.frequency, i));
    if (JSON.stringify(order.dates) !== JSON.stringify(expected)) {
      problems.push(
        `standing order ${order.id}: occurrences ${order.dates.join(', ') || 'none'}, expected ${expected.join(', ') || 'none'}`,
      );
    }
  }
  check('every standing-order occurrence exists exactly once, on its date', orders.length, problems);

  const owed = await prisma.$queryRaw<{ id: string; next: string }[]>`
    SELECT id::text, to_char(next_payment_on, 'YYYY-MM-DD') AS next FROM standing_orders
    WHERE active AND next_payment_on <= ${lastDueDay}::date ORDER BY next_payment_on, id`;
  const leftOver = await prisma.$queryRaw<{ id: string; payment: string }[]>`
    SELECT s.id::text, p.id::text AS payment FROM standing_orders s JOIN payments p ON p.standing_order_id = s.id
    WHERE s.cancelled_at IS NOT NULL AND p.status = 'SCHEDULED' ORDER BY s.id, p.execute_on`;
  check('every due standing-order occurrence was made, and a cancelled order has none waiting', orders.length, [
    ...owed.map((r) => `standing order ${r.id}: occurrence of ${r.next} not made`),
    ...leftOver.map((r) => `standing order ${r.id} cancelled, but its occurrence ${r.payment} is still SCHEDULED`),
  ]);
}

/**
 * Holds: every payment that was ever HELD has at most one decision in the operator action log
 * (approvePayment, rejectPayment, or expireHold by the system), and it is the one its history
 * shows: approved exactly when it left HELD for PENDING, rejected when it was CANCELLED
 * REJECTED_IN_REVIEW, expired when HOLD_EXPIRED, none when still HELD or cancelled by its customer.
 * No payment that was never HELD has a decision.
 */
async function checkHoldOutcomes(prisma: PrismaClient, check: Check): Promise<void> {
  const rows = await prisma.$queryRaw<{ id: string; problem: string }[]>`
    WITH held AS (
      SELECT payment_id, bool_or(previous_status = 'HELD' AND status = 'PENDING') AS approved,
        bool_or(previous_status = 'HELD' AND status = 'CANCELLED') AS cancelled
      FROM payment_events GROUP BY payment_id HAVING bool_or(status = 'HELD')),
    decisions AS (
      SELECT target_id, count(*) FILTER (WHERE action = 'approvePayment') AS approvals,
        count(*) FILTER (WHERE action = 'rejectPayment') AS rejections,
        count(*) FILTER (WHERE action = 'expireHold') AS expiries
      FROM operator_actions WHERE action IN ('approvePayment', 'rejectPayment', 'expireHold') GROUP BY target_id),
    joined AS (
      SELECT coalesce(h.payment_id, d.target_id) AS id, h.payment_id IS NOT NULL AS was_held, p.status::text AS status,
        p.failure_reason, coalesce(h.approved, false) AS approved, coalesce(h.cancelled, false) AS cancelled,
        coalesce(d.approvals, 0) AS approvals, coalesce(d.rejections, 0) AS rejections, coalesce(d.expiries, 0) AS expiries
      FROM held h FULL JOIN decisions d ON d.target_id = h.payment_id LEFT JOIN payments p ON p.id = coalesce(h.payment_id, d.target_id))
    SELECT id::text, concat_ws('; ',
        CASE WHEN NOT was_held THEN 'a hold decision, but never HELD' END,
        CASE WHEN approvals + rejections + expiries > 1 THEN (approvals + rejections + expiries) || ' hold decisions' END,
        CASE WHEN approved <> (approvals = 1) THEN CASE WHEN approved THEN 'left HELD for PENDING without an approval' ELSE 'approved, but never left HELD for PENDING' END END,
        CASE WHEN (cancelled AND failure_reason = 'REJECTED_IN_REVIEW') <> (rejections = 1) THEN 'rejected ' || rejections || ' times, failure ' || coalesce(failure_reason, 'none') END,
        CASE WHEN (cancelled AND failure_reason = 'HOLD_EXPIRED') <> (expiries = 1) THEN 'expired ' || expiries || ' times, failure ' || coalesce(failure_reason, 'none') END,
        CASE WHEN cancelled AND failure_reason NOT IN ('REJECTED_IN_REVIEW', 'HOLD_EXPIRED', 'CANCELLED_BY_CUSTOMER') THEN 'cancelled from HELD as ' || coalesce(failure_reason, 'nothing') END
      ) AS problem
    FROM joined`;
  const problems = rows.filter((r) => r.problem !== '');
  check(
    'every HELD payment has at most one decision, the one its history shows (approved, rejected, expired, or none)',
    rows.length,
    problems.map((r) => `payment ${r.id}: ${r.problem}`),
  );
}

/**
 * A saved payee's let-through (`let_through_at`) is recorded when it happens: set only with a
 * payment to it that an operator approved or that was debited without a hold, and set whenever
 * such a payment happened more than `marginSeconds` after the payee was saved (a payment screened
 * just before the payee was saved takes its transaction within that margin and does not count).
 */
async function checkLetThrough(prisma: PrismaClient, check: Check, marginSeconds: number): Promise<void> {
  const rows = await prisma.$queryRaw<{ id: string; set: boolean; evidence: boolean; late: boolean }[]>`
    WITH through AS (
      SELECT a.customer_id, p.recipient_sort_code AS sort_code, p.recipient_account_number AS account_number, e.occurred_at
      FROM payment_events e JOIN payments p ON p.id = e.payment_id JOIN accounts a ON a.id = p.account_id
      WHERE (e.previous_status = 'HELD' AND e.status = 'PENDING')
        OR (e.status = 'PENDING' AND (e.previous_status IS NULL OR e.previous_status = 'SCHEDULED')))
    SELECT pe.id::text, pe.let_through_at IS NOT NULL AS set,
      EXISTS (SELECT 1 FROM through t WHERE t.customer_id = pe.customer_id AND t.sort_code = pe.sort_code AND t.account_number = pe.account_number) AS evidence,
      EXISTS (SELECT 1 FROM through t WHERE t.customer_id = pe.customer_id AND t.sort_code = pe.sort_code AND t.account_number = pe.account_number
        AND t.occurred_at > pe.created_at + make_interval(secs => ${marginSeconds})) AS late
    FROM payees pe`;
  check(
    "every payee's let-through is recorded exactly when a payment to it was approved or taken without a hold",
    rows.length,
    rows.flatMap((r) => {
      if (r.set && !r.evidence) return [`payee ${r.id}: let through, but no payment to it was approved or taken without a hold`];
      if (!r.set && r.late) return [`payee ${r.id}: a payment to it was approved or taken without a hold, but it is not let through`];
      return [];
    }),
  );
}

/** Our record of credits against the provider's: returned there exactly when returned here. */
async function checkCreditsAtProvider(
  prisma: PrismaClient,
  provider: { url: string; apiKey: string },
  check: Check,
  pendingMaxAgeSeconds: number,
): Promise<void> {
  const response = await fetch(`${provider.url}/admin/credits`, { headers: { 'x-api-key': provider.apiKey } });
  if (!response.ok) throw new Error(`provider answered ${response.status} to GET /admin/credits`);
  const theirs = providerCreditList.parse(await response.json());
  const ours = new Map((await prisma.providerCredit.findMany({ select: { id: true, outcome: true, amount: true } })).map((c) => [c.id, c]));
  const problems: string[] = [];
  for (const credit of theirs) {
    const mine = ours.get(credit.id);
    if (!mine) {
      if (Date.now() - Date.parse(credit.receivedAt) > pendingMaxAgeSeconds * 1000)
        problems.push(`credit ${credit.id} sent by the provider but never read`);
      continue;
    }
    if (BigInt(credit.amount) !== mine.amount) problems.push(`credit ${credit.id}: provider amount ${credit.amount}, ours ${mine.amount}`);
    if (mine.outcome === 'CREDITED' && credit.returned) problems.push(`credit ${credit.id} credited here and returned to the provider`);
    if (mine.outcome === 'RETURNED' && !credit.returned) problems.push(`credit ${credit.id} RETURNED here but not at the provider`);
  }
  check('every provider credit is credited here or returned there, not both', theirs.length, problems);
}

/** A payment PENDING for longer than this is flagged: settlement (with its retries) takes minutes, not hours. */
export const DEFAULT_PENDING_MAX_AGE_SECONDS = 3600;
/**
 * A SCHEDULED payment is flagged once its day began longer ago than this: its execution job is due
 * at the start of its day, so one still SCHEDULED a day later was never run.
 */
export const DEFAULT_SCHEDULED_GRACE_SECONDS = 24 * 3600;
/**
 * The event horizon lag that is flagged: no transaction of the service stays open this long (a
 * payment's is milliseconds), so a transaction holding an xid longer is stuck or foreign, and every
 * event consumer (subscriptions, webhooks) is waiting behind it.
 */
export const DEFAULT_HORIZON_LAG_MAX_SECONDS = 60;
/**
 * A payment screened just before its payee was saved did not see the payee and lets nothing
 * through; its transaction starts within this long (the pool's wait, TX_OPTIONS) of the screening.
 */
export const DEFAULT_LET_THROUGH_MARGIN_SECONDS = 60;

export async function audit(options: {
  prisma: PrismaClient;
  provider?: { url: string; apiKey: string };
  /** Flag payments PENDING for longer than this (default one hour). */
  pendingMaxAgeSeconds?: number;
  /** DAILY_PAYMENT_LIMIT: no customer's London day may pass it (without it, day totals are only reconciled). */
  dailyLimit?: number;
  /** Flag a SCHEDULED payment whose day began longer ago than this (default a day). */
  scheduledGraceSeconds?: number;
  /** What "today" is for SCHEDULED payments: the system clock unless a test moved the service's. */
  clock?: Clock;
  /** Flag a transaction that has held the event horizon back longer than this (default a minute). */
  horizonLagMaxSeconds?: number;
  /** A payee saved this long before a payment let through must be let through by it (default a minute). */
  letThroughMarginSeconds?: number;
}): Promise<AuditReport> {
  const { prisma } = options;
  const checks: AuditCheck[] = [];
  const figures: AuditFigure[] = [];
  const check = (name: string, checked: number, violations: string[]) => checks.push({ name, checked, violations });
  const count = async (table: 'accounts' | 'payments') =>
    Number((await prisma.$queryRawUnsafe<{ n: bigint }[]>(`SELECT count(*) AS n FROM ${table}`))[0]?.n ?? 0);
  const accounts = await count('accounts');
  const payments = await count('payments');

  const drift = await prisma.$queryRaw<{ id: string; balance: bigint; ledger: bigint }[]>`
    SELECT a.id, a.balance, coalesce(sum(l.amount), 0)::bigint AS ledger
    FROM accounts a LEFT JOIN ledger_entries l ON l.account_id = a.id
    GROUP BY a.id HAVING a.balance <> coalesce(sum(l.amount), 0)`;
  check(
    'every balance equals the sum of its ledger',
    accounts,
    drift.map((r) => `account ${r.id}: balance ${r.balance}, ledger ${r.ledger}`),
  );

  const negative = await prisma.$queryRaw<{ id: string; balance: bigint }[]>`SELECT id, balance FROM accounts WHERE balance < 0`;
  check(
    'no balance is negative',
    accounts,
    negative.map((r) => `account ${r.id}: ${r.balance}`),
  );

  const chain = await prisma.$queryRaw<{ id: bigint; account_id: string; balance_after: bigint; running: bigint }[]>`
    SELECT id, account_id, balance_after, running FROM (
      SELECT id, account_id, balance_after, sum(amount) OVER (PARTITION BY account_id ORDER BY id) AS running
      FROM ledger_entries) t
    WHERE balance_after <> running OR balance_after < 0`;
  check(
    'every ledger entry records the balance it left, never below zero',
    accounts,
    chain.map((r) => `entry ${r.id} of ${r.account_id}: balance_after ${r.balance_after}, running sum ${r.running}`),
  );

  // What each status implies: SCHEDULED, and a scheduled payment cancelled before its day or failed
  // for funds on it, moved no money; every other payment has exactly one debit; a stopped one
  // (CANCELLED, FAILED) after a debit exactly one refund; RETURNED exactly one return entry;
  // nothing else gets either. The debit is from the payment's account, and money comes back to
  // the account it was taken from.
  const stopped = Prisma.raw(sqlStatuses(STOPPED));
  const entries = await prisma.$queryRaw<{ id: string; status: string; problem: string }[]>`
    WITH agg AS (
      SELECT p.id, p.status::text AS status, p.amount, p.execute_on IS NOT NULL AS scheduled,
        coalesce(bool_or(l.kind = 'PAYMENT_DEBIT' AND l.account_id <> p.account_id), false) AS debited_elsewhere,
        count(DISTINCT l.account_id) FILTER (WHERE l.kind IN ('PAYMENT_DEBIT', 'PAYMENT_REFUND', 'PAYMENT_RETURN')) AS accounts,
        count(l.id) FILTER (WHERE l.kind = 'PAYMENT_DEBIT') AS debits,
        coalesce(sum(l.amount) FILTER (WHERE l.kind = 'PAYMENT_DEBIT'), 0) AS debit,
        count(l.id) FILTER (WHERE l.kind = 'PAYMENT_REFUND') AS refunds,
        coalesce(sum(l.amount) FILTER (WHERE l.kind = 'PAYMENT_REFUND'), 0) AS refund,
        count(l.id) FILTER (WHERE l.kind = 'PAYMENT_RETURN') AS returns,
        coalesce(sum(l.amount) FILTER (WHERE l.kind = 'PAYMENT_RETURN'), 0) AS returned,
        count(l.id) FILTER (WHERE l.kind NOT IN ('PAYMENT_DEBIT', 'PAYMENT_REFUND', 'PAYMENT_RETURN')) AS others
      FROM payments p LEFT JOIN ledger_entries l ON l.payment_id = p.id
      GROUP BY p.id),
    checked AS (
      SELECT id, status, concat_ws('; ',
        CASE WHEN debits = 0 AND NOT (status = 'SCHEDULED' OR (scheduled AND status IN (${stopped}))) THEN 'no debit while ' || status END,
        CASE WHEN debits > 0 AND status = 'SCHEDULED' THEN 'debited while SCHEDULED' END,
        CASE WHEN debits = 0 AND refunds + returns > 0 THEN 'money back without a debit' END,
        CASE WHEN debits > 1 THEN debits || ' debits' END,
        CASE WHEN debits = 1 AND debit <> -amount THEN 'debit amount differs' END,
        CASE WHEN debits = 1 AND status IN (${stopped}) AND refunds <> 1 THEN refunds || ' refunds' END,
        CASE WHEN refunds = 1 AND refund <> amount THEN 'refund amount differs' END,
        CASE WHEN refunds > 0 AND status NOT IN (${stopped}) THEN 'refunded while ' || status END,
        CASE WHEN status = 'RETURNED' AND returns <> 1 THEN returns || ' return entries' END,
        CASE WHEN returns = 1 AND returned <> amount THEN 'return amount differs' END,
        CASE WHEN returns > 0 AND status <> 'RETURNED' THEN 'return entry while ' || status END,
        CASE WHEN others > 0 THEN others || ' entries of other kinds' END,
        CASE WHEN debited_elsewhere THEN 'debited from another account than its own' END,
        CASE WHEN debits > 0 AND refunds + returns > 0 AND accounts > 1 THEN 'money back to another account than the debit''s' END
      ) AS problem FROM agg)
    SELECT id::text, status, problem FROM checked WHERE problem <> ''`;
  check(
    'each payment has the ledger entries its status implies (a RETURNED one exactly one return entry)',
    payments,
    entries.map((r) => `payment ${r.id} (${r.status}): ${r.problem}`),
  );

  // What "today" is for SCHEDULED payments and due standing-order occurrences: a day's grace after it began.
  const graceSeconds = options.scheduledGraceSeconds ?? DEFAULT_SCHEDULED_GRACE_SECONDS;
  const clock = options.clock ?? systemClock;
  const lastDueDay = londonToday({ now: () => new Date(clock.now().getTime() - graceSeconds * 1000) });

  await checkProviderCredits(prisma, check, options.pendingMaxAgeSeconds ?? DEFAULT_PENDING_MAX_AGE_SECONDS);
  await checkStandingOrders(prisma, check, lastDueDay);
  await checkHoldOutcomes(prisma, check);
  await checkLetThrough(prisma, check, options.letThroughMarginSeconds ?? DEFAULT_LET_THROUGH_MARGIN_SECONDS);

  // Each payment's events are its status history: a creation first, each change from the status
  // the one before left, the last one the status it has now. Retention may have cut the start.
  const pruned = (await prisma.$queryRaw<{ n: bigint }[]>`SELECT count(*) AS n FROM payment_event_retention`)[0]?.n ?? 0n;
  const history = await prisma.$queryRaw<{ id: string; problem: string }[]>`
    WITH e AS (
      SELECT payment_id, previous_status, status,
        lag(status) OVER (PARTITION BY payment_id ORDER BY xid, seq) AS prior,
        row_number() OVER (PARTITION BY payment_id ORDER BY xid, seq) AS n,
        row_number() OVER (PARTITION BY payment_id ORDER BY xid DESC, seq DESC) AS back
      FROM payment_events)
    SELECT p.id::text AS id, concat_ws('; ',
        CASE WHEN count(e.payment_id) = 0 AND ${pruned} = 0 THEN 'no events' END,
        CASE WHEN bool_or(e.n = 1 AND e.previous_status IS NOT NULL) AND ${pruned} = 0 THEN 'first event is not its creation' END,
        CASE WHEN bool_or(e.n > 1 AND e.previous_status IS NULL) THEN 'a creation event after the first' END,
        CASE WHEN bool_or(e.n > 1 AND e.previous_status IS DISTINCT FROM e.prior) THEN 'an event does not follow from the one before' END,
        CASE WHEN bool_or(e.back = 1 AND e.status <> p.status) THEN 'last event ' || max(e.status::text) FILTER (WHERE e.back = 1) || ', payment ' || p.status END
      ) AS problem
    FROM payments p LEFT JOIN e ON e.payment_id = p.id
    GROUP BY p.id, p.status
    HAVING (count(e.payment_id) = 0 AND ${pruned} = 0)
      OR (bool_or(e.n = 1 AND e.previous_status IS NOT NULL) AND ${pruned} = 0)
      OR bool_or(e.n > 1 AND e.previous_status IS NULL)
      OR bool_or(e.n > 1 AND e.previous_status IS DISTINCT FROM e.prior)
      OR bool_or(e.back = 1 AND e.status <> p.status)`;
  check(
    'each payment has events that retrace its status history',
    payments,
    history.map((r) => `payment ${r.id}: ${r.problem}`),
  );

  const pendingMaxAge = options.pendingMaxAgeSeconds ?? DEFAULT_PENDING_MAX_AGE_SECONDS;
  const stale = await prisma.$queryRaw<{ id: string; created_at: Date; minutes: number }[]>`
    SELECT id, created_at, floor(extract(epoch FROM now() - created_at) / 60)::int AS minutes FROM payments
    WHERE status = 'PENDING' AND created_at <= now() - make_interval(secs => ${pendingMaxAge})
    ORDER BY created_at`;
  check(
    'no payment stays PENDING for long',
    payments,
    stale.map((r) => `payment ${r.id} PENDING since ${r.created_at.toISOString()} (${r.minutes} min)`),
  );

  // Webhooks: every event the dispatcher has passed went to each endpoint of its account that was
  // registered before it (and is not deleted), and every delivery still owed is in someone's hands.
  const fanOut = await prisma.$queryRaw<{ checked: bigint; missing: string[] }[]>`
    SELECT count(*) AS checked,
      coalesce(array_agg('event ' || ev.seq || ' to endpoint ' || w.id) FILTER (WHERE d.id IS NULL), '{}') AS missing
    FROM webhook_dispatch_cursor c
    JOIN payment_events ev ON (ev.xid, ev.seq) > (c.started_xid, 0::bigint) AND (ev.xid, ev.seq) <= (c.xid, c.seq)
    JOIN webhook_endpoints w ON w.account_id = ev.account_id AND w.deleted_at IS NULL AND w.created_at < ev.occurred_at
    LEFT JOIN webhook_deliveries d ON d.endpoint_id = w.id AND d.event_seq = ev.seq`;
  check(
    'every dispatched event has a webhook delivery for each endpoint its account had',
    Number(fanOut[0]?.checked ?? 0),
    fanOut[0]?.missing ?? [],
  );

  const owed = await prisma.$queryRaw<{ checked: bigint; stuck: string[] }[]>`
    SELECT count(*) AS checked, coalesce(array_agg(d.id || ': ' || concat_ws(', ',
        CASE WHEN j.id IS NULL THEN 'no live job' END,
        CASE WHEN d.retry_until < now() - interval '1 hour' THEN 'past its retry window' END)) FILTER (
          WHERE j.id IS NULL OR d.retry_until < now() - interval '1 hour'), '{}') AS stuck
    FROM webhook_deliveries d
    LEFT JOIN pgboss.job j ON j.name = 'webhook.deliver' AND j.id = d.job_id AND j.state IN ('created', 'retry', 'active')
    WHERE d.status = 'PENDING'`;
  check(
    'every PENDING webhook delivery has a live job and is within its retry window',
    Number(owed[0]?.checked ?? 0),
    owed[0]?.stuck ?? [],
  );

  // Payee safety. A HELD payment is debited (checked above) and waits for an operator:
  // it has never had a settlement job (approval moves it to PENDING with its first one).
  const queued = await prisma.$queryRaw<{ id: string; jobs: bigint }[]>`
    SELECT p.id::text AS id, count(j.id) AS jobs FROM payments p
    JOIN pgboss.job j ON j.data->>'paymentId' = p.id::text AND j.name IN (${QUEUES.settle}, ${QUEUES.reconcile})
    WHERE p.status = 'HELD' GROUP BY p.id`;
  const held = Number((await prisma.$queryRaw<{ n: bigint }[]>`SELECT count(*) AS n FROM payments WHERE status = 'HELD'`)[0]?.n ?? 0);
  check(
    'no HELD payment has a settlement job',
    held,
    queued.map((r) => `payment ${r.id} HELD with ${r.jobs} settlement jobs`),
  );

  // Each customer's London day: its PENDING, COMPLETED and HELD payments within the limit, and the
  // day total the limit is enforced on equal to their sum.
  const days = await prisma.$queryRaw<{ customer: string; day: string; counted: bigint; used: bigint | null }[]>`
    WITH sums AS (
      SELECT a.customer_id, p.limit_day AS day,
        coalesce(sum(p.amount) FILTER (WHERE p.status IN (${Prisma.raw(sqlStatuses(COUNTS_AGAINST_DAILY_LIMIT))})), 0)::bigint AS counted
      FROM payments p JOIN accounts a ON a.id = p.account_id WHERE p.limit_day IS NOT NULL GROUP BY 1, 2)
    SELECT coalesce(s.customer_id, t.customer_id)::text AS customer, coalesce(s.day, t.day)::text AS day,
      coalesce(s.counted, 0)::bigint AS counted, t.used
    FROM sums s FULL JOIN daily_payment_totals t ON t.customer_id = s.customer_id AND t.day = s.day
    WHERE coalesce(s.counted, 0) <> coalesce(t.used, 0) OR coalesce(s.counted, 0) > ${options.dailyLimit ?? Number.MAX_SAFE_INTEGER}`;
  const dayCount = Number((await prisma.$queryRaw<{ n: bigint }[]>`SELECT count(*) AS n FROM daily_payment_totals`)[0]?.n ?? 0);
  check(
    "no customer's London day passes the daily limit, and each day's total is its payments'",
    dayCount,
    days.map(
      (r) =>
        `customer ${r.customer} on ${r.day}: payments ${r.counted}, day total ${r.used ?? 'missing'}${options.dailyLimit !== undefined && r.counted > BigInt(options.dailyLimit) ? `, limit ${options.dailyLimit}` : ''}`,
    ),
  );

  // A SCHEDULED payment runs at the start of its London day: one still waiting well after that was
  // never run (its job lost), and the customer's money never went.
  const overdue = await prisma.$queryRaw<{ id: string; day: string }[]>`
    SELECT id::text AS id, to_char(execute_on, 'YYYY-MM-DD') AS day FROM payments
    WHERE status = 'SCHEDULED' AND execute_on <= ${lastDueDay}::date ORDER BY execute_on, id`;
  const scheduled = Number(
    (await prisma.$queryRaw<{ n: bigint }[]>`SELECT count(*) AS n FROM payments WHERE status = 'SCHEDULED'`)[0]?.n ?? 0,
  );
  check(
    'no SCHEDULED payment is left past its day',
    scheduled,
    overdue.map((r) => `payment ${r.id} SCHEDULED for ${r.day}, still not run`),
  );

  // A provider event the parser refused is quarantined, never applied: money may have arrived
  // (a bad credit) that no ledger entry shows until an operator deals with it and resolves it.
  const quarantined = await prisma.providerEventQuarantine.findMany({
    where: { resolvedAt: null },
    orderBy: { receivedAt: 'asc' },
    select: { id: true, eventKey: true, rawType: true, problem: true, receivedAt: true },
  });
  check(
    'every provider event the parser refused is resolved by an operator (quarantinedProviderEvents)',
    await prisma.providerEventQuarantine.count(),
    quarantined.map(
      (q) =>
        `quarantined provider event ${q.eventKey} (${q.rawType ?? 'no type'}, id ${q.id}) since ${q.receivedAt.toISOString()}: ${q.problem}`,
    ),
  );

  // The event horizon: the oldest transaction holding an xid anywhere on the cluster. Events
  // committed after it began are unreadable until it ends, so its age is how far every event
  // consumer lags (0 when none).
  const lagMax = options.horizonLagMaxSeconds ?? DEFAULT_HORIZON_LAG_MAX_SECONDS;
  const holders = await horizonHolders(prismaSql(prisma));
  const lagName = 'no transaction holds the event horizon back for long';
  figures.push({ name: 'event horizon lag', value: Math.max(0, ...holders.map((h) => h.seconds)), unit: 's', threshold: lagMax });
  check(
    lagName,
    holders.length,
    holders
      .filter((h) => h.seconds > lagMax)
      .map(
        (h) =>
          `${h.pid === null ? 'a prepared transaction' : `pid ${h.pid}`} (database ${h.database ?? '?'}, application ${h.application || '?'}, ${h.state ?? 'state unknown'}) has held an xid for ${h.seconds.toFixed(1)} s, since ${h.since.toISOString()}`,
      ),
  );

  if (options.provider) {
    const response = await fetch(`${options.provider.url}/admin/payments`, { headers: { 'x-api-key': options.provider.apiKey } });
    if (!response.ok) throw new Error(`provider answered ${response.status} to GET /admin/payments`);
    const held = providerPayments.parse(await response.json());
    const byKey = new Map<string, number>();
    for (const p of held) byKey.set(p.idempotencyKey, (byKey.get(p.idempotencyKey) ?? 0) + 1);
    const returnedThere = new Set(held.filter((p) => p.returnCode).map((p) => p.idempotencyKey));
    const rows = await prisma.payment.findMany({ where: { status: { not: 'PENDING' } }, select: { id: true, status: true, amount: true } });
    const problems: string[] = [];
    for (const p of rows) {
      const n = byKey.get(p.id) ?? 0;
      // A returned payment was executed by the provider like a completed one, then came back.
      const sent = isIn(EXECUTED, p.status);
      if (sent && n !== 1) problems.push(`payment ${p.id} ${p.status} but held ${n} times by the provider`);
      if (!sent && n !== 0) problems.push(`payment ${p.id} ${p.status} (never sent or refunded) but held by the provider`);
      if (p.status === 'RETURNED' && !returnedThere.has(p.id)) problems.push(`payment ${p.id} RETURNED but not returned at the provider`);
    }
    const amounts = new Map(rows.map((r) => [r.id, r.amount]));
    for (const p of held) {
      const ours = amounts.get(p.idempotencyKey);
      if (ours !== undefined && BigInt(p.amount) !== ours)
        problems.push(`payment ${p.idempotencyKey}: provider amount ${p.amount}, ours ${ours}`);
    }
    check('every COMPLETED or RETURNED payment is at the provider exactly once, and no other one is', rows.length, problems);
    await checkCreditsAtProvider(prisma, options.provider, check, pendingMaxAge);
  }

  await checkDoubleEntry(prisma, check);

  return { checks, figures, ok: checks.every((c) => c.violations.length === 0) };
}

/** The report as text for people. */
export function formatAudit(report: AuditReport): string {
  const lines = report.checks.map((c) => {
    const head = `${c.violations.length === 0 ? 'ok  ' : 'FAIL'}  ${c.name} (${c.checked} checked${c.violations.length ? `, ${c.violations.length} violations` : ''})`;
    const listed = c.violations.slice(0, MAX_LISTED).map((v) => `        ${v}`);
    if (c.violations.length > MAX_LISTED) listed.push(`        ... and ${c.violations.length - MAX_LISTED} more`);
    return [head, ...listed].join('\n');
  });
  for (const f of report.figures) lines.push(`      ${f.name}: ${f.value.toFixed(1)} ${f.unit} (flagged above ${f.threshold} ${f.unit})`);
  lines.push(report.ok ? 'All invariants hold.' : 'INVARIANTS VIOLATED.');
  return lines.join('\n');
}

import { z } from 'zod';
import type { PrismaClient } from './db/prisma.ts';
import { QUEUES } from './jobs/queues.ts';

/**
 * The bank's invariants, checked from the outside against the database (and the provider, when
 * its URL is given). Every check returns its violations; an empty list means it holds.
 */

export interface AuditCheck {
  name: string;
  checked: number;
  violations: string[];
}

export interface AuditReport {
  checks: AuditCheck[];
  ok: boolean;
}

const MAX_LISTED = 20;

const providerPayments = z.array(z.object({ idempotencyKey: z.string(), amount: z.number(), status: z.string() }));

/** A payment PENDING for longer than this is flagged: settlement (with its retries) takes minutes, not hours. */
export const DEFAULT_PENDING_MAX_AGE_SECONDS = 3600;

export async function audit(options: {
  prisma: PrismaClient;
  provider?: { url: string; apiKey: string };
  /** Flag payments PENDING for longer than this (default one hour). */
  pendingMaxAgeSeconds?: number;
  /** DAILY_PAYMENT_LIMIT: no customer's London day may pass it (without it, day totals are only reconciled). */
  dailyLimit?: number;
}): Promise<AuditReport> {
  const { prisma } = options;
  const checks: AuditCheck[] = [];
  const check = (name: string, checked: number, violations: string[]) => checks.push({ name, checked, violations });
  const count = async (table: 'accounts' | 'payments') =>
    Number((await prisma.$queryRawUnsafe<{ n: bigint }[]>(`SELECT count(*) AS n FROM ${table}`))[0]?.n ?? 0);
  const accounts = await count('accounts');
  const payments = await count('payments');

  const drift = await prisma.$queryRaw<{ id: string; balance: bigint; ledger: bigint }[]>`
    SELECT a.id, a.balance, coalesce(sum(l.amount), 0)::bigint AS ledger
    FROM accounts a LEFT JOIN ledger_entries l ON l.account_id = a.id
    GROUP BY a.id HAVING a.balance <> coalesce(sum(l.amount), 0)`;
  check('every balance equals the sum of its ledger', accounts, drift.map((r) => `account ${r.id}: balance ${r.balance}, ledger ${r.ledger}`));

  const negative = await prisma.$queryRaw<{ id: string; balance: bigint }[]>`SELECT id, balance FROM accounts WHERE balance < 0`;
  check('no balance is negative', accounts, negative.map((r) => `account ${r.id}: ${r.balance}`));

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

  const entries = await prisma.$queryRaw<{ id: string; status: string; problem: string }[]>`
    SELECT p.id, p.status::text AS status,
      concat_ws('; ',
        CASE WHEN count(*) FILTER (WHERE l.kind = 'PAYMENT_DEBIT') <> 1 THEN count(*) FILTER (WHERE l.kind = 'PAYMENT_DEBIT') || ' debits' END,
        CASE WHEN coalesce(sum(l.amount) FILTER (WHERE l.kind = 'PAYMENT_DEBIT'), 0) <> -p.amount THEN 'debit amount differs' END,
        CASE WHEN p.status IN ('CANCELLED', 'FAILED') AND count(*) FILTER (WHERE l.kind = 'PAYMENT_REFUND') <> 1 THEN count(*) FILTER (WHERE l.kind = 'PAYMENT_REFUND') || ' refunds' END,
        CASE WHEN p.status IN ('CANCELLED', 'FAILED') AND coalesce(sum(l.amount) FILTER (WHERE l.kind = 'PAYMENT_REFUND'), 0) <> p.amount THEN 'refund amount differs' END,
        CASE WHEN p.status IN ('PENDING', 'COMPLETED', 'HELD') AND count(*) FILTER (WHERE l.kind = 'PAYMENT_REFUND') > 0 THEN 'refunded while ' || p.status END
      ) AS problem
    FROM payments p LEFT JOIN ledger_entries l ON l.payment_id = p.id
    GROUP BY p.id
    HAVING count(*) FILTER (WHERE l.kind = 'PAYMENT_DEBIT') <> 1
      OR coalesce(sum(l.amount) FILTER (WHERE l.kind = 'PAYMENT_DEBIT'), 0) <> -p.amount
      OR (p.status IN ('CANCELLED', 'FAILED') AND (count(*) FILTER (WHERE l.kind = 'PAYMENT_REFUND') <> 1
          OR coalesce(sum(l.amount) FILTER (WHERE l.kind = 'PAYMENT_REFUND'), 0) <> p.amount))
      OR (p.status IN ('PENDING', 'COMPLETED', 'HELD') AND count(*) FILTER (WHERE l.kind = 'PAYMENT_REFUND') > 0)`;
  check(
    'each payment has the ledger entries its status implies',
    payments,
    entries.map((r) => `payment ${r.id} (${r.status}): ${r.problem}`),
  );

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
  check('each payment has events that retrace its status history', payments, history.map((r) => `payment ${r.id}: ${r.problem}`));

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
  check('every dispatched event has a webhook delivery for each endpoint its account had', Number(fanOut[0]?.checked ?? 0), fanOut[0]?.missing ?? []);

  const owed = await prisma.$queryRaw<{ checked: bigint; stuck: string[] }[]>`
    SELECT count(*) AS checked, coalesce(array_agg(d.id || ': ' || concat_ws(', ',
        CASE WHEN j.id IS NULL THEN 'no live job' END,
        CASE WHEN d.retry_until < now() - interval '1 hour' THEN 'past its retry window' END)) FILTER (
          WHERE j.id IS NULL OR d.retry_until < now() - interval '1 hour'), '{}') AS stuck
    FROM webhook_deliveries d
    LEFT JOIN pgboss.job j ON j.name = 'webhook.deliver' AND j.id = d.job_id AND j.state IN ('created', 'retry', 'active')
    WHERE d.status = 'PENDING'`;
  check('every PENDING webhook delivery has a live job and is within its retry window', Number(owed[0]?.checked ?? 0), owed[0]?.stuck ?? []);

  // Payee safety (issue 15). A HELD payment is debited (checked above) and waits for an operator:
  // it has never had a settlement job (approval moves it to PENDING with its first one).
  const queued = await prisma.$queryRaw<{ id: string; jobs: bigint }[]>`
    SELECT p.id::text AS id, count(j.id) AS jobs FROM payments p
    JOIN pgboss.job j ON j.data->>'paymentId' = p.id::text AND j.name IN (${QUEUES.settle}, ${QUEUES.reconcile})
    WHERE p.status = 'HELD' GROUP BY p.id`;
  const held = Number((await prisma.$queryRaw<{ n: bigint }[]>`SELECT count(*) AS n FROM payments WHERE status = 'HELD'`)[0]?.n ?? 0);
  check('no HELD payment has a settlement job', held, queued.map((r) => `payment ${r.id} HELD with ${r.jobs} settlement jobs`));

  // Each customer's London day: its PENDING, COMPLETED and HELD payments within the limit, and the
  // day total the limit is enforced on equal to their sum.
  const days = await prisma.$queryRaw<{ customer: string; day: string; counted: bigint; used: bigint | null }[]>`
    WITH sums AS (
      SELECT a.customer_id, p.limit_day AS day,
        coalesce(sum(p.amount) FILTER (WHERE p.status IN ('PENDING', 'COMPLETED', 'HELD')), 0)::bigint AS counted
      FROM payments p JOIN accounts a ON a.id = p.account_id WHERE p.limit_day IS NOT NULL GROUP BY 1, 2)
    SELECT coalesce(s.customer_id, t.customer_id)::text AS customer, coalesce(s.day, t.day)::text AS day,
      coalesce(s.counted, 0)::bigint AS counted, t.used
    FROM sums s FULL JOIN daily_payment_totals t ON t.customer_id = s.customer_id AND t.day = s.day
    WHERE coalesce(s.counted, 0) <> coalesce(t.used, 0) OR coalesce(s.counted, 0) > ${options.dailyLimit ?? Number.MAX_SAFE_INTEGER}`;
  const dayCount = Number((await prisma.$queryRaw<{ n: bigint }[]>`SELECT count(*) AS n FROM daily_payment_totals`)[0]?.n ?? 0);
  check(
    "no customer's London day passes the daily limit, and each day's total is its payments'",
    dayCount,
    days.map((r) => `customer ${r.customer} on ${r.day}: payments ${r.counted}, day total ${r.used ?? 'missing'}${options.dailyLimit !== undefined && r.counted > BigInt(options.dailyLimit) ? `, limit ${options.dailyLimit}` : ''}`),
  );

  if (options.provider) {
    const response = await fetch(`${options.provider.url}/admin/payments`, { headers: { 'x-api-key': options.provider.apiKey } });
    if (!response.ok) throw new Error(`provider answered ${response.status} to GET /admin/payments`);
    const held = providerPayments.parse(await response.json());
    const byKey = new Map<string, number>();
    for (const p of held) byKey.set(p.idempotencyKey, (byKey.get(p.idempotencyKey) ?? 0) + 1);
    const rows = await prisma.payment.findMany({ where: { status: { not: 'PENDING' } }, select: { id: true, status: true, amount: true } });
    const problems: string[] = [];
    for (const p of rows) {
      const n = byKey.get(p.id) ?? 0;
      if (p.status === 'COMPLETED' && n !== 1) problems.push(`payment ${p.id} COMPLETED but held ${n} times by the provider`);
      if (p.status !== 'COMPLETED' && n !== 0) problems.push(`payment ${p.id} ${p.status} (${p.status === 'HELD' ? 'not approved' : 'refunded'}) but held by the provider`);
    }
    const amounts = new Map(rows.map((r) => [r.id, r.amount]));
    for (const p of held) {
      const ours = amounts.get(p.idempotencyKey);
      if (ours !== undefined && BigInt(p.amount) !== ours) problems.push(`payment ${p.idempotencyKey}: provider amount ${p.amount}, ours ${ours}`);
    }
    check('every COMPLETED payment is at the provider exactly once, and no refunded one is', rows.length, problems);
  }

  return { checks, ok: checks.every((c) => c.violations.length === 0) };
}

/** The report as text for people. */
export function formatAudit(report: AuditReport): string {
  const lines = report.checks.map((c) => {
    const head = `${c.violations.length === 0 ? 'ok  ' : 'FAIL'}  ${c.name} (${c.checked} checked${c.violations.length ? `, ${c.violations.length} violations` : ''})`;
    const listed = c.violations.slice(0, MAX_LISTED).map((v) => `        ${v}`);
    if (c.violations.length > MAX_LISTED) listed.push(`        ... and ${c.violations.length - MAX_LISTED} more`);
    return [head, ...listed].join('\n');
  });
  lines.push(report.ok ? 'All invariants hold.' : 'INVARIANTS VIOLATED.');
  return lines.join('\n');
}

import { addCalendarDays, type Clock, isCalendarDate, londonToday, startOfLondonDay } from '../calendar.ts';
import type { PrismaClient, ReconciliationBreak } from '../db/prisma.ts';
import { DomainError, userError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { type Operator, recordOperatorAction } from '../operator-actions.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { ProviderClient, SettlementItem } from '../provider/client.ts';
import { isUuid } from '../validation.ts';

/**
 * Reconciliation with the provider (ADR 0012): its settlement report of a London day (what it
 * executed, returned and delivered) matched one-to-one against our books. A report item we have no
 * record of is MISSING_OURS; one we have with another amount, AMOUNT_MISMATCH; something we recorded
 * that day (an execution, a return, a credit) on neither that day's report nor the day before's is
 * MISSING_THEIRS (we record after the provider acts, so midnight may fall between the two).
 *
 * Each break is recorded once (unique on date, kind, item type and reference), counted in
 * `payments_reconciliation_breaks_total` and logged as a `reconciliation.break` event; a break no
 * longer found when the day is reconciled again is resolved by the system, and an operator resolves
 * the rest with a note. Each run (an operator's, or the daily job's as system:reconcile) is recorded with
 * its operator action, in the transaction that records its breaks.
 */

export type BreakKind = 'MISSING_OURS' | 'MISSING_THEIRS' | 'AMOUNT_MISMATCH';

interface Found {
  kind: BreakKind;
  type: SettlementItem['type'];
  reference: string;
  paymentId: string | null;
  ours: bigint | null;
  theirs: bigint | null;
}

/** Who resolves a break that is no longer there. */
const SYSTEM = 'system:reconcile';
const NOTE_MAX = 500;
const itemKey = (type: string, reference: string) => `${type}:${reference}`;

export function createReconciliation(deps: {
  prisma: PrismaClient;
  provider: Pick<ProviderClient, 'settlementReport'> | null;
  clock: Clock;
  logger: Logger;
  metrics: Pick<Metrics, 'reconciliationBreaks'>;
}) {
  const { prisma, clock, metrics } = deps;
  const logger = deps.logger.child({ component: 'reconciliation' });

  async function report(date: string): Promise<SettlementItem[]> {
    if (!deps.provider) throw new Error('no provider configured (PROVIDER_URL): nothing to reconcile against');
    const answer = await deps.provider.settlementReport(date);
    if (answer.kind !== 'report') throw new Error(`the provider's settlement report of ${date} could not be read: ${answer.detail}`);
    return answer.items;
  }

  /** What our books say of each item of the report, wherever in time we recorded it: the amount, or null. */
  async function oursFor(items: SettlementItem[]): Promise<Map<string, { amount: bigint; paymentId: string | null }>> {
    const paymentIds = [...new Set(items.filter((i) => i.type !== 'credit' && isUuid(i.reference)).map((i) => i.reference))];
    const creditIds = [...new Set(items.filter((i) => i.type === 'credit').map((i) => i.reference))];
    const rows = await prisma.$queryRaw<{ type: string; reference: string; amount: bigint; payment_id: string | null }[]>`
      SELECT CASE po.kind WHEN 'PAYMENT_SETTLED' THEN 'payment' ELSE 'return' END AS type, po.payment_id::text AS reference,
        abs(po.amount) AS amount, po.payment_id::text AS payment_id
      FROM postings po
      WHERE po.payment_id = ANY(${paymentIds}::uuid[]) AND po.bank_account = 'PROVIDER_SETTLEMENT'
        AND po.kind IN ('PAYMENT_SETTLED', 'PAYMENT_RETURN')
      UNION ALL
      SELECT 'credit', c.id, c.amount, NULL FROM provider_credits c WHERE c.id = ANY(${creditIds}::text[])`;
    return new Map(rows.map((r) => [itemKey(r.type, r.reference), { amount: r.amount, paymentId: r.payment_id }]));
  }

  /** What we recorded on `date` (London): executions and returns at the provider, credits received. */
  async function recordedOn(date: string): Promise<Array<{ type: SettlementItem['type']; reference: string; amount: bigint }>> {
    const start = startOfLondonDay(date);
    const end = startOfLondonDay(addCalendarDays(date, 1));
    return prisma.$queryRaw`
      SELECT CASE kind WHEN 'PAYMENT_SETTLED' THEN 'payment' ELSE 'return' END AS type, payment_id::text AS reference, abs(amount) AS amount
      FROM postings
      WHERE bank_account = 'PROVIDER_SETTLEMENT' AND kind IN ('PAYMENT_SETTLED', 'PAYMENT_RETURN') AND created_at >= ${start} AND created_at < ${end}
      UNION ALL
      SELECT 'credit', id, amount FROM provider_credits WHERE received_at >= ${start} AND received_at < ${end}`;
  }

  /** The breaks between the provider's report of `date` and our books, as they are now. */
  async function compare(date: string): Promise<{ found: Found[]; reportItems: number }> {
    const [theirs, dayBefore] = await Promise.all([report(date), report(addCalendarDays(date, -1))]);
    const ours = await oursFor(theirs);
    const found: Found[] = [];
    for (const item of theirs) {
      const mine = ours.get(itemKey(item.type, item.reference));
      const paymentId = item.type !== 'credit' && isUuid(item.reference) ? item.reference : null;
      if (!mine) {
        found.push({
          kind: 'MISSING_OURS',
          type: item.type,
          reference: item.reference,
          paymentId,
          ours: null,
          theirs: BigInt(item.amount),
        });
      } else if (mine.amount !== BigInt(item.amount)) {
        found.push({
          kind: 'AMOUNT_MISMATCH',
          type: item.type,
          reference: item.reference,
          paymentId,
          ours: mine.amount,
          theirs: BigInt(item.amount),
        });
      }
    }
    const reported = new Set([...theirs, ...dayBefore].map((i) => itemKey(i.type, i.reference)));
    for (const mine of await recordedOn(date)) {
      if (reported.has(itemKey(mine.type, mine.reference))) continue;
      const paymentId = mine.type === 'credit' ? null : mine.reference;
      found.push({ kind: 'MISSING_THEIRS', type: mine.type, reference: mine.reference, paymentId, ours: mine.amount, theirs: null });
    }
    return { found, reportItems: theirs.length };
  }

  function checkDate(date: string, field: string): void {
    if (!isCalendarDate(date)) throw new DomainError(userError('INVALID_INPUT', `${field} must be a date YYYY-MM-DD`, [field]));
  }

  /**
   * Reconciles a London day (today or earlier) now, as `by` (an operator, or SYSTEM for the daily
   * job): in one transaction, records the breaks not recorded before, resolves as the system those
   * no longer found, and records the run and its operator action. Returns the day's open breaks,
   * oldest first.
   */
  async function reconcile(date: string, by: Operator = SYSTEM): Promise<ReconciliationBreak[]> {
    checkDate(date, 'date');
    if (date > londonToday(clock)) throw new DomainError(userError('INVALID_INPUT', 'date must not be in the future', ['date']));
    const { found, reportItems } = await compare(date);
    const day = new Date(`${date}T00:00:00Z`);
    const stillThere = found.map((f) => `${f.kind}:${itemKey(f.type, f.reference)}`);
    const { created, gone, open } = await prisma.$transaction(async (tx) => {
      const created: Array<Found & { id: string }> = [];
      for (const f of found) {
        const [row] = await tx.$queryRaw<{ id: string }[]>`
          INSERT INTO reconciliation_breaks (date, kind, item_type, provider_reference, payment_id, ours, theirs)
          VALUES (${day}::date, ${f.kind}, ${f.type}, ${f.reference}, ${f.paymentId}::uuid, ${f.ours}, ${f.theirs})
          ON CONFLICT (date, kind, item_type, provider_reference) DO NOTHING
          RETURNING id::text`;
        if (row) created.push({ ...f, id: row.id });
      }
      const gone = await tx.$executeRaw`
        UPDATE reconciliation_breaks SET resolved_at = now(), resolved_by = ${SYSTEM},
          resolution_note = 'no longer found when the day was reconciled again'
        WHERE date = ${day}::date AND resolved_at IS NULL
          AND NOT (kind || ':' || item_type || ':' || provider_reference = ANY(${stillThere}::text[]))`;
      const run = await tx.reconciliationRun.create({
        data: { date: day, runBy: by, reportItems, breaksFound: found.length, breaksNew: created.length },
      });
      await recordOperatorAction(
        tx,
        by,
        'reconcile',
        run.id,
        `${date}: ${found.length} breaks (${created.length} new), ${gone} no longer found`,
      );
      const open = await tx.reconciliationBreak.findMany({
        where: { date: day, resolvedAt: null },
        orderBy: [{ foundAt: 'asc' }, { id: 'asc' }],
      });
      return { created, gone, open };
    });
    for (const f of created) {
      metrics.reconciliationBreaks.inc({ kind: f.kind });
      logger.warn(
        {
          event: 'reconciliation.break',
          breakId: f.id,
          date,
          kind: f.kind,
          itemType: f.type,
          reference: f.reference,
          ours: f.ours?.toString() ?? null,
          theirs: f.theirs?.toString() ?? null,
        },
        'reconciliation break found',
      );
    }
    logger.info(
      { date, by, reportItems, breaks: found.length, new: created.length, resolvedBySystem: gone },
      'day reconciled with the provider',
    );
    return open;
  }

  /** Every break recorded for a day, resolved ones included, oldest first. */
  function breaks(date: string): Promise<ReconciliationBreak[]> {
    checkDate(date, 'date');
    return prisma.reconciliationBreak.findMany({
      where: { date: new Date(`${date}T00:00:00Z`) },
      orderBy: [{ foundAt: 'asc' }, { id: 'asc' }],
    });
  }

  /** An operator resolves a break with a note, logged in the same transaction; resolving it again returns it as it is. */
  async function resolve(operator: Operator, id: string, note: string): Promise<ReconciliationBreak> {
    const text = note.trim();
    if (text.length === 0 || text.length > NOTE_MAX) {
      throw new DomainError(userError('INVALID_INPUT', `note must be 1-${NOTE_MAX} characters`, ['note']));
    }
    const missing = () => new DomainError(userError('INVALID_INPUT', 'no such reconciliation break', ['id']));
    if (!isUuid(id)) throw missing();
    return prisma.$transaction(async (tx) => {
      const [resolved] = await tx.$queryRaw<{ id: string }[]>`
        UPDATE reconciliation_breaks SET resolved_at = now(), resolved_by = ${operator}, resolution_note = ${text}
        WHERE id = ${id}::uuid AND resolved_at IS NULL RETURNING id::text`;
      if (resolved) {
        await recordOperatorAction(tx, operator, 'resolveReconciliationBreak', id, text);
        logger.info({ event: 'reconciliation.resolved', breakId: id, operator }, 'reconciliation break resolved');
      }
      const row = await tx.reconciliationBreak.findUnique({ where: { id } });
      if (!row) throw missing();
      return row;
    });
  }

  return { reconcile, breaks, resolve };
}

export type Reconciliation = ReturnType<typeof createReconciliation>;

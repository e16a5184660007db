import { addCalendarDays, type CalendarDate, isCalendarDate, londonToday, startOfLondonDay } from '../calendar.ts';
import type { PrismaClient } from '../db/prisma.ts';
import { type UserError, userError } from '../errors.ts';

/**
 * What a customer's books say about an account (ADR 0012): its balances in one snapshot, its
 * balance at any instant, and statements over London calendar days. Read from the customer ledger
 * (`ledger_entries`: each entry carries the balance it left, and one account's entries are in time
 * order as in id order) and, for money in transit, from the postings.
 */

/** The longest statement: a year, leap day included. */
export const MAX_STATEMENT_DAYS = 366;

export interface Balances {
  /** What can be spent now: the account's balance. */
  available: bigint;
  /** Debited by PENDING or HELD payments, not yet gone to the provider or refunded. */
  pendingOutgoing: bigint;
  /** Posted: available plus what is reserved by payments that have not left yet. */
  ledger: bigint;
}

export interface StatementRange {
  from: CalendarDate;
  to: CalendarDate;
  /** The instant the first day began in London, and the one the day after the last began. */
  start: Date;
  end: Date;
}

export interface StatementSummary extends StatementRange {
  openingBalance: bigint;
  closingBalance: bigint;
  moneyIn: bigint;
  moneyOut: bigint;
}

export interface StatementEntryRow {
  id: bigint;
  at: Date;
  kind: string;
  amount: bigint;
  runningBalance: bigint;
  paymentId: string | null;
  counterpartyName: string | null;
  counterpartySortCode: string | null;
  counterpartyAccountNumber: string | null;
  reference: string | null;
}

/** The range of a statement, or the error naming the argument that is wrong. */
export function statementRange(from: string, to: string): { ok: true; range: StatementRange } | { ok: false; error: UserError } {
  if (!isCalendarDate(from)) return { ok: false, error: userError('INVALID_INPUT', 'from must be a date YYYY-MM-DD', ['from']) };
  if (!isCalendarDate(to)) return { ok: false, error: userError('INVALID_INPUT', 'to must be a date YYYY-MM-DD', ['to']) };
  if (to < from) return { ok: false, error: userError('INVALID_INPUT', 'to must not be before from', ['to']) };
  if (addCalendarDays(from, MAX_STATEMENT_DAYS - 1) < to) {
    return { ok: false, error: userError('INVALID_INPUT', `a statement covers at most ${MAX_STATEMENT_DAYS} days`, ['to']) };
  }
  return { ok: true, range: { from, to, start: startOfLondonDay(from), end: startOfLondonDay(addCalendarDays(to, 1)) } };
}

export function createLedgerReader(deps: { prisma: PrismaClient }) {
  const { prisma } = deps;

  /** The balances of each account, each account's three figures read in one statement (one snapshot). */
  async function balances(accountIds: readonly string[]): Promise<Map<string, Balances>> {
    const rows = await prisma.$queryRaw<{ id: string; available: bigint; pending: bigint }[]>`
      SELECT a.id::text, a.balance AS available, coalesce(o.pending, 0)::bigint AS pending
      FROM accounts a
      LEFT JOIN LATERAL (
        SELECT sum(p.amount) AS pending FROM payments p WHERE p.account_id = a.id AND p.status IN ('PENDING', 'HELD')) o ON true
      WHERE a.id = ANY(${[...new Set(accountIds)]}::uuid[])`;
    return new Map(rows.map((r) => [r.id, { available: r.available, pendingOutgoing: r.pending, ledger: r.available + r.pending }]));
  }

  /**
   * The balances as they were at `at`, exactly: available is the balance the account's last entry
   * at or before `at` left; pending outgoing, its payments' postings into and out of transit up to
   * `at`. One statement.
   */
  async function balanceAt(accountId: string, at: Date): Promise<Balances> {
    const [row] = await prisma.$queryRaw<{ available: bigint; pending: bigint }[]>`
      SELECT
        coalesce((SELECT l.balance_after FROM ledger_entries l WHERE l.account_id = ${accountId}::uuid AND l.created_at <= ${at}
          ORDER BY l.created_at DESC, l.id DESC LIMIT 1), 0)::bigint AS available,
        coalesce((SELECT sum(po.amount) FROM payments p JOIN postings po ON po.payment_id = p.id AND po.bank_account = 'IN_TRANSIT'
          WHERE p.account_id = ${accountId}::uuid AND p.created_at <= ${at} AND po.created_at <= ${at}), 0)::bigint AS pending`;
    const available = row?.available ?? 0n;
    const pendingOutgoing = row?.pending ?? 0n;
    return { available, pendingOutgoing, ledger: available + pendingOutgoing };
  }

  /** Opening and closing balances and the money in and out of a range, in one statement. */
  async function statementSummary(accountId: string, range: StatementRange): Promise<StatementSummary> {
    const [row] = await prisma.$queryRaw<{ opening: bigint; closing: bigint; money_in: bigint; money_out: bigint }[]>`
      SELECT
        coalesce((SELECT balance_after FROM ledger_entries WHERE account_id = ${accountId}::uuid AND created_at < ${range.start}
          ORDER BY created_at DESC, id DESC LIMIT 1), 0)::bigint AS opening,
        coalesce((SELECT balance_after FROM ledger_entries WHERE account_id = ${accountId}::uuid AND created_at < ${range.end}
          ORDER BY created_at DESC, id DESC LIMIT 1), 0)::bigint AS closing,
        coalesce(sum(amount) FILTER (WHERE amount > 0), 0)::bigint AS money_in,
        coalesce(-sum(amount) FILTER (WHERE amount < 0), 0)::bigint AS money_out
      FROM ledger_entries WHERE account_id = ${accountId}::uuid AND created_at >= ${range.start} AND created_at < ${range.end}`;
    return {
      ...range,
      openingBalance: row?.opening ?? 0n,
      closingBalance: row?.closing ?? 0n,
      moneyIn: row?.money_in ?? 0n,
      moneyOut: row?.money_out ?? 0n,
    };
  }

  /** Up to `limit` entries of the range after the entry `after` ([time, id]), oldest first; the payment's recipient and reference for payment entries. */
  function statementEntries(
    accountId: string,
    range: StatementRange,
    page: { after: [string, string] | null; limit: number },
  ): Promise<StatementEntryRow[]> {
    const afterAt = page.after ? new Date(page.after[0]) : new Date(0);
    const afterId = page.after ? BigInt(page.after[1]) : 0n;
    return prisma.$queryRaw<StatementEntryRow[]>`
      SELECT l.id, l.created_at AS at, l.kind::text AS kind, l.amount, l.balance_after AS "runningBalance", l.payment_id::text AS "paymentId",
        coalesce(l.counterparty_name, p.recipient_name) AS "counterpartyName",
        coalesce(l.counterparty_sort_code, p.recipient_sort_code) AS "counterpartySortCode",
        coalesce(l.counterparty_account_number, p.recipient_account_number) AS "counterpartyAccountNumber",
        coalesce(l.reference, p.reference) AS reference
      FROM ledger_entries l LEFT JOIN payments p ON p.id = l.payment_id
      WHERE l.account_id = ${accountId}::uuid AND l.created_at >= ${range.start} AND l.created_at < ${range.end}
        AND (l.created_at, l.id) > (${afterAt}, ${afterId})
      ORDER BY l.created_at, l.id
      LIMIT ${page.limit + 1}`;
  }

  return { balances, balanceAt, statementSummary, statementEntries };
}

export type LedgerReader = ReturnType<typeof createLedgerReader>;

/** The columns of the CSV statement, in order (documented in the README). */
export const STATEMENT_CSV_COLUMNS = [
  'date',
  'at',
  'kind',
  'amount',
  'running_balance',
  'counterparty_name',
  'counterparty_sort_code',
  'counterparty_account_number',
  'reference',
  'payment_id',
] as const;

/**
 * One CSV field: quoted when it holds a comma, quote or line break; a text that a spreadsheet would
 * run as a formula (starting with = + - @ or a tab) is prefixed with a quote mark. Numbers are ours.
 */
function csvField(value: string | bigint | null, text: boolean): string {
  if (value === null) return '';
  let s = String(value);
  if (text && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/** A statement entry as a CSV line (no line ending). */
export function statementCsvLine(row: StatementEntryRow): string {
  return [
    csvField(londonToday({ now: () => row.at }), false),
    csvField(row.at.toISOString(), false),
    csvField(row.kind, false),
    csvField(row.amount, false),
    csvField(row.runningBalance, false),
    csvField(row.counterpartyName, true),
    csvField(row.counterpartySortCode, true),
    csvField(row.counterpartyAccountNumber, true),
    csvField(row.reference, true),
    csvField(row.paymentId, false),
  ].join(',');
}

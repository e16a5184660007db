import { londonToday } from '../calendar.ts';
import type { Tx } from '../db/prisma.ts';

/**
 * The daily payment limit: per customer per London calendar day, the sum of its
 * PENDING, COMPLETED and HELD payments may not pass DAILY_PAYMENT_LIMIT.
 *
 * Glossary: a customer's *day total* is one row of `daily_payment_totals` (customer, London day,
 * pence used). sendPayment raises it, in the payment's own transaction, with one guarded upsert
 * that refuses to pass the limit; a trigger on `payments` lowers it when a payment leaves those
 * statuses (refund, rejection, expiry, cancellation). The row lock makes racing payments of one
 * customer take turns at the total, so no interleaving passes the limit by a penny.
 */

/** The calendar day in London at `at`, as YYYY-MM-DD (the calendar's, which knows summer time). */
export function londonDay(at: Date): string {
  return londonToday({ now: () => at });
}

/**
 * The guarded upsert, as SQL over the given expressions: adds `amount` to the customer's total for
 * `day` unless that would pass `limit`, returning the new `used` (no row when it would). sendPayment
 * runs it inside its one statement, after the debit (transitions.ts `take`).
 */
export function raiseDayTotalSql(e: { customerId: string; day: string; amount: string; limit: string; from?: string }): string {
  return `INSERT INTO daily_payment_totals AS t (customer_id, day, used)
     SELECT ${e.customerId}, ${e.day}, ${e.amount} ${e.from ? `FROM ${e.from}` : ''} WHERE ${e.amount} <= ${e.limit}
     ON CONFLICT (customer_id, day) DO UPDATE SET used = t.used + EXCLUDED.used WHERE t.used + EXCLUDED.used <= ${e.limit}
     RETURNING used`;
}

/**
 * Adds `amount` to the customer's total for `day` unless that would pass `limit`; false (nothing
 * changed) when it would. For a payment that starts to count later than it is written (a scheduled
 * one, on its day): call it after the debit, in the same transaction. Lock order is always payment,
 * account row, then this row, so no two payments wait on each other in a cycle.
 */
export async function reserveDailyLimit(
  tx: Tx,
  request: { customerId: string; day: string; amount: number; limit: number },
): Promise<boolean> {
  const rows = await tx.$queryRawUnsafe<{ used: bigint }[]>(
    raiseDayTotalSql({ customerId: '$1::uuid', day: '$2::date', amount: '$3::bigint', limit: '$4::bigint' }),
    request.customerId,
    request.day,
    BigInt(request.amount),
    BigInt(request.limit),
  );
  return rows.length === 1;
}

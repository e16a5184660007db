import type { Tx } from '../db/prisma.ts';

/**
 * The daily payment limit (issue 15): per customer per London calendar day, the sum of its
 * PENDING, COMPLETED and HELD payments may not pass DAILY_PAYMENT_LIMIT.
 *
 * Glossary: a customer's *day total* is one row of `daily_payment_totals` (customer, London day,
 * pence used). sendPayment raises it, in the payment's own transaction, with one guarded upsert
 * that refuses to pass the limit; a trigger on `payments` lowers it when a payment leaves those
 * statuses (refund, rejection, expiry, cancellation). The row lock makes racing payments of one
 * customer take turns at the total, so no interleaving passes the limit by a penny.
 */

/** The time now; tests pass a clock they control. */
export type Clock = () => Date;

export const systemClock: Clock = () => new Date();

// ICU's time-zone data (built into Node) knows Britain's summer time; no arithmetic of ours.
const LONDON_DATE = new Intl.DateTimeFormat('en-CA', { timeZone: 'Europe/London', year: 'numeric', month: '2-digit', day: '2-digit' });

/** The calendar day in London at `at`, as YYYY-MM-DD. */
export function londonDay(at: Date): string {
  return LONDON_DATE.format(at);
}

/**
 * Adds `amount` to the customer's total for `day` unless that would pass `limit`; false (nothing
 * changed) when it would. Call it after the payment's debit, in the same transaction: lock order
 * is always payment key, account row, then this row, so no two payments wait on each other in a cycle.
 */
export async function reserveDailyLimit(
  tx: Tx,
  request: { customerId: string; day: string; amount: number; limit: number },
): Promise<boolean> {
  const rows = await tx.$queryRawUnsafe<{ used: bigint }[]>(
    `INSERT INTO daily_payment_totals AS t (customer_id, day, used)
     SELECT $1::uuid, $2::date, $3::bigint WHERE $3::bigint <= $4::bigint
     ON CONFLICT (customer_id, day) DO UPDATE SET used = t.used + EXCLUDED.used
       WHERE t.used + EXCLUDED.used <= $4::bigint
     RETURNING used`,
    request.customerId,
    request.day,
    BigInt(request.amount),
    BigInt(request.limit),
  );
  return rows.length === 1;
}

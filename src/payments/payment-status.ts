/**
 * The payment lifecycle, in one place:
 *
 *   SCHEDULED ──its day comes, funds there (debit)───────────► PENDING
 *      ├──its day comes, funds short (nothing debited)──────► FAILED  (INSUFFICIENT_FUNDS)
 *      └──cancelled by the customer (nothing was debited)───► CANCELLED
 *   PENDING ──accepted (or already held) by the provider──► COMPLETED ──returned by the recipient's bank──► RETURNED (money back)
 *      ├──rejected by the provider (HTTP 400)──────────────► CANCELLED  (refunded)
 *      ├──voided at the provider on the customer's request─► CANCELLED  (refunded)
 *      └──retries exhausted, voided or absent at provider──► FAILED     (refunded)
 *
 *   HELD ──approved by an operator (job enqueued)──► PENDING
 *      └──rejected by an operator, expired, or cancelled by the customer──► CANCELLED (refunded)
 *
 * A HELD payment (issue 15) is debited but has no settlement job until an operator approves it.
 *
 * Every write that moves a payment names the status it expects to find
 * (`... WHERE status = 'PENDING'`), so a job that runs twice moves it at most once.
 * (A status is added by giving it a row here, in the database enum and in the schema.)
 */
export type PaymentStatus = 'SCHEDULED' | 'PENDING' | 'COMPLETED' | 'CANCELLED' | 'FAILED' | 'RETURNED' | 'HELD';

export const PAYMENT_STATUSES: readonly PaymentStatus[] = ['SCHEDULED', 'PENDING', 'COMPLETED', 'CANCELLED', 'FAILED', 'RETURNED', 'HELD'];

const NEXT: Record<PaymentStatus, readonly PaymentStatus[]> = {
  SCHEDULED: ['PENDING', 'CANCELLED', 'FAILED'],
  PENDING: ['COMPLETED', 'CANCELLED', 'FAILED'],
  COMPLETED: ['RETURNED'],
  CANCELLED: [],
  FAILED: [],
  HELD: ['PENDING', 'CANCELLED'],
  RETURNED: [],
};

export function canTransition(from: PaymentStatus, to: PaymentStatus): boolean {
  return NEXT[from].includes(to);
}

/** Nothing can ever happen to the payment again. */
export function isTerminal(status: PaymentStatus): boolean {
  return NEXT[status].length === 0;
}

/**
 * The payment has been decided: the provider took it (COMPLETED) or it will never be sent. This is
 * where `paymentUpdated` completes. COMPLETED is included although a return may follow days later:
 * a subscription per payment held open for that would never end for almost every payment, and
 * clients of version 1 rely on it ending at COMPLETED. A later RETURNED is an event like any
 * other on `accountEvents`, `accountPaymentsUpdated` and `paymentEvents`.
 */
export function isSettled(status: PaymentStatus): boolean {
  return status === 'COMPLETED' || isTerminal(status);
}

/** The statuses in which the sender has their money back (or never lost it). */
export function isRefunded(status: PaymentStatus): boolean {
  return status === 'CANCELLED' || status === 'FAILED' || status === 'RETURNED';
}

/**
 * The payment lifecycle, in one place:
 *
 *   PENDING ──accepted (or already held) by the provider──► COMPLETED
 *      ├──rejected by the provider (HTTP 400)──────────────► CANCELLED  (refunded)
 *      └──retries exhausted, voided or absent at provider──► FAILED     (refunded)
 *
 *   HELD ──approved by an operator (job enqueued)──► PENDING
 *      └──rejected by an operator, expired, or cancelled by the customer──► CANCELLED (refunded)
 *
 * A HELD payment (issue 15) is debited but has no settlement job until an operator approves it.
 *
 * Every write that moves a payment names the status it expects to find
 * (`... WHERE status = 'PENDING'`), so a job that runs twice moves it at most once.
 */
export type PaymentStatus = 'PENDING' | 'COMPLETED' | 'CANCELLED' | 'FAILED' | 'HELD';

export const PAYMENT_STATUSES: readonly PaymentStatus[] = ['PENDING', 'COMPLETED', 'CANCELLED', 'FAILED', 'HELD'];

const NEXT: Record<PaymentStatus, readonly PaymentStatus[]> = {
  PENDING: ['COMPLETED', 'CANCELLED', 'FAILED'],
  COMPLETED: [],
  CANCELLED: [],
  FAILED: [],
  HELD: ['PENDING', 'CANCELLED'],
};

export function canTransition(from: PaymentStatus, to: PaymentStatus): boolean {
  return NEXT[from].includes(to);
}

export function isTerminal(status: PaymentStatus): boolean {
  return NEXT[status].length === 0;
}

/** The statuses in which the sender has their money back. */
export function isRefunded(status: PaymentStatus): boolean {
  return status === 'CANCELLED' || status === 'FAILED';
}

/**
 * What a customer is told about a payment: a closed set of failure reasons and one fixed text per
 * attempt outcome. The worker's raw reasons (network errors naming internal addresses, provider
 * URLs and messages) go to the logs and to `payment_attempts.internal_detail`, which only
 * operators can read (`PaymentAttempt.internalDetail`).
 */

/**
 * `Payment.failureReason` of a CANCELLED or FAILED payment. Codes, not prose: clients can branch on
 * them.
 */
export const FAILURE_REASONS = {
  /** The provider (the recipient's bank) refused the payment. CANCELLED. */
  RECIPIENT_REJECTED: 'RECIPIENT_REJECTED',
  /** The provider could not be reached until the retries ran out; the payment was voided there. FAILED. */
  NOT_SENT_PROVIDER_UNAVAILABLE: 'NOT_SENT_PROVIDER_UNAVAILABLE',
  /** The payment was found voided at the provider, so it can never be executed. FAILED. */
  NOT_SENT_VOIDED: 'NOT_SENT_VOIDED',
  // The ends of a HELD payment that was never sent. CANCELLED.
  /** An operator rejected the held payment. */
  REJECTED_IN_REVIEW: 'REJECTED_IN_REVIEW',
  /** Nobody reviewed the held payment within HOLD_MAX_HOURS. */
  HOLD_EXPIRED: 'HOLD_EXPIRED',
  /** A scheduled payment's day came and the balance was short; nothing was debited. FAILED. */
  INSUFFICIENT_FUNDS: 'INSUFFICIENT_FUNDS',
  /** A scheduled payment's day came and it would have taken the customer's day past DAILY_PAYMENT_LIMIT; nothing was debited. FAILED. */
  LIMIT_EXCEEDED: 'LIMIT_EXCEEDED',
  /** The customer cancelled it before it was sent (a HELD one, or a PENDING one voided at the provider first). CANCELLED. */
  CANCELLED_BY_CUSTOMER: 'CANCELLED_BY_CUSTOMER',
} as const;

export type FailureReason = (typeof FAILURE_REASONS)[keyof typeof FAILURE_REASONS];

const KNOWN_REASONS = new Set<string>(Object.values(FAILURE_REASONS));

/** The outcomes of `payment_attempts`. */
export type AttemptOutcome = 'COMPLETED' | 'CANCELLED' | 'FAILED' | 'RETRY' | 'CANCELLED_BY_CUSTOMER' | 'RETURNED';

/** The only attempt texts a customer ever sees, one per outcome. */
export const CUSTOMER_ATTEMPT_DETAIL: Record<AttemptOutcome, string> = {
  COMPLETED: 'The payment provider accepted the payment.',
  CANCELLED: "The recipient's bank rejected the payment; the money is back in the account.",
  FAILED: 'The payment could not be sent; the money is back in the account.',
  RETRY: 'The payment provider could not be reached; the payment will be tried again.',
  CANCELLED_BY_CUSTOMER: 'The payment was stopped at your request before it was sent; the money is back in the account.',
  RETURNED: "The recipient's bank returned the payment; the money is back in the account.",
};

/** The customer's text for an attempt: derived from its outcome, never from what was stored. */
export function customerAttemptDetail(outcome: string): string | null {
  return outcome in CUSTOMER_ATTEMPT_DETAIL ? CUSTOMER_ATTEMPT_DETAIL[outcome as AttemptOutcome] : null;
}

/**
 * The failure reason a customer sees. Rows written before reasons were codes hold free text; they
 * are answered with the code their status implies, so no old internal text leaks either.
 */
export function customerFailureReason(status: string, stored: string | null): string | null {
  if (stored !== null && KNOWN_REASONS.has(stored)) return stored;
  if (status === 'CANCELLED') return FAILURE_REASONS.RECIPIENT_REJECTED;
  if (status === 'FAILED') return FAILURE_REASONS.NOT_SENT_PROVIDER_UNAVAILABLE;
  return null;
}

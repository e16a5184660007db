/**
 * The payment lifecycle, in one place: its statuses, the arrows between them, and the named sets
 * of statuses the rest of the code asks about. transitions.ts holds the one function per arrow
 * that production code calls; a trigger in the database (payment_transitions) refuses any change
 * this table does not have, and test/lifecycle.test.ts checks that TypeScript, PostgreSQL, Prisma
 * and GraphQL list the same statuses.
 *
 *   (taken) ─────────────────────────────────────────────────► PENDING, or HELD for review
 *   (scheduled for a later day) ─────────────────────────────► SCHEDULED
 *
 *   SCHEDULED ──its day comes, funds there (debit)───────────► PENDING, or HELD for review
 *      ├──its day comes, funds short or over the limit───────► FAILED  (nothing was debited)
 *      └──cancelled by the customer (or its standing order)──► CANCELLED (nothing was debited)
 *   HELD ──approved by an operator (job enqueued)────────────► PENDING
 *      └──rejected by an operator, expired, or cancelled by the customer──► CANCELLED (money back)
 *   PENDING ──accepted (or already held) by the provider─────► COMPLETED ──returned by the recipient's bank──► RETURNED (money back)
 *      ├──rejected by the provider (HTTP 400)────────────────► CANCELLED (money back)
 *      ├──voided at the provider on the customer's request───► CANCELLED (money back)
 *      └──retries exhausted, voided or absent at provider────► FAILED    (money back)
 *
 * Glossary:
 * - *held*: debited, with its ledger entry, but no settlement job until an operator approves it.
 * - *let through*: taken and not held (PENDING or COMPLETED): the provider has it or will.
 * - *counts against the daily limit*: the customer's day total includes it (PENDING, COMPLETED,
 *   HELD); a trigger gives the amount back when a payment leaves these statuses.
 * - *settled*: decided: the provider took it (COMPLETED) or nothing more can happen to it.
 * - *stopped*: ended without the provider executing it (CANCELLED, FAILED); a debit taken came
 *   back as a PAYMENT_REFUND ledger entry.
 * - *executed*: the provider executed it (COMPLETED, and RETURNED after it came back).
 * - *refunded*: the sender has the money back, or never lost it (stopped, or RETURNED).
 *
 * Every write that moves a payment names the status it expects to find
 * (`... WHERE status = 'PENDING'`), so a job that runs twice moves it at most once. A status is
 * added here, in a migration (the enum and payment_transitions), in schema.prisma and in
 * schema.graphql: test/lifecycle.test.ts and `npm run typecheck` fail until all four agree.
 */

/** Every status, in the order of the PostgreSQL enum (and of the Prisma and GraphQL enums). */
export const PAYMENT_STATUSES = Object.freeze(['SCHEDULED', 'PENDING', 'COMPLETED', 'CANCELLED', 'FAILED', 'HELD', 'RETURNED'] as const);

export type PaymentStatus = (typeof PAYMENT_STATUSES)[number];

/** The statuses a payment is created in. */
export const INITIAL = Object.freeze(['SCHEDULED', 'PENDING', 'HELD'] as const) satisfies readonly PaymentStatus[];

/** The only changes of status a payment may make: from each status, the statuses it may move to. */
export const TRANSITIONS = Object.freeze({
  SCHEDULED: ['PENDING', 'HELD', 'FAILED', 'CANCELLED'],
  PENDING: ['COMPLETED', 'CANCELLED', 'FAILED'],
  COMPLETED: ['RETURNED'],
  CANCELLED: [],
  FAILED: [],
  HELD: ['PENDING', 'CANCELLED'],
  RETURNED: [],
} as const) satisfies Readonly<Record<PaymentStatus, readonly PaymentStatus[]>>;

/** The statuses a payment in `F` may move to: writing any other is a compile error. */
export type Arrow<F extends PaymentStatus> = (typeof TRANSITIONS)[F][number];

/** The statuses from which a payment may move to `T`. */
export type Into<T extends PaymentStatus> = { [F in PaymentStatus]: T extends Arrow<F> ? F : never }[PaymentStatus];

/** Whether the table has the arrow `from` -> `to`; narrows `from` to the statuses that have it. */
export function canTransition<T extends PaymentStatus>(from: PaymentStatus, to: T): from is Into<T> {
  return (TRANSITIONS[from] as readonly PaymentStatus[]).includes(to);
}

/** Nothing can ever happen to the payment again. */
export function isTerminal(status: PaymentStatus): boolean {
  return TRANSITIONS[status].length === 0;
}

const statusSet = <const S extends readonly PaymentStatus[]>(...statuses: S): Readonly<S> => Object.freeze(statuses);

/**
 * PENDING, COMPLETED and HELD: what the customer's day total adds up. The daily-limit trigger
 * (payments_release_daily_limit) lists the same statuses; test/lifecycle.test.ts compares them.
 */
export const COUNTS_AGAINST_DAILY_LIMIT = statusSet('PENDING', 'COMPLETED', 'HELD');

/**
 * PENDING and COMPLETED: taken and not held. Whether a payee has been let through is recorded on the
 * payee when it happens (payees.ts), never read back from these statuses, which change later.
 */
export const LET_THROUGH = statusSet('PENDING', 'COMPLETED');

/**
 * COMPLETED and every terminal status: where `paymentUpdated` completes. COMPLETED is included
 * although a return may follow days later: a subscription per payment held open for that would
 * never end for almost every payment, and clients rely on it ending at COMPLETED. A later RETURNED
 * is an event like any other on `accountEvents`, `accountPaymentsUpdated` and `paymentEvents`.
 */
export const SETTLED = statusSet('COMPLETED', 'CANCELLED', 'FAILED', 'RETURNED');

/** CANCELLED and FAILED: ended without the provider executing it; a debit taken came back as a refund. */
export const STOPPED = statusSet('CANCELLED', 'FAILED');

/** COMPLETED and RETURNED: the provider executed the payment (a return comes after that). */
export const EXECUTED = statusSet('COMPLETED', 'RETURNED');

/** CANCELLED, FAILED and RETURNED: the sender has their money back (or never lost it). */
export const REFUNDED = statusSet('CANCELLED', 'FAILED', 'RETURNED');

/** Whether `status` is one of `set`; narrows it. */
export function isIn<S extends PaymentStatus>(set: readonly S[], status: PaymentStatus): status is S {
  return (set as readonly PaymentStatus[]).includes(status);
}

export const isSettled = (status: PaymentStatus): boolean => isIn(SETTLED, status);

export const isRefunded = (status: PaymentStatus): boolean => isIn(REFUNDED, status);

/**
 * A set of statuses as an SQL list, `'A', 'B'`, for `status IN (...)`. Safe to put into SQL text:
 * each value is checked to be one of PAYMENT_STATUSES (capitals and underscores only).
 */
export function sqlStatuses(set: readonly PaymentStatus[]): string {
  if (set.length === 0) throw new Error('an empty set of payment statuses has no SQL list');
  return set
    .map((status) => {
      if (!isIn(PAYMENT_STATUSES, status)) throw new Error(`not a payment status: ${String(status)}`);
      return `'${status}'`;
    })
    .join(', ');
}

import type { Payment, PrismaClient, Sql, Tx } from '../db/prisma.ts';
import { transferSql } from '../ledger/postings.ts';
import type { SendPaymentCommand } from '../validation.ts';
import { CUSTOMER_ATTEMPT_DETAIL, FAILURE_REASONS, type FailureReason } from './failure-reasons.ts';
import { type HoldPolicy, type HoldReason, holdReasonSql } from './holds.ts';
import { type Arrow, canTransition, type INITIAL, type PaymentStatus } from './lifecycle.ts';
import { raiseDayTotalSql } from './limits.ts';
import type { JobInsert } from './outbox.ts';

/**
 * Every statement that creates a payment or changes its status: one function per arrow of the
 * lifecycle (lifecycle.ts). Each is one statement (one round trip), and each status change is
 * guarded by the status it expects, so running it twice changes nothing the second time. The
 * statuses in the SQL come from `arrow(from, to)`, which accepts only arrows of TRANSITIONS: an
 * arrow the table does not have does not compile (and the database refuses it too).
 */

type Db = Tx | PrismaClient;

/** The SQL literals of an arrow of the table: `'FROM'` for the guard, `'TO'` for the new status. */
function arrow<F extends PaymentStatus>(from: F, to: Arrow<F>): { from: string; to: string } {
  // Unreachable while the types hold; a second guard for a caller that cast its way past them.
  if (!canTransition(from, to)) throw new Error(`the lifecycle has no arrow ${from} -> ${to}`);
  return { from: `'${from}'::"PaymentStatus"`, to: `'${to}'::"PaymentStatus"` };
}

/** The SQL literal of a status a payment is created in. */
const initial = (status: (typeof INITIAL)[number]) => `'${status}'::"PaymentStatus"`;

// Columns of `payments` under the names of Prisma's `Payment` model, for RETURNING.
const PAYMENT_COLUMNS = `id, account_id AS "accountId", idempotency_key AS "idempotencyKey", fingerprint, amount,
  currency, recipient_name AS "recipientName", recipient_sort_code AS "recipientSortCode",
  recipient_account_number AS "recipientAccountNumber", reference, status::text AS status,
  failure_reason AS "failureReason", limit_day AS "limitDay", execute_on AS "executeOn", return_code AS "returnCode",
  standing_order_id AS "standingOrderId", cancel_requested_at AS "cancelRequestedAt", held_at AS "heldAt", created_at AS "createdAt",
  updated_at AS "updatedAt"`;

/**
 * A filter that is always true and lifts the statement timeout for the rest of the transaction,
 * COMMIT included, at no extra round trip. A COMMIT still waiting for a synchronous standby when a
 * statement timeout cancels it is reported as committed although no standby has it yet, and a
 * failover would then lose money we acknowledged: never cancel a COMMIT that moves money.
 */
const UNCANCELLABLE_COMMIT = `set_config('statement_timeout', '0', true) = '0'`;

/**
 * CTEs `debit`, `entry` and `legs`: the guarded decrement (never below zero) of the account of each
 * payment in `source` (columns id, account_id, amount), its PAYMENT_DEBIT ledger entry, and the
 * transfer customer -> in transit (double entry, ADR 0012) at the entry's time.
 */
const DEBIT = (source: string) => `
     debit AS (
       UPDATE accounts a SET balance = a.balance - s.amount, updated_at = now()
       FROM ${source} s WHERE a.id = s.account_id AND a.balance >= s.amount AND ${UNCANCELLABLE_COMMIT}
       RETURNING a.id, a.balance, s.id AS payment_id, s.amount),
     entry AS (
       INSERT INTO ledger_entries (account_id, kind, amount, balance_after, payment_id)
       SELECT id, 'PAYMENT_DEBIT', -amount, balance, payment_id FROM debit
       RETURNING account_id, payment_id, amount, created_at),
     legs AS (${transferSql({ source: 'entry', kind: 'PAYMENT_DEBIT', amount: '-s.amount', from: { customer: 's.account_id' }, to: { bank: 'IN_TRANSIT' }, at: 's.created_at', payment: 's.payment_id' })})`;

/**
 * CTEs `credit`, `entry` and `legs`: each payment's amount in `source` back to its account, with a
 * ledger entry of `kind` and its transfer: a refund from in transit (the provider never executed
 * it), a return from provider settlement (it did, and the money came back).
 */
const MONEY_BACK = (source: string, kind: 'PAYMENT_REFUND' | 'PAYMENT_RETURN') => `
     credit AS (
       UPDATE accounts a SET balance = a.balance + s.amount, updated_at = now()
       FROM ${source} s WHERE a.id = s.account_id AND ${UNCANCELLABLE_COMMIT}
       RETURNING a.id, a.balance, s.id AS payment_id, s.amount),
     entry AS (
       INSERT INTO ledger_entries (account_id, kind, amount, balance_after, payment_id)
       SELECT id, '${kind}', amount, balance, payment_id FROM credit
       RETURNING account_id, payment_id, amount, created_at),
     legs AS (${transferSql({ source: 'entry', kind, amount: 's.amount', from: { bank: kind === 'PAYMENT_REFUND' ? 'IN_TRANSIT' : 'PROVIDER_SETTLEMENT' }, to: { customer: 's.account_id' }, at: 's.created_at', payment: 's.payment_id' })})`;

/** $1-$10 of the statements that insert a customer's payment: the columns in the order they name them. */
const paymentParams = (customerId: string, cmd: SendPaymentCommand, fingerprint: string) => [
  cmd.fromAccountId,
  customerId,
  cmd.idempotencyKey,
  fingerprint,
  BigInt(cmd.amount),
  cmd.recipient.name,
  cmd.recipient.sortCode,
  cmd.recipient.accountNumber,
  cmd.reference,
  cmd.executeOn,
];

/**
 * Take (the function `createTake` gives; one per payment service): inserts a PENDING or HELD
 * payment with id `paymentId` from an account the customer owns and, in the same statement (one
 * round trip), the guarded decrement and its ledger entry. `sql` runs it inside the caller's
 * transaction (the transaction's own connection, `RunTransaction` in db/prisma.ts). The statement
 * reads the customer's saved payee for the recipient and applies the hold rule (holds.ts) to it:
 * HELD at `screened.at` for its `holdReason`, else PENDING, which lets a payee not yet let through
 * through (payees.ts) and writes `settlement`, its job (outbox.ts). Locks in this order: the
 * payment's unique-index entry (a concurrent duplicate waits here until the first commits or rolls
 * back), the account row, the customer's day total (limits.ts), the payee. Null when nothing was
 * inserted: the account is not theirs (or does not exist) or already has a payment with this key;
 * then nothing was debited. `balanceAfter` is null when the payment was inserted but the balance is
 * short, and `dayTotal` when it would pass `dailyLimit`: the caller must roll back. `jobWritten`
 * says the settlement job was written, which it is only for a PENDING payment whose debit and day
 * total went through.
 */
export function createTake() {
  // The statement's text depends only on the hold policy and the job's INSERT, the same for every
  // payment of a process: the ~7 kB text is built once and then reused as the same string, which
  // also spares hashing it again to find its prepared statement (bench/README.md).
  let built: { reviewThreshold: number; newPayeeSeconds: number; jobText: string | null; sql: string } | null = null;

  function statement(hold: Pick<HoldPolicy, 'reviewThreshold' | 'newPayeeSeconds'>, jobText: string | null): string {
    const { reviewThreshold, newPayeeSeconds } = hold;
    if (built?.reviewThreshold === reviewThreshold && built.newPayeeSeconds === newPayeeSeconds && built.jobText === jobText) {
      return built.sql;
    }
    built = { reviewThreshold, newPayeeSeconds, jobText, sql: takeSql(hold, jobText) };
    return built.sql;
  }

  return async function take(
    sql: Sql,
    customerId: string,
    cmd: SendPaymentCommand,
    fingerprint: string,
    screened: { at: Date; limitDay: string; dailyLimit: number; hold: Pick<HoldPolicy, 'reviewThreshold' | 'newPayeeSeconds'> },
    made: { paymentId: string; settlement: JobInsert | null },
  ): Promise<{
    payment: Payment;
    balanceAfter: bigint | null;
    dayTotal: bigint | null;
    holdReason: HoldReason | null;
    jobWritten: boolean;
  } | null> {
    const { settlement } = made;
    const rows = await sql<Payment & { balanceAfter: bigint | null; dayTotal: bigint | null; holdReason: HoldReason | null; jobs: number }>(
      statement(screened.hold, settlement?.text ?? null),
      [
        ...paymentParams(customerId, cmd, fingerprint),
        screened.limitDay,
        BigInt(screened.dailyLimit),
        screened.at,
        made.paymentId,
        ...(settlement ? [settlement.json] : []),
      ],
    );
    const row = rows[0];
    if (!row) return null;
    const { balanceAfter, dayTotal, holdReason, jobs, ...payment } = row;
    return { payment, balanceAfter, dayTotal, holdReason, jobWritten: jobs === 1 };
  };
}

/** The text of take's statement (above): $1-$10 the payment's columns, $11-$15 as `take` sends them. */
function takeSql(hold: Pick<HoldPolicy, 'reviewThreshold' | 'newPayeeSeconds'>, jobText: string | null): string {
  const held = holdReasonSql(hold, {
    amount: '$5::bigint',
    payeeId: 'p.id',
    payeeCreatedAt: 'p.created_at',
    payeeLetThroughAt: 'p.let_through_at',
    now: '$13::timestamptz',
  });
  // Not held, and the debit and the day total went through (`day` has a row only after a debit).
  const letThrough = `(SELECT reason FROM hold) IS NULL AND EXISTS (SELECT 1 FROM day)`;
  const job =
    jobText === null
      ? ''
      : `,
     job AS (${jobText.replace(/\$1(?!\d)/, () => `(CASE WHEN ${letThrough} THEN $15 ELSE '[]' END)`)})`;
  return `WITH payee AS (
       SELECT id, created_at, let_through_at FROM payees WHERE customer_id = $2::uuid AND sort_code = $7 AND account_number = $8),
     hold AS (SELECT ${held} AS reason FROM (SELECT 1) one LEFT JOIN payee p ON true),
     created AS (
       INSERT INTO payments (id, account_id, idempotency_key, fingerprint, amount, recipient_name,
         recipient_sort_code, recipient_account_number, reference, execute_on, status, limit_day, held_at)
       SELECT $14::uuid, a.id, $3, $4, $5, $6, $7, $8, $9, $10::date,
         CASE WHEN h.reason IS NULL THEN ${initial('PENDING')} ELSE ${initial('HELD')} END, $11::date,
         CASE WHEN h.reason IS NULL THEN NULL ELSE $13::timestamptz END
       FROM accounts a, hold h WHERE a.id = $1::uuid AND a.customer_id = $2::uuid
       ON CONFLICT (account_id, idempotency_key) DO NOTHING
       RETURNING *),${DEBIT('created')},
     day AS (${raiseDayTotalSql({ customerId: '$2::uuid', day: '$11::date', amount: 'd.amount', limit: '$12::bigint', from: 'debit d' })}),
     let_through AS (
       UPDATE payees pe SET let_through_at = $13::timestamptz FROM payee p
       WHERE pe.id = p.id AND pe.let_through_at IS NULL AND ${letThrough})${job}
     SELECT ${PAYMENT_COLUMNS}, (SELECT balance FROM debit) AS "balanceAfter", (SELECT used FROM day) AS "dayTotal",
       (SELECT reason FROM hold) AS "holdReason", ${jobText === null ? '0' : '(SELECT count(*) FROM job)::int'} AS jobs FROM created`;
}

/**
 * Schedule: inserts a SCHEDULED payment from an account the customer owns: no debit, no ledger
 * entry until its day. Null when nothing was inserted (not their account, or the key is taken).
 */
export async function schedule(
  tx: Tx,
  customerId: string,
  cmd: SendPaymentCommand & { executeOn: string },
  fingerprint: string,
): Promise<Payment | null> {
  const rows = await tx.$queryRawUnsafe<Payment[]>(
    `INSERT INTO payments (account_id, idempotency_key, fingerprint, amount, recipient_name,
       recipient_sort_code, recipient_account_number, reference, execute_on, status)
     SELECT a.id, $3, $4, $5, $6, $7, $8, $9, $10::date, ${initial('SCHEDULED')} FROM accounts a WHERE a.id = $1::uuid AND a.customer_id = $2::uuid
     ON CONFLICT (account_id, idempotency_key) DO NOTHING
     RETURNING ${PAYMENT_COLUMNS}`,
    ...paymentParams(customerId, cmd, fingerprint),
  );
  return rows[0] ?? null;
}

/**
 * Schedule a standing order's occurrence: a SCHEDULED payment copied from the order, for `date`,
 * keyed `key`. Null when it exists already (either of its unique keys).
 */
export async function scheduleOccurrence(
  tx: Tx,
  occurrence: { orderId: string; key: string; fingerprint: string; date: string },
): Promise<{ id: string } | null> {
  const rows = await tx.$queryRawUnsafe<{ id: string }[]>(
    `INSERT INTO payments (account_id, idempotency_key, fingerprint, amount, recipient_name, recipient_sort_code,
       recipient_account_number, reference, status, execute_on, standing_order_id)
     SELECT account_id, $1, $2, amount, recipient_name, recipient_sort_code,
       recipient_account_number, reference, ${initial('SCHEDULED')}, $3::date, id
     FROM standing_orders WHERE id = $4::uuid
     ON CONFLICT DO NOTHING
     RETURNING id::text`,
    occurrence.key,
    occurrence.fingerprint,
    occurrence.date,
    occurrence.orderId,
  );
  return rows[0] ?? null;
}

const DAY_CAME_FUNDED = arrow('SCHEDULED', 'PENDING');
const DAY_CAME_HELD = arrow('SCHEDULED', 'HELD');
const DAY_CAME_SHORT = arrow('SCHEDULED', 'FAILED');

/**
 * Execute on its day: a SCHEDULED payment whose day (`today` or earlier) has come: SCHEDULED ->
 * PENDING, or HELD (at `at`) when `hold` (the hold rule's answer, holds.ts), with the guarded
 * debit and its ledger entry, counting against the customer's limit on `today`; or, when the
 * balance is short, SCHEDULED -> FAILED (INSUFFICIENT_FUNDS) with nothing debited. One statement;
 * locks the payment row, then the account row, the order every other writer uses. Null when the
 * payment is not SCHEDULED or not due.
 */
export async function executeOnDay(tx: Tx, paymentId: string, today: string, onDay: { hold: boolean; at: Date }): Promise<Payment | null> {
  const rows = await tx.$queryRawUnsafe<Payment[]>(
    `WITH due AS (
       SELECT id, account_id, amount FROM payments
       WHERE id = $1::uuid AND status = ${DAY_CAME_FUNDED.from} AND execute_on <= $2::date
       FOR UPDATE),${DEBIT('due')},
     moved AS (
       UPDATE payments p SET
         status = CASE WHEN NOT EXISTS (SELECT 1 FROM debit) THEN ${DAY_CAME_SHORT.to}
           WHEN $4::boolean THEN ${DAY_CAME_HELD.to} ELSE ${DAY_CAME_FUNDED.to} END,
         failure_reason = CASE WHEN EXISTS (SELECT 1 FROM debit) THEN NULL ELSE $3 END,
         limit_day = CASE WHEN EXISTS (SELECT 1 FROM debit) THEN $2::date ELSE p.limit_day END,
         held_at = CASE WHEN EXISTS (SELECT 1 FROM debit) AND $4::boolean THEN $5::timestamptz ELSE p.held_at END,
         updated_at = now()
       FROM due d WHERE p.id = d.id
       RETURNING p.*)
     SELECT ${PAYMENT_COLUMNS} FROM moved`,
    paymentId,
    today,
    FAILURE_REASONS.INSUFFICIENT_FUNDS,
    onDay.hold,
    onDay.at,
  );
  return rows[0] ?? null;
}

/** Fail on its day: SCHEDULED -> FAILED with `reason`, nothing debited (its day came and it may not run). Null when it was not SCHEDULED. */
export async function failOnDay(db: Db, paymentId: string, reason: FailureReason): Promise<Payment | null> {
  const move = arrow('SCHEDULED', 'FAILED');
  const rows = await db.$queryRawUnsafe<Payment[]>(
    `UPDATE payments SET status = ${move.to}, failure_reason = $2, updated_at = now()
     WHERE id = $1::uuid AND status = ${move.from}
     RETURNING ${PAYMENT_COLUMNS}`,
    paymentId,
    reason,
  );
  return rows[0] ?? null;
}

/** Approve: HELD -> PENDING (the caller enqueues its settlement job in the same transaction). Null when it was not HELD. */
export async function approve(tx: Tx, paymentId: string): Promise<Payment | null> {
  const move = arrow('HELD', 'PENDING');
  const rows = await tx.$queryRawUnsafe<Payment[]>(
    `UPDATE payments SET status = ${move.to}, updated_at = now() WHERE id = $1::uuid AND status = ${move.from} RETURNING ${PAYMENT_COLUMNS}`,
    paymentId,
  );
  return rows[0] ?? null;
}

/** The ways a HELD payment ends without being sent. */
type HoldEnding =
  | typeof FAILURE_REASONS.REJECTED_IN_REVIEW
  | typeof FAILURE_REASONS.HOLD_EXPIRED
  | typeof FAILURE_REASONS.CANCELLED_BY_CUSTOMER;

/** HELD -> CANCELLED with `reason`, the refund and its ledger entry, in one statement. Null when it was not HELD. */
async function heldToCancelled<R extends HoldEnding>(
  tx: Tx,
  paymentId: string,
  reason: R,
): Promise<(Payment & { failureReason: R }) | null> {
  const move = arrow('HELD', 'CANCELLED');
  const rows = await tx.$queryRawUnsafe<(Payment & { failureReason: R })[]>(
    `WITH settled AS (
       UPDATE payments SET status = ${move.to}, failure_reason = $2, updated_at = now()
       WHERE id = $1::uuid AND status = ${move.from}
       RETURNING *),${MONEY_BACK('settled', 'PAYMENT_REFUND')}
     SELECT ${PAYMENT_COLUMNS} FROM settled`,
    paymentId,
    reason,
  );
  return rows[0] ?? null;
}

/** Reject: an operator's HELD -> CANCELLED (REJECTED_IN_REVIEW), money back. Null when it was not HELD. */
export const reject = (tx: Tx, paymentId: string) => heldToCancelled(tx, paymentId, FAILURE_REASONS.REJECTED_IN_REVIEW);

/** Expire: HELD -> CANCELLED (HOLD_EXPIRED) when nobody reviewed it in time, money back. Null when it was not HELD. */
export const expire = (tx: Tx, paymentId: string) => heldToCancelled(tx, paymentId, FAILURE_REASONS.HOLD_EXPIRED);

/** Cancel a held payment: the customer's HELD -> CANCELLED (CANCELLED_BY_CUSTOMER), money back. Null when it was not HELD. */
export const cancelHeld = (tx: Tx, paymentId: string) => heldToCancelled(tx, paymentId, FAILURE_REASONS.CANCELLED_BY_CUSTOMER);

/** Cancel a scheduled payment: SCHEDULED -> CANCELLED at the customer's request; nothing was debited, so nothing moves. Null when it was not SCHEDULED. */
export async function cancelScheduled(db: Db, paymentId: string): Promise<Payment | null> {
  const move = arrow('SCHEDULED', 'CANCELLED');
  const rows = await db.$queryRawUnsafe<Payment[]>(
    `UPDATE payments SET status = ${move.to}, failure_reason = $2, updated_at = now()
     WHERE id = $1::uuid AND status = ${move.from}
     RETURNING ${PAYMENT_COLUMNS}`,
    paymentId,
    FAILURE_REASONS.CANCELLED_BY_CUSTOMER,
  );
  return rows[0] ?? null;
}

/**
 * Cancel a standing order's occurrences: every one of its SCHEDULED payments -> CANCELLED
 * (nothing was debited). A statement of its own, so it sees an occurrence a scheduler committed
 * just before. Returns how many it cancelled.
 */
export async function cancelOccurrences(tx: Tx, standingOrderId: string): Promise<number> {
  const move = arrow('SCHEDULED', 'CANCELLED');
  return tx.$executeRawUnsafe(
    `UPDATE payments SET status = ${move.to}, failure_reason = $2, updated_at = now()
     WHERE standing_order_id = $1::uuid AND status = ${move.from}`,
    standingOrderId,
    FAILURE_REASONS.CANCELLED_BY_CUSTOMER,
  );
}

/**
 * Complete: PENDING -> COMPLETED, with the attempt that says why and the transfer in transit ->
 * provider settlement, in one statement (atomic on its
 * own, one round trip). Null when the payment was not PENDING (already settled by someone else).
 * `internalDetail` is for operators; the customer's text is fixed per outcome.
 */
export async function complete(db: Db, paymentId: string, internalDetail: string): Promise<Payment | null> {
  const move = arrow('PENDING', 'COMPLETED');
  const rows = await db.$queryRawUnsafe<Payment[]>(
    `WITH done AS (
       UPDATE payments SET status = ${move.to}, updated_at = now()
       WHERE id = $1::uuid AND status = ${move.from}
       RETURNING *),
     attempt AS (
       INSERT INTO payment_attempts (payment_id, outcome, detail, internal_detail) SELECT id, 'COMPLETED', $2, $3 FROM done),
     legs AS (${transferSql({ source: 'done', kind: 'PAYMENT_SETTLED', amount: 's.amount', from: { bank: 'IN_TRANSIT' }, to: { bank: 'PROVIDER_SETTLEMENT' }, payment: 's.id' })})
     SELECT ${PAYMENT_COLUMNS} FROM done`,
    paymentId,
    CUSTOMER_ATTEMPT_DETAIL.COMPLETED,
    internalDetail,
  );
  return rows[0] ?? null;
}

const REFUND_CANCELLED = arrow('PENDING', 'CANCELLED');
const REFUND_FAILED = arrow('PENDING', 'FAILED');

/**
 * Refund: PENDING -> CANCELLED or FAILED, with the refund and its ledger entry, in one statement.
 * Null when the payment was not PENDING: a payment is refunded at most once (the unique index on
 * ledger_entries (payment_id, kind) guards that a second time). A trigger gives the amount back to
 * the customer's daily limit in the same statement. A payment the customer asked to cancel
 * (`cancel_requested_at`) that would fail is CANCELLED_BY_CUSTOMER instead: the worker that meets
 * the customer's void at the provider refunds it as what it is.
 */
export async function refund(
  tx: Tx,
  paymentId: string,
  to: Extract<Arrow<'PENDING'>, 'CANCELLED' | 'FAILED'>,
  reason: FailureReason,
): Promise<Payment | null> {
  const rows = await tx.$queryRawUnsafe<Payment[]>(
    `WITH settled AS (
       UPDATE payments SET
         status = CASE WHEN $2 = 'FAILED' AND cancel_requested_at IS NOT NULL THEN ${REFUND_CANCELLED.to}
           WHEN $2 = 'FAILED' THEN ${REFUND_FAILED.to} ELSE ${REFUND_CANCELLED.to} END,
         failure_reason = CASE WHEN $2 = 'FAILED' AND cancel_requested_at IS NOT NULL THEN $4 ELSE $3 END,
         updated_at = now()
       WHERE id = $1::uuid AND status = ${REFUND_CANCELLED.from}
       RETURNING *),${MONEY_BACK('settled', 'PAYMENT_REFUND')}
     SELECT ${PAYMENT_COLUMNS} FROM settled`,
    paymentId,
    to,
    reason,
    FAILURE_REASONS.CANCELLED_BY_CUSTOMER,
  );
  return rows[0] ?? null;
}

/**
 * Cancel a pending payment once the provider has voided it at the customer's request: PENDING ->
 * CANCELLED (CANCELLED_BY_CUSTOMER), money back. Null when it was not PENDING.
 */
export const cancelVoided = (tx: Tx, paymentId: string) => refund(tx, paymentId, 'CANCELLED', FAILURE_REASONS.CANCELLED_BY_CUSTOMER);

/**
 * Return: COMPLETED -> RETURNED (the recipient's bank sent it back), with the money back through a
 * PAYMENT_RETURN ledger entry, in one statement. Null when it was not COMPLETED: a return is
 * applied at most once (the unique index on ledger_entries (payment_id, kind) guards that too).
 */
export async function returnPayment(tx: Tx, paymentId: string, returnCode: string): Promise<Payment | null> {
  const move = arrow('COMPLETED', 'RETURNED');
  const rows = await tx.$queryRawUnsafe<Payment[]>(
    `WITH returned AS (
       UPDATE payments SET status = ${move.to}, return_code = $2, updated_at = now()
       WHERE id = $1::uuid AND status = ${move.from}
       RETURNING *),${MONEY_BACK('returned', 'PAYMENT_RETURN')}
     SELECT ${PAYMENT_COLUMNS} FROM returned`,
    paymentId,
    returnCode,
  );
  return rows[0] ?? null;
}

/**
 * Records that the customer asked to cancel a PENDING payment, before it is voided (not a change of
 * status: it tells whoever refunds it after the void to refund it as this cancellation). Null when
 * it is no longer PENDING. Each request writes a mark later than the one before it (so a request can
 * tell whether another came after it); `first` says no request was marked before this one.
 */
export async function requestCancellation(db: Db, paymentId: string): Promise<{ requestedAt: Date; first: boolean } | null> {
  // The row is locked first, so `prior` is the mark the request before this one left, even when
  // the two ran at once.
  const rows = await db.$queryRawUnsafe<{ requestedAt: Date; first: boolean }[]>(
    `WITH prior AS (SELECT id, cancel_requested_at FROM payments WHERE id = $1::uuid AND status = 'PENDING' FOR UPDATE)
     UPDATE payments p SET cancel_requested_at = greatest(clock_timestamp(), p.cancel_requested_at + interval '1 millisecond')
     FROM prior WHERE p.id = prior.id
     RETURNING p.cancel_requested_at AS "requestedAt", prior.cancel_requested_at IS NULL AS first`,
    paymentId,
  );
  return rows[0] ?? null;
}

/**
 * Takes back a cancel request that certainly did not void the payment at the provider, so that a
 * later failure is refunded as what it is (FAILED), not as the customer's cancellation. Guarded on
 * PENDING and on the mark being exactly `requestedAt`, the one the request wrote: once another
 * request has marked it since (its void may be on its way), it stays. False when nothing changed.
 */
export async function withdrawCancellation(db: Db, paymentId: string, requestedAt: Date): Promise<boolean> {
  const changed = await db.$executeRawUnsafe(
    `UPDATE payments SET cancel_requested_at = NULL
     WHERE id = $1::uuid AND status = 'PENDING' AND cancel_requested_at = $2::timestamptz`,
    paymentId,
    requestedAt,
  );
  return changed > 0;
}

import type { Payment, PrismaClient, Tx } from '../db/prisma.ts';
import type { ProviderEvent } from '../provider/client.ts';
import type { SendPaymentCommand } from '../validation.ts';
import { CUSTOMER_ATTEMPT_DETAIL, FAILURE_REASONS, type AttemptOutcome, type FailureReason } from './outcomes.ts';
import type { PaymentStatus } from './payment-status.ts';
import { raiseDayTotalSql } from './limits.ts';

/**
 * The SQL that moves money. Each function is one statement (one round trip), and each status
 * change is guarded by the status it expects, so running it twice changes nothing the second time.
 */

type Db = Tx | PrismaClient;

// Columns of `payments` under the names of Prisma's `Payment` model, for RETURNING.
export const PAYMENT_COLUMNS = `id, account_id AS "accountId", idempotency_key AS "idempotencyKey", fingerprint, amount,
  currency, recipient_name AS "recipientName", recipient_sort_code AS "recipientSortCode",
  recipient_account_number AS "recipientAccountNumber", reference, status::text AS status,
  failure_reason AS "failureReason", limit_day AS "limitDay", execute_on AS "executeOn", return_code AS "returnCode",
  standing_order_id AS "standingOrderId", cancel_requested_at AS "cancelRequestedAt", created_at AS "createdAt", updated_at AS "updatedAt"`;

/**
 * CTEs `debit` and `entry`: the guarded decrement (never below zero) of the account of each payment
 * in `source` (columns id, account_id, amount) and its PAYMENT_DEBIT ledger entry.
 */
const DEBIT = (source: string) => `
     debit AS (
       UPDATE accounts a SET balance = a.balance - s.amount, updated_at = now()
       FROM ${source} s WHERE a.id = s.account_id AND a.balance >= s.amount
       RETURNING a.id, a.balance, s.id AS payment_id, s.amount),
     entry AS (
       INSERT INTO ledger_entries (account_id, kind, amount, balance_after, payment_id)
       SELECT id, 'PAYMENT_DEBIT', -amount, balance, payment_id FROM debit)`;

/** CTEs `credit` and `entry`: each payment's amount in `source` back to its account, with a ledger entry of `kind`. */
const MONEY_BACK = (source: string, kind: 'PAYMENT_REFUND' | 'PAYMENT_RETURN') => `
     credit AS (
       UPDATE accounts a SET balance = a.balance + s.amount, updated_at = now()
       FROM ${source} s WHERE a.id = s.account_id
       RETURNING a.id, a.balance, s.id AS payment_id, s.amount),
     entry AS (
       INSERT INTO ledger_entries (account_id, kind, amount, balance_after, payment_id)
       SELECT id, '${kind}', amount, balance, payment_id FROM credit)`;

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
 * Inserts a PENDING payment from an account the customer owns and, in the same statement (one
 * round trip), the guarded decrement and its ledger entry. Locks in this order: the payment's
 * unique-index entry (a concurrent duplicate waits here until the first commits or rolls back),
 * then the account row. Null when nothing was inserted: the account is not theirs (or does not
 * exist) or already has a payment with this key; then nothing was debited. `balanceAfter` is null
 * when the payment was inserted but the balance is short: the caller must roll back.
 * Payee safety (issue 15): `screened` says PENDING or HELD and the London day the payment counts
 * against; after the debit, the same statement raises the customer's day total (limits.ts), last in
 * the lock order. `dayTotal` is null when that would pass `dailyLimit`: the caller must roll back.
 */
export async function insertPaymentAndDebit(
  tx: Tx,
  customerId: string,
  cmd: SendPaymentCommand,
  fingerprint: string,
  screened: { status: Extract<PaymentStatus, 'PENDING' | 'HELD'>; limitDay: string; dailyLimit: number },
): Promise<{ payment: Payment; balanceAfter: bigint | null; dayTotal: bigint | null } | null> {
  const rows = await tx.$queryRawUnsafe<(Payment & { balanceAfter: bigint | null; dayTotal: bigint | null })[]>(
    `WITH created AS (
       INSERT INTO payments (account_id, idempotency_key, fingerprint, amount, recipient_name,
         recipient_sort_code, recipient_account_number, reference, execute_on, status, limit_day)
       SELECT a.id, $3, $4, $5, $6, $7, $8, $9, $10::date, $11::"PaymentStatus", $12::date
       FROM accounts a WHERE a.id = $1::uuid AND a.customer_id = $2::uuid
       ON CONFLICT (account_id, idempotency_key) DO NOTHING
       RETURNING *),${DEBIT('created')},
     day AS (${raiseDayTotalSql({ customerId: '$2::uuid', day: '$12::date', amount: 'd.amount', limit: '$13::bigint', from: 'debit d' })})
     SELECT ${PAYMENT_COLUMNS}, (SELECT balance FROM debit) AS "balanceAfter", (SELECT used FROM day) AS "dayTotal" FROM created`,
    ...paymentParams(customerId, cmd, fingerprint),
    screened.status,
    screened.limitDay,
    BigInt(screened.dailyLimit),
  );
  const row = rows[0];
  if (!row) return null;
  const { balanceAfter, dayTotal, ...payment } = row;
  return { payment, balanceAfter, dayTotal };
}

/**
 * Inserts a SCHEDULED payment from an account the customer owns: no debit, no ledger entry until
 * its day. Null when nothing was inserted (not their account, or the key is taken).
 */
export async function insertScheduledPayment(tx: Tx, customerId: string, cmd: SendPaymentCommand & { executeOn: string }, fingerprint: string): Promise<Payment | null> {
  const rows = await tx.$queryRawUnsafe<Payment[]>(
    `INSERT INTO payments (account_id, idempotency_key, fingerprint, amount, recipient_name,
       recipient_sort_code, recipient_account_number, reference, execute_on, status)
     SELECT a.id, $3, $4, $5, $6, $7, $8, $9, $10::date, 'SCHEDULED' FROM accounts a WHERE a.id = $1::uuid AND a.customer_id = $2::uuid
     ON CONFLICT (account_id, idempotency_key) DO NOTHING
     RETURNING ${PAYMENT_COLUMNS}`,
    ...paymentParams(customerId, cmd, fingerprint),
  );
  return rows[0] ?? null;
}

/**
 * A SCHEDULED payment whose day (`today` or earlier) has come: SCHEDULED -> PENDING (HELD for
 * review from `heldFrom` pence, issue 15) with the guarded debit and its ledger entry, counting
 * against the customer's limit on `today`; or, when the balance is short, SCHEDULED -> FAILED
 * (INSUFFICIENT_FUNDS) with nothing debited. One statement; locks the payment row, then the
 * account row, the order every other writer uses. Null when the payment is not SCHEDULED or not due.
 */
export async function executeScheduledPayment(tx: Tx, paymentId: string, today: string, heldFrom: number): Promise<Payment | null> {
  const rows = await tx.$queryRawUnsafe<Payment[]>(
    `WITH due AS (
       SELECT id, account_id, amount FROM payments
       WHERE id = $1::uuid AND status = 'SCHEDULED' AND execute_on <= $2::date
       FOR UPDATE),${DEBIT('due')},
     moved AS (
       UPDATE payments p SET
         status = CASE WHEN NOT EXISTS (SELECT 1 FROM debit) THEN 'FAILED'::"PaymentStatus"
           WHEN p.amount >= $4 THEN 'HELD'::"PaymentStatus" ELSE 'PENDING'::"PaymentStatus" END,
         failure_reason = CASE WHEN EXISTS (SELECT 1 FROM debit) THEN NULL ELSE $3 END,
         limit_day = CASE WHEN EXISTS (SELECT 1 FROM debit) THEN $2::date ELSE p.limit_day END,
         updated_at = now()
       FROM due d WHERE p.id = d.id
       RETURNING p.*)
     SELECT ${PAYMENT_COLUMNS} FROM moved`,
    paymentId,
    today,
    FAILURE_REASONS.INSUFFICIENT_FUNDS,
    BigInt(heldFrom),
  );
  return rows[0] ?? null;
}

/** SCHEDULED -> FAILED with `reason`, nothing debited (its day came and it may not run). Null when it was not SCHEDULED. */
export async function failScheduledPayment(db: Db, paymentId: string, reason: FailureReason): Promise<Payment | null> {
  const rows = await db.$queryRawUnsafe<Payment[]>(
    `UPDATE payments SET status = 'FAILED', failure_reason = $2, updated_at = now()
     WHERE id = $1::uuid AND status = 'SCHEDULED'
     RETURNING ${PAYMENT_COLUMNS}`,
    paymentId,
    reason,
  );
  return rows[0] ?? null;
}

/** SCHEDULED -> CANCELLED at the customer's request: nothing was debited, so nothing moves. Null when it was not SCHEDULED. */
export async function cancelScheduledPayment(db: Db, paymentId: string): Promise<Payment | null> {
  const rows = await db.$queryRawUnsafe<Payment[]>(
    `UPDATE payments SET status = 'CANCELLED', failure_reason = $2, updated_at = now()
     WHERE id = $1::uuid AND status = 'SCHEDULED'
     RETURNING ${PAYMENT_COLUMNS}`,
    paymentId,
    FAILURE_REASONS.CANCELLED_BY_CUSTOMER,
  );
  return rows[0] ?? null;
}

/**
 * COMPLETED -> RETURNED (the recipient's bank sent it back), with the money back through a
 * PAYMENT_RETURN ledger entry, in one statement. Null when it was not COMPLETED: a return is
 * applied at most once (the unique index on ledger_entries (payment_id, kind) guards that too).
 */
export async function returnPayment(tx: Tx, paymentId: string, returnCode: string): Promise<Payment | null> {
  const rows = await tx.$queryRawUnsafe<Payment[]>(
    `WITH returned AS (
       UPDATE payments SET status = 'RETURNED', return_code = $2, updated_at = now()
       WHERE id = $1::uuid AND status = 'COMPLETED'
       RETURNING *),${MONEY_BACK('returned', 'PAYMENT_RETURN')}
     SELECT ${PAYMENT_COLUMNS} FROM returned`,
    paymentId,
    returnCode,
  );
  return rows[0] ?? null;
}

/** The customer's payment on that account with that idempotency key, if any. */
export function findPaymentByKey(db: Db, customerId: string, accountId: string, key: string): Promise<Payment | null> {
  return db.payment.findFirst({ where: { accountId, idempotencyKey: key, account: { customerId } } });
}

/**
 * PENDING -> COMPLETED, with the attempt that says why, in one statement (atomic on its own, one
 * round trip). Null when the payment was not PENDING (already settled by someone else).
 * `internalDetail` is for operators; the customer's text is fixed per outcome.
 */
export async function completePayment(db: Db, paymentId: string, internalDetail: string): Promise<Payment | null> {
  const rows = await db.$queryRawUnsafe<Payment[]>(
    `WITH done AS (
       UPDATE payments SET status = 'COMPLETED', updated_at = now()
       WHERE id = $1::uuid AND status = 'PENDING'
       RETURNING *),
     attempt AS (
       INSERT INTO payment_attempts (payment_id, outcome, detail, internal_detail) SELECT id, 'COMPLETED', $2, $3 FROM done)
     SELECT ${PAYMENT_COLUMNS} FROM done`,
    paymentId,
    CUSTOMER_ATTEMPT_DETAIL.COMPLETED,
    internalDetail,
  );
  return rows[0] ?? null;
}

/**
 * PENDING (or `from`: a HELD payment, issue 15) -> CANCELLED or FAILED, with the refund and its
 * ledger entry, in one statement. Null when the payment was not in `from`: a payment is refunded
 * at most once (the unique index on ledger_entries (payment_id, kind) guards that a second time).
 * A trigger gives the amount back to the customer's daily limit in the same statement. A payment
 * the customer asked to cancel (`cancel_requested_at`) that would fail is CANCELLED_BY_CUSTOMER
 * instead: the worker that meets the customer's void at the provider refunds it as what it is.
 */
export async function refundPayment(
  tx: Tx,
  paymentId: string,
  to: Extract<PaymentStatus, 'CANCELLED' | 'FAILED'>,
  reason: FailureReason,
  from: Extract<PaymentStatus, 'PENDING' | 'HELD'> = 'PENDING',
): Promise<Payment | null> {
  const rows = await tx.$queryRawUnsafe<Payment[]>(
    `WITH settled AS (
       UPDATE payments SET
         status = CASE WHEN $2 = 'FAILED' AND cancel_requested_at IS NOT NULL THEN 'CANCELLED' ELSE $2::"PaymentStatus" END,
         failure_reason = CASE WHEN $2 = 'FAILED' AND cancel_requested_at IS NOT NULL THEN $4 ELSE $3 END,
         updated_at = now()
       WHERE id = $1::uuid AND status = $5::"PaymentStatus"
       RETURNING *),${MONEY_BACK('settled', 'PAYMENT_REFUND')}
     SELECT ${PAYMENT_COLUMNS} FROM settled`,
    paymentId,
    to,
    reason,
    FAILURE_REASONS.CANCELLED_BY_CUSTOMER,
    from,
  );
  return rows[0] ?? null;
}

/** Records that the customer asked to cancel a PENDING payment, before it is voided. False when it is no longer PENDING. */
export async function requestCancellation(db: Db, paymentId: string): Promise<boolean> {
  const changed = await db.$executeRawUnsafe(
    `UPDATE payments SET cancel_requested_at = coalesce(cancel_requested_at, now()) WHERE id = $1::uuid AND status = 'PENDING'`,
    paymentId,
  );
  return changed > 0;
}

/**
 * Appends what the worker did or learned about a payment; the attempt number follows from order.
 * The customer's `detail` is the fixed text of the outcome; `internalDetail` is for operators.
 */
export async function recordAttempt(db: Db, paymentId: string, outcome: AttemptOutcome, internalDetail: string): Promise<void> {
  await db.paymentAttempt.create({ data: { paymentId, outcome, detail: CUSTOMER_ATTEMPT_DETAIL[outcome], internalDetail } });
}

/** An inbound credit as the provider delivered it, already parsed. */
export type InboundCredit = Omit<Extract<ProviderEvent, { type: 'credit.received' }>, 'type'>;

/**
 * Records a provider credit once (its id is the primary key of `provider_credits`) and, when it is
 * in GBP to one of our accounts, credits that account with an INBOUND_CREDIT ledger entry naming
 * the sender, in the same statement. Otherwise it is recorded as RETURNING (to be sent back).
 * Null when the credit was recorded before: nothing happens twice.
 */
export async function recordInboundCredit(tx: Tx, credit: InboundCredit): Promise<{ outcome: 'CREDITED' | 'RETURNING'; accountId: string | null } | null> {
  const rows = await tx.$queryRawUnsafe<{ outcome: 'CREDITED' | 'RETURNING'; accountId: string | null }[]>(
    `WITH target AS (
       SELECT a.id FROM accounts a WHERE a.sort_code = $4 AND a.account_number = $5 AND $3 = 'GBP'),
     recorded AS (
       INSERT INTO provider_credits (id, amount, currency, recipient_sort_code, recipient_account_number,
         sender_name, sender_sort_code, sender_account_number, reference, outcome, account_id, return_reason, resolved_at)
       SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9,
         CASE WHEN t.id IS NULL THEN 'RETURNING' ELSE 'CREDITED' END, t.id,
         CASE WHEN t.id IS NOT NULL THEN NULL WHEN $3 <> 'GBP' THEN 'UNSUPPORTED_CURRENCY' ELSE 'UNKNOWN_ACCOUNT' END,
         CASE WHEN t.id IS NULL THEN NULL ELSE now() END
       FROM (SELECT 1) one LEFT JOIN target t ON true
       ON CONFLICT (id) DO NOTHING
       RETURNING id, outcome, account_id, amount),
     credit AS (
       UPDATE accounts a SET balance = a.balance + r.amount, updated_at = now()
       FROM recorded r WHERE a.id = r.account_id
       RETURNING a.id, a.balance, r.id AS credit_id, r.amount),
     entry AS (
       INSERT INTO ledger_entries (account_id, kind, amount, balance_after, counterparty_name, counterparty_sort_code,
         counterparty_account_number, reference, provider_credit_id)
       SELECT id, 'INBOUND_CREDIT', amount, balance, $6, $7, $8, $9, credit_id FROM credit)
     SELECT outcome, account_id AS "accountId" FROM recorded`,
    credit.id,
    BigInt(credit.amount),
    credit.currency,
    credit.recipient.sortCode,
    credit.recipient.accountNumber,
    credit.sender.name,
    credit.sender.sortCode,
    credit.sender.accountNumber,
    credit.reference,
  );
  return rows[0] ?? null;
}

/** RETURNING -> RETURNED once the provider confirmed the credit went back. False when it was not RETURNING. */
export async function markCreditReturned(db: Db, creditId: string): Promise<boolean> {
  const changed = await db.$executeRawUnsafe(
    `UPDATE provider_credits SET outcome = 'RETURNED', resolved_at = now() WHERE id = $1 AND outcome = 'RETURNING'`,
    creditId,
  );
  return changed > 0;
}

import type { Payment, PrismaClient, Tx } from '../db/prisma.ts';
import type { SendPaymentCommand } from '../validation.ts';
import { CUSTOMER_ATTEMPT_DETAIL, type AttemptOutcome, type FailureReason } from './outcomes.ts';
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
  failure_reason AS "failureReason", limit_day AS "limitDay", created_at AS "createdAt", updated_at AS "updatedAt"`;

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
         recipient_sort_code, recipient_account_number, reference, status, limit_day)
       SELECT a.id, $3, $4, $5, $6, $7, $8, $9, $10::"PaymentStatus", $11::date
       FROM accounts a WHERE a.id = $1::uuid AND a.customer_id = $2::uuid
       ON CONFLICT (account_id, idempotency_key) DO NOTHING
       RETURNING *),
     debit AS (
       UPDATE accounts a SET balance = a.balance - c.amount, updated_at = now()
       FROM created c WHERE a.id = c.account_id AND a.balance >= c.amount
       RETURNING a.id, a.balance, c.id AS payment_id, c.amount),
     entry AS (
       INSERT INTO ledger_entries (account_id, kind, amount, balance_after, payment_id)
       SELECT id, 'PAYMENT_DEBIT', -amount, balance, payment_id FROM debit),
     day AS (${raiseDayTotalSql({ customerId: '$2::uuid', day: '$11::date', amount: 'd.amount', limit: '$12::bigint', from: 'debit d' })})
     SELECT ${PAYMENT_COLUMNS}, (SELECT balance FROM debit) AS "balanceAfter", (SELECT used FROM day) AS "dayTotal" FROM created`,
    cmd.fromAccountId,
    customerId,
    cmd.idempotencyKey,
    fingerprint,
    BigInt(cmd.amount),
    cmd.recipient.name,
    cmd.recipient.sortCode,
    cmd.recipient.accountNumber,
    cmd.reference,
    screened.status,
    screened.limitDay,
    BigInt(screened.dailyLimit),
  );
  const row = rows[0];
  if (!row) return null;
  const { balanceAfter, dayTotal, ...payment } = row;
  return { payment, balanceAfter, dayTotal };
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
 * A trigger gives the amount back to the customer's daily limit in the same statement.
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
       UPDATE payments SET status = $2::"PaymentStatus", failure_reason = $3, updated_at = now()
       WHERE id = $1::uuid AND status = $4::"PaymentStatus"
       RETURNING *),
     credit AS (
       UPDATE accounts a SET balance = a.balance + s.amount, updated_at = now()
       FROM settled s WHERE a.id = s.account_id
       RETURNING a.id, a.balance, s.id AS payment_id, s.amount),
     entry AS (
       INSERT INTO ledger_entries (account_id, kind, amount, balance_after, payment_id)
       SELECT id, 'PAYMENT_REFUND', amount, balance, payment_id FROM credit)
     SELECT ${PAYMENT_COLUMNS} FROM settled`,
    paymentId,
    to,
    reason,
    from,
  );
  return rows[0] ?? null;
}

/**
 * Appends what the worker did or learned about a payment; the attempt number follows from order.
 * The customer's `detail` is the fixed text of the outcome; `internalDetail` is for operators.
 */
export async function recordAttempt(db: Db, paymentId: string, outcome: AttemptOutcome, internalDetail: string): Promise<void> {
  await db.paymentAttempt.create({ data: { paymentId, outcome, detail: CUSTOMER_ATTEMPT_DETAIL[outcome], internalDetail } });
}

import type { Payment, PrismaClient, Tx } from '../db/prisma.ts';
import { transferSql } from '../ledger/postings.ts';
import type { ProviderEvent } from '../provider/client.ts';
import { type AttemptOutcome, CUSTOMER_ATTEMPT_DETAIL } from './failure-reasons.ts';

/**
 * The SQL about payments that changes no status (transitions.ts holds every statement that does):
 * replays, attempts, and money coming in from the provider.
 */

type Db = Tx | PrismaClient;

/** The customer's payment on that account with that idempotency key, if any. */
export function findPaymentByKey(db: Db, customerId: string, accountId: string, key: string): Promise<Payment | null> {
  return db.payment.findFirst({ where: { accountId, idempotencyKey: key, account: { customerId } } });
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
 * the sender, and its transfer provider settlement -> customer, in the same statement. Otherwise it
 * is recorded as RETURNING (to be sent back), the money moved to inbound clearing until it is.
 * Null when the credit was recorded before: nothing happens twice.
 */
export async function recordInboundCredit(
  tx: Tx,
  credit: InboundCredit,
): Promise<{ outcome: 'CREDITED' | 'RETURNING'; accountId: string | null } | null> {
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
       SELECT id, 'INBOUND_CREDIT', amount, balance, $6, $7, $8, $9, credit_id FROM credit
       RETURNING account_id, amount, created_at, provider_credit_id),
     legs AS (${transferSql({ source: 'entry', kind: 'INBOUND_CREDIT', amount: 's.amount', from: { bank: 'PROVIDER_SETTLEMENT' }, to: { customer: 's.account_id' }, at: 's.created_at', credit: 's.provider_credit_id' })}),
     unapplied AS (${transferSql({ source: 'recorded', where: "s.outcome = 'RETURNING'", kind: 'CREDIT_UNAPPLIED', amount: 's.amount', from: { bank: 'PROVIDER_SETTLEMENT' }, to: { bank: 'INBOUND_CLEARING' }, credit: 's.id' })})
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

/**
 * RETURNING -> RETURNED once the provider confirmed the credit went back, with its transfer inbound
 * clearing -> returns, in one statement. False when it was not RETURNING.
 */
export async function markCreditReturned(db: Db, creditId: string): Promise<boolean> {
  const rows = await db.$queryRawUnsafe<{ id: string }[]>(
    `WITH returned AS (
       UPDATE provider_credits SET outcome = 'RETURNED', resolved_at = now() WHERE id = $1 AND outcome = 'RETURNING'
       RETURNING id, amount),
     legs AS (${transferSql({ source: 'returned', kind: 'CREDIT_RETURNED', amount: 's.amount', from: { bank: 'INBOUND_CLEARING' }, to: { bank: 'RETURNS' }, credit: 's.id' })})
     SELECT id FROM returned`,
    creditId,
  );
  return rows.length > 0;
}

/**
 * Double entry (ADR 0012): every movement of money is a transfer of postings that sum to zero,
 * between ledger accounts: a customer's account (its `accounts` row, whose balance is the sum of its
 * ledger entries and of its postings) or one of the bank's own accounts below. A transfer is written
 * by the same statement that writes the customer's ledger entry (one round trip), as a CTE of it.
 *
 * The bank's accounts keep no balance row: every payment touches them, so a balance row would be a
 * lock every payment waits on. Their balances are sums of postings, proved by `npm run audit`.
 */

/** The bank's own ledger accounts. */
export const BANK_ACCOUNTS = Object.freeze({
  /** Where deposits come from: the bank's funding of customer accounts. */
  FUNDING: 'FUNDING',
  /** Payments debited from customers (PENDING or HELD) and not yet executed by the provider or refunded. */
  IN_TRANSIT: 'IN_TRANSIT',
  /** Our position with the provider: executed payments in, returns and inbound credits out. */
  PROVIDER_SETTLEMENT: 'PROVIDER_SETTLEMENT',
  /** Inbound credits for no account of ours, until they are sent back. */
  INBOUND_CLEARING: 'INBOUND_CLEARING',
  /** Inbound credits sent back to the provider. */
  RETURNS: 'RETURNS',
} as const);
export type BankAccount = keyof typeof BANK_ACCOUNTS;

/** What a transfer is. Customer-facing kinds match the ledger entry the transfer goes with. */
export type TransferKind =
  | 'DEPOSIT'
  | 'PAYMENT_DEBIT'
  | 'PAYMENT_SETTLED'
  | 'PAYMENT_REFUND'
  | 'PAYMENT_RETURN'
  | 'INBOUND_CREDIT'
  | 'CREDIT_UNAPPLIED'
  | 'CREDIT_RETURNED';

/** One side of a transfer: a customer's account (an SQL expression over `s`, the source row) or a bank account. */
export type Side = { customer: string } | { bank: BankAccount };

const accountOf = (side: Side) => ('customer' in side ? `(${side.customer})::uuid` : 'NULL::uuid');
const bankOf = (side: Side) => ('bank' in side ? `'${BANK_ACCOUNTS[side.bank]}'::text` : 'NULL::text');

/**
 * The SQL of an INSERT writing, for each row `s` of `source`, one transfer of `amount` (an SQL
 * expression over `s`, positive) from `from` to `to`: two postings that sum to zero. `at`, `payment`
 * and `credit` are SQL expressions over `s` (the time, the payment id, the provider credit id). For
 * use as a CTE of the statement that moves the money.
 */
export function transferSql(o: {
  source: string;
  kind: TransferKind;
  amount: string;
  from: Side;
  to: Side;
  at?: string;
  payment?: string;
  credit?: string;
  /** Only the rows of `source` this condition (over `s`) holds for. */
  where?: string;
}): string {
  return `INSERT INTO postings (transfer_id, kind, account_id, bank_account, amount, payment_id, provider_credit_id, created_at)
       SELECT t.transfer_id, '${o.kind}', leg.account_id, leg.bank_account, leg.amount, t.payment_id, t.credit_id, t.at
       FROM (SELECT gen_random_uuid() AS transfer_id, (${o.amount})::bigint AS amount, ${accountOf(o.from)} AS from_account,
           ${bankOf(o.from)} AS from_bank, ${accountOf(o.to)} AS to_account, ${bankOf(o.to)} AS to_bank,
           (${o.payment ?? 'NULL'})::uuid AS payment_id, (${o.credit ?? 'NULL'})::text AS credit_id,
           (${o.at ?? 'clock_timestamp()'})::timestamptz AS at
         FROM ${o.source} s${o.where ? ` WHERE ${o.where}` : ''}) t
       CROSS JOIN LATERAL (VALUES (t.from_account, t.from_bank, -t.amount), (t.to_account, t.to_bank, t.amount))
         leg(account_id, bank_account, amount)`;
}

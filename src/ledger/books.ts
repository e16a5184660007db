import type { PrismaClient } from '../db/prisma.ts';
import { BANK_ACCOUNTS } from './postings.ts';

/**
 * The auditor's first questions about double-entry books (ADR 0012), each answered by one statement
 * (one snapshot, so a payment committing meanwhile cannot make a sum look wrong):
 * - every transfer's postings sum to zero, and all accounts together sum to zero (the trial balance);
 * - every customer account's postings sum to its balance (and so to its ledger entries);
 * - in transit equals the payments accepted (debited) and not yet executed or refunded: PENDING and
 *   HELD; each other bank account equals what the records it stands for say.
 */

type BankKey = keyof typeof BANK_ACCOUNTS;
type BankBalances = Record<BankKey | `${BankKey}_expected`, bigint>;

type Check = (name: string, checked: number, violations: string[]) => void;

export async function checkDoubleEntry(prisma: PrismaClient, check: Check): Promise<void> {
  const [totals] = await prisma.$queryRaw<{ transfers: bigint; unbalanced: string[]; total: bigint | null }[]>`
    WITH t AS (SELECT transfer_id, sum(amount) AS s, min(kind) AS kind FROM postings GROUP BY transfer_id)
    SELECT count(*) AS transfers, (SELECT sum(amount) FROM postings)::bigint AS total,
      coalesce(array_agg(transfer_id || ' (' || kind || ') sums to ' || s) FILTER (WHERE s <> 0), '{}') AS unbalanced
    FROM t`;
  const total = totals?.total ?? 0n;
  check('trial balance: every transfer sums to zero, and so do all ledger accounts together', Number(totals?.transfers ?? 0), [
    ...(totals?.unbalanced ?? []).map((t) => `transfer ${t}`),
    ...(total !== 0n ? [`all postings sum to ${total}`] : []),
  ]);

  const customers = await prisma.$queryRaw<{ checked: bigint; drift: string[] }[]>`
    WITH p AS (SELECT account_id, sum(amount) AS s FROM postings WHERE account_id IS NOT NULL GROUP BY account_id)
    SELECT count(*) AS checked, coalesce(array_agg('account ' || a.id || ': balance ' || a.balance || ', postings ' || coalesce(p.s, 0))
      FILTER (WHERE a.balance <> coalesce(p.s, 0)), '{}') AS drift
    FROM accounts a FULL JOIN p ON p.account_id = a.id`;
  check("every customer account's postings sum to its balance", Number(customers[0]?.checked ?? 0), customers[0]?.drift ?? []);

  const [bank] = await prisma.$queryRaw<BankBalances[]>`
    SELECT
      coalesce((SELECT sum(amount) FROM postings WHERE bank_account = 'IN_TRANSIT'), 0)::bigint AS "IN_TRANSIT",
      coalesce((SELECT sum(amount) FROM payments WHERE status IN ('PENDING', 'HELD')), 0)::bigint AS "IN_TRANSIT_expected",
      coalesce((SELECT sum(amount) FROM postings WHERE bank_account = 'PROVIDER_SETTLEMENT'), 0)::bigint AS "PROVIDER_SETTLEMENT",
      (coalesce((SELECT sum(amount) FROM payments WHERE status = 'COMPLETED'), 0)
        - coalesce((SELECT sum(amount) FROM provider_credits), 0))::bigint AS "PROVIDER_SETTLEMENT_expected",
      coalesce((SELECT sum(amount) FROM postings WHERE bank_account = 'FUNDING'), 0)::bigint AS "FUNDING",
      (-coalesce((SELECT sum(amount) FROM ledger_entries WHERE kind = 'DEPOSIT'), 0))::bigint AS "FUNDING_expected",
      coalesce((SELECT sum(amount) FROM postings WHERE bank_account = 'INBOUND_CLEARING'), 0)::bigint AS "INBOUND_CLEARING",
      coalesce((SELECT sum(amount) FROM provider_credits WHERE outcome = 'RETURNING'), 0)::bigint AS "INBOUND_CLEARING_expected",
      coalesce((SELECT sum(amount) FROM postings WHERE bank_account = 'RETURNS'), 0)::bigint AS "RETURNS",
      coalesce((SELECT sum(amount) FROM provider_credits WHERE outcome = 'RETURNED'), 0)::bigint AS "RETURNS_expected"`;
  const mismatch = (key: keyof typeof BANK_ACCOUNTS, what: string) =>
    bank && bank[key] !== bank[`${key}_expected`] ? [`${key} holds ${bank[key]}, ${what} ${bank[`${key}_expected`]}`] : [];
  check(
    'in transit equals the payments accepted and not settled (PENDING and HELD)',
    1,
    mismatch('IN_TRANSIT', 'PENDING and HELD payments sum to'),
  );
  check('each bank ledger account equals what its records say', Object.keys(BANK_ACCOUNTS).length - 1, [
    ...mismatch('PROVIDER_SETTLEMENT', 'COMPLETED payments less provider credits come to'),
    ...mismatch('FUNDING', 'minus the deposits is'),
    ...mismatch('INBOUND_CLEARING', 'credits being returned sum to'),
    ...mismatch('RETURNS', 'credits returned sum to'),
  ]);
}

import { randomInt } from 'node:crypto';
import type { Viewer } from '../auth.ts';
import type { KeysetPage } from '../db/keyset.ts';
import type { Account, Customer, LedgerEntry, OperatorAction, PrismaClient } from '../db/prisma.ts';
import { DomainError, userError } from '../errors.ts';
import { transferSql } from '../ledger/postings.ts';
import type { Logger } from '../logger.ts';
import { listOperatorActions, type Operator, recordOperatorAction as recordAction } from '../operator-actions.ts';
import { createCustomerInput, depositFundsInput, isUuid, openAccountInput, type Parsed, parseInput } from '../validation.ts';

/**
 * Customers, accounts and deposits: the operator's side of the bank.
 *
 * Glossary: an *account* holds a GBP balance in pence and is identified outside the bank by
 * sort code + account number; a *ledger entry* is one append-only movement of that balance.
 * The balance always equals the sum of the account's ledger entries. An *operator action* records
 * which operator (the token's `sub`) made each change, in the same transaction as the change.
 */

export type { Operator } from '../operator-actions.ts';

/** This bank's sort code; the bank allocates account numbers under it. */
export const BANK_SORT_CODE = '608371';

/**
 * The `where` that limits a query to what the viewer may see: a customer only their own
 * accounts, an operator (bank staff) every account.
 */
export function ownedAccountWhere(viewer: Viewer): { customerId?: string } {
  return viewer.role === 'customer' ? { customerId: viewer.customerId } : {};
}

export function createAccountService(deps: { prisma: PrismaClient; logger: Logger }) {
  const { prisma, logger } = deps;

  function unwrap<T>(parsed: Parsed<T>): T {
    if (!parsed.ok) throw new DomainError(parsed.error);
    return parsed.value;
  }

  async function createCustomer(input: unknown, operator: Operator): Promise<Customer> {
    const { name } = unwrap(parseInput(createCustomerInput, input));
    return prisma.$transaction(async (tx) => {
      const customer = await tx.customer.create({ data: { name } });
      await recordAction(tx, operator, 'createCustomer', customer.id, null);
      return customer;
    });
  }

  async function openAccount(input: unknown, operator: Operator): Promise<Account> {
    const { customerId, name } = unwrap(parseInput(openAccountInput, input));
    const customer = await prisma.customer.findUnique({ where: { id: customerId }, select: { id: true } });
    if (!customer) throw new DomainError(userError('INVALID_INPUT', 'customerId does not exist', ['customerId']));
    // Random numbers rather than a sequence, so account numbers do not reveal how many we hold.
    for (let attempt = 0; ; attempt++) {
      const accountNumber = String(randomInt(10_000_000, 100_000_000));
      const account = await prisma.$transaction(async (tx) => {
        const [created] = await tx.account.createManyAndReturn({
          data: [{ customerId, name, sortCode: BANK_SORT_CODE, accountNumber }],
          skipDuplicates: true,
        });
        if (created) await recordAction(tx, operator, 'openAccount', created.id, `for customer ${customerId}`);
        return created;
      });
      if (account) {
        logger.info({ accountId: account.id, customerId, operator }, 'account opened');
        return account;
      }
      if (attempt >= 10) throw new Error('could not allocate a free account number');
    }
  }

  /**
   * Credits an account once per (accountId, idempotencyKey). A replay with the same amount
   * returns the account unchanged; a replay with another amount is refused.
   */
  async function depositFunds(input: unknown, operator: Operator): Promise<Account> {
    const cmd = unwrap(parseInput(depositFundsInput, input));
    const amount = BigInt(cmd.amount);
    // One statement: the credit, its ledger entry, its transfer from the bank's funding account and
    // the operator's action, or none of them (a replay credits nothing, so it records nothing either).
    const credited = await prisma
      .$queryRawUnsafe<{ id: string }[]>(
        `WITH existing AS (
         SELECT 1 FROM ledger_entries WHERE account_id = $1::uuid AND idempotency_key = $3
       ), credit AS (
         UPDATE accounts SET balance = balance + $2, updated_at = now()
         WHERE id = $1::uuid AND NOT EXISTS (SELECT 1 FROM existing)
         RETURNING id, balance),
       action AS (
         INSERT INTO operator_actions (operator, action, target_id, detail)
         SELECT $4, 'depositFunds', id, $5 FROM credit),
       entry AS (
         INSERT INTO ledger_entries (account_id, kind, amount, balance_after, idempotency_key)
         SELECT id, 'DEPOSIT', $2, balance, $3 FROM credit
         RETURNING account_id, amount, created_at),
       legs AS (${transferSql({ source: 'entry', kind: 'DEPOSIT', amount: 's.amount', from: { bank: 'FUNDING' }, to: { customer: 's.account_id' }, at: 's.created_at' })})
       SELECT account_id AS id FROM entry`,
        cmd.accountId,
        amount,
        cmd.idempotencyKey,
        operator,
        `${cmd.amount} pence, idempotency key ${cmd.idempotencyKey}`,
      )
      .catch((error: unknown) => {
        // Two concurrent deposits with one key: the loser's ledger insert hits the unique index.
        if (isUniqueViolation(error)) return [];
        throw error;
      });
    if (credited.length === 0) {
      const previous = await prisma.ledgerEntry.findUnique({
        where: { accountId_idempotencyKey: { accountId: cmd.accountId, idempotencyKey: cmd.idempotencyKey } },
      });
      if (!previous) throw new DomainError(userError('ACCOUNT_NOT_FOUND', 'No such account', ['accountId']));
      if (previous.amount !== amount) {
        throw new DomainError(
          userError('IDEMPOTENCY_KEY_REUSED', 'This idempotency key was already used for a different deposit', ['idempotencyKey']),
        );
      }
    } else {
      logger.info({ accountId: cmd.accountId, amount: cmd.amount, operator }, 'funds deposited');
    }
    return prisma.account.findUniqueOrThrow({ where: { id: cmd.accountId } });
  }

  const findCustomer = (id: string): Promise<Customer | null> => prisma.customer.findUnique({ where: { id } });

  /** The account when the viewer may see it; null when it is not theirs, does not exist, or the id is malformed (all alike). */
  async function visibleAccount(viewer: Viewer, id: string): Promise<Account | null> {
    if (!isUuid(id)) return null;
    return prisma.account.findFirst({ where: { id, ...ownedAccountWhere(viewer) } });
  }

  /** A customer's accounts, oldest first. */
  const accountsOf = (customerId: string): Promise<Account[]> =>
    prisma.account.findMany({ where: { customerId }, orderBy: [{ createdAt: 'asc' }, { id: 'asc' }] });

  /** An account's ledger entries, newest first, keyed by entry id. */
  const ledgerPage = (accountId: string, page: KeysetPage<[string]>): Promise<LedgerEntry[]> =>
    prisma.ledgerEntry.findMany({
      where: { accountId, ...(page.after ? { id: { lt: BigInt(page.after[0]) } } : {}) },
      orderBy: { id: 'desc' },
      take: page.limit + 1,
    });

  const operatorActions = (page: KeysetPage<[string]>): Promise<OperatorAction[]> => listOperatorActions(prisma, page);

  return { createCustomer, openAccount, depositFunds, findCustomer, visibleAccount, accountsOf, ledgerPage, operatorActions };
}

export type AccountService = ReturnType<typeof createAccountService>;

function isUniqueViolation(error: unknown): boolean {
  const text = error instanceof Error ? `${error.message} ${String((error as { code?: unknown }).code)}` : '';
  return text.includes('23505') || text.includes('P2002') || /unique constraint/i.test(text);
}

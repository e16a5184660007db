import type { Clock } from '../calendar.ts';
import type { Payee, PayeeCheck, PrismaClient, Tx } from '../db/prisma.ts';
import { DomainError, type UserError, userError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { PayeeChecker } from '../provider/client.ts';
import { isUuid, parseInput, type RecipientCommand, recipientInput, type SendPaymentCommand } from '../validation.ts';

/**
 * Confirmation of Payee and saved payees.
 *
 * Glossary: a *payee check* asks the recipient's bank (through the provider) whether the name a
 * customer typed is the name on that sort code and account number: MATCH, CLOSE_MATCH (with the
 * name the bank holds), NO_MATCH, or UNAVAILABLE when it could not be asked. A check is stored,
 * belongs to the customer who made it, covers exactly those details and can be given to a payment
 * (`payeeCheckId`) for CHECK_VALID_SECONDS. A *payee* is a recipient a customer saved, one per sort
 * code and account number, with the check made when it was saved (`lastCheck`).
 *
 * The rule at payment time (`confirmRecipient`), for a payment and for a standing order alike: one
 * to a recipient that is not a saved payee is refused with PAYEE_NOT_CONFIRMED when its check is
 * NO_MATCH, or when it has no check and its amount is above PAYEE_CHECK_THRESHOLD. CLOSE_MATCH and
 * UNAVAILABLE are not NO_MATCH: the customer was shown the answer and chose to go on (ADR 0009). A
 * `payeeCheckId` that cannot be used (not the caller's, for other details, or too old) is refused at
 * any amount: the client relied on it.
 *
 * A payee is *let through* (`letThroughAt`) when an operator approves a payment to it, or when a
 * payment to it is taken, or runs on its day, without being held (`recordLetThrough`, in that
 * payment's transaction). It is recorded when it happens and never inferred from payments, whose
 * statuses change later; until then, a payee saved less than NEW_PAYEE_HOURS ago is new (holds.ts).
 */

/**
 * Most payees one customer may save (MAX_PAYEES_PER_CUSTOMER may lower it), and so the most
 * `Customer.payees` lists in one answer: every saved payee fits.
 */
export const MAX_PAYEES = 500;

/** How long a check may be given to a payment: "a check made in the last 24 hours". */
export const CHECK_VALID_SECONDS = 24 * 3600;

export interface SavedPayee {
  id: string;
  createdAt: Date;
  /** Null until a payment to it was let through (see the top of this file). */
  letThroughAt: Date | null;
}

/** What the PAYEE_NOT_CONFIRMED rule reads of a payment or a standing order. */
export type RecipientPayment = Pick<SendPaymentCommand, 'recipient' | 'amount' | 'payeeCheckId'>;

type Db = Tx | PrismaClient;

/** A saved payee with the check made when it was saved, as listPayees and addPayee return it. */
export type PayeeWithCheck = Payee & { lastCheck: PayeeCheck | null };

export type Confirmation = { ok: true; payee: SavedPayee | null } | { ok: false; error: UserError };

const notConfirmed = (message: string, field: string[]) => ({
  ok: false as const,
  error: userError('PAYEE_NOT_CONFIRMED', message, field),
});

/** The customer's saved payee with these details, or null. */
export function findSavedPayee(
  db: Db,
  customerId: string,
  recipient: { sortCode: string; accountNumber: string },
): Promise<SavedPayee | null> {
  const { sortCode, accountNumber } = recipient;
  return db.payee.findUnique({
    where: { customerId_sortCode_accountNumber: { customerId, sortCode, accountNumber } },
    select: { id: true, createdAt: true, letThroughAt: true },
  });
}

/**
 * The rule at payment time (see the top of this file), for `sendPayment` and `createStandingOrder`;
 * with the saved payee, if the recipient is one. Reads only.
 */
export async function confirmRecipient(
  deps: { prisma: PrismaClient; clock: Clock },
  customerId: string,
  cmd: RecipientPayment,
  checkThreshold: number,
): Promise<Confirmation> {
  const { prisma, clock } = deps;
  const { sortCode, accountNumber, name } = cmd.recipient;
  const [payee, check] = await Promise.all([
    findSavedPayee(prisma, customerId, cmd.recipient),
    cmd.payeeCheckId ? prisma.payeeCheck.findFirst({ where: { id: cmd.payeeCheckId, customerId } }) : null,
  ]);
  if (cmd.payeeCheckId) {
    const usable =
      check !== null &&
      check.name === name &&
      check.sortCode === sortCode &&
      check.accountNumber === accountNumber &&
      clock.now().getTime() - check.checkedAt.getTime() <= CHECK_VALID_SECONDS * 1000;
    if (!usable) return notConfirmed('No payee check of this recipient by you in the last 24 hours has this id', ['payeeCheckId']);
    if (!payee && check.result === 'NO_MATCH') {
      return notConfirmed("The recipient's bank says this name is not the account holder's", ['recipient', 'name']);
    }
  } else if (!payee && cmd.amount > checkThreshold) {
    return notConfirmed(`A payment over ${checkThreshold} pence to a recipient who is not a saved payee needs a payee check`, [
      'payeeCheckId',
    ]);
  }
  return { ok: true, payee };
}

/**
 * Records, in the transaction that lets `paymentId` through (an operator's approval, or a payment
 * taken or run on its day without a hold), that its customer's saved payee with its details has been
 * let through. The first time counts; a payment to a recipient that is not a saved payee records nothing.
 */
export async function recordLetThrough(tx: Tx, paymentId: string, at: Date): Promise<void> {
  await tx.$executeRaw`
    UPDATE payees pe SET let_through_at = ${at}
    FROM payments p JOIN accounts a ON a.id = p.account_id
    WHERE p.id = ${paymentId}::uuid AND pe.customer_id = a.customer_id AND pe.sort_code = p.recipient_sort_code
      AND pe.account_number = p.recipient_account_number AND pe.let_through_at IS NULL`;
}

export function createPayeeService(deps: {
  prisma: PrismaClient;
  checker: PayeeChecker;
  clock: Clock;
  logger: Logger;
  /** Payees one customer may save; MAX_PAYEES by default. */
  maxPayees?: number;
}) {
  const { prisma, checker, clock, logger } = deps;
  const maxPayees = Math.min(deps.maxPayees ?? MAX_PAYEES, MAX_PAYEES);
  const tooMany = () =>
    new DomainError(userError('LIMIT_EXCEEDED', `At most ${maxPayees} saved payees: remove one before adding another`, ['input']));

  /** True when saving these details would add a payee the customer has no room for (renaming one always fits). */
  async function full(db: Db, customerId: string, recipient: RecipientCommand): Promise<boolean> {
    if (await findSavedPayee(db, customerId, recipient)) return false;
    return (await db.payee.count({ where: { customerId } })) >= maxPayees;
  }

  function parseRecipient(input: unknown): RecipientCommand {
    const parsed = parseInput(recipientInput, input);
    if (!parsed.ok) throw new DomainError(parsed.error);
    return parsed.value;
  }

  /** Asks the recipient's bank, and stores the answer for this customer. */
  async function check(customerId: string, recipient: RecipientCommand): Promise<PayeeCheck> {
    const answer = await checker.checkPayee(recipient);
    const stored = await prisma.payeeCheck.create({
      data: { customerId, ...recipient, result: answer.result, matchedName: answer.matchedName, checkedAt: clock.now() },
    });
    logger.info({ customerId, payeeCheckId: stored.id, result: stored.result }, 'payee checked');
    return stored;
  }

  async function checkPayee(customerId: string, input: unknown): Promise<PayeeCheck> {
    return check(customerId, parseRecipient(input));
  }

  /**
   * Saves a recipient, checking it first (whatever the answer: a NO_MATCH payee can be saved, and its
   * first payment is held for review like any new payee's). Saving the same sort code and account
   * number again renames it and keeps its first `createdAt`, so re-saving never restarts the clock.
   */
  async function addPayee(customerId: string, input: unknown): Promise<PayeeWithCheck> {
    const recipient = parseRecipient(input);
    // Before asking the bank (a full list spends no check), and again below under the lock.
    if (await full(prisma, customerId, recipient)) throw tooMany();
    const lastCheck = await check(customerId, recipient);
    const { sortCode, accountNumber, name } = recipient;
    return prisma.$transaction(async (tx) => {
      // One save at a time per customer, so racing saves cannot pass the cap together.
      await tx.$executeRaw`SELECT 1 FROM pg_advisory_xact_lock(hashtextextended(${`payees:${customerId}`}, 0))`;
      if (await full(tx, customerId, recipient)) throw tooMany();
      return tx.payee.upsert({
        where: { customerId_sortCode_accountNumber: { customerId, sortCode, accountNumber } },
        create: { customerId, name, sortCode, accountNumber, lastCheckId: lastCheck.id, createdAt: clock.now() },
        update: { name, lastCheckId: lastCheck.id },
        include: { lastCheck: true },
      });
    });
  }

  /** False when there is no such payee of this customer (another customer's looks the same). */
  async function removePayee(customerId: string, id: string): Promise<boolean> {
    if (!isUuid(id)) return false;
    const { count } = await prisma.payee.deleteMany({ where: { id, customerId } });
    return count === 1;
  }

  /** The customer's payees, oldest first; at most `limit` (every saved payee fits in MAX_PAYEES). */
  function listPayees(customerId: string, limit = MAX_PAYEES): Promise<PayeeWithCheck[]> {
    return prisma.payee.findMany({
      where: { customerId },
      include: { lastCheck: true },
      orderBy: [{ createdAt: 'asc' }, { id: 'asc' }],
      take: Math.min(Math.max(limit, 1), MAX_PAYEES),
    });
  }

  return {
    checkPayee,
    addPayee,
    removePayee,
    listPayees,
    confirmRecipient: (customerId: string, cmd: RecipientPayment, checkThreshold: number) =>
      confirmRecipient({ prisma, clock }, customerId, cmd, checkThreshold),
  };
}

export type PayeeService = ReturnType<typeof createPayeeService>;

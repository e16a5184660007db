import { createHash, randomUUID } from 'node:crypto';
import { ownedAccountWhere } from '../accounts/accounts.ts';
import type { Viewer } from '../auth.ts';
import { addCalendarDays, type Clock } from '../calendar.ts';
import { afterCreatedAtId, type KeysetPage } from '../db/keyset.ts';
import type { Payment, PrismaClient, RunTransaction } from '../db/prisma.ts';
import { DomainError, type UserError, userError } from '../errors.ts';
import type { Failpoints } from '../failpoints.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../ops/metrics.ts';
import { isUuid, parseInput, type SendPaymentCommand, sendPaymentInput } from '../validation.ts';
import type { HoldReason } from './holds.ts';
import type { PaymentStatus } from './lifecycle.ts';
import { londonDay } from './limits.ts';
import type { PaymentJobs } from './outbox.ts';
import { findPaymentByKey } from './repository.ts';
import { MAX_SCHEDULE_DAYS, TX_OPTIONS } from './scheduled.ts';
import type { ScreenPayment } from './screening.ts';
import { createTake, schedule } from './transitions.ts';

export type SendPaymentResult =
  /** `balanceAfter`: the account's balance right after this request's debit; null when it debited nothing (a replay, a later day). */
  { payment: Payment; replayed: boolean; balanceAfter: bigint | null; errors: [] } | { payment: null; errors: [UserError] };

export interface PaymentServiceDeps {
  prisma: PrismaClient;
  /** The payment's interactive transaction, with its money statement on the transaction's own connection. */
  transaction: RunTransaction;
  /** The settlement and execution jobs, written in the payment's transaction. */
  jobs: PaymentJobs;
  logger: Logger;
  metrics: Pick<Metrics, 'transactionSeconds' | 'held' | 'refusals'>;
  /** Payee safety: confirmation of payee, holds, the limit's day. */
  screen: ScreenPayment;
  /** Decides what "today" is in London for scheduled payments. */
  clock: Clock;
  /** Called after a new payment commits (the API wakes its event feed); nothing by default. */
  afterCommit?: () => void;
  /** Crash or freeze injection (FAILPOINTS) for the tests; none by default. */
  failpoints?: Failpoints;
}

/** Whose payments a page lists: an account's (of one status, when given) or a standing order's. */
export type PaymentFilter = { accountId: string; status?: PaymentStatus | null } | { standingOrderId: string };

/**
 * What makes two requests "the same payment" for idempotency. `executeOn` counts only when given,
 * so the fingerprints of payments made before scheduling existed are unchanged.
 */
export function fingerprintOf(cmd: SendPaymentCommand): string {
  return hashOf([
    cmd.fromAccountId,
    cmd.amount,
    cmd.recipient.name,
    cmd.recipient.sortCode,
    cmd.recipient.accountNumber,
    cmd.reference,
    ...(cmd.executeOn === null ? [] : [cmd.executeOn]),
  ]);
}

/** sha256 of the JSON of `parts`: a fingerprint in which no two fields can run into each other. */
export const hashOf = (parts: unknown[]): string => createHash('sha256').update(JSON.stringify(parts)).digest('hex');

export function createPaymentService(deps: PaymentServiceDeps) {
  const { prisma, jobs, logger } = deps;
  const take = createTake();

  /**
   * Takes a payment: in one transaction with no network I/O, the payment row, the guarded
   * debit with its ledger entry, and the settlement job (outbox). All of it commits or none.
   * With `executeOn` after today (London): a SCHEDULED payment and its execution job for that
   * day instead, and no debit. `executeOn` today is an immediate payment.
   *
   * `log` gives the request's logger, asked for only when a line is written: making a request's
   * child logger costs about 10 µs (its bindings pass the redaction), which a payment accepted at
   * LOG_LEVEL=warn need not pay.
   */
  async function sendPayment(customerId: string, input: unknown, log: () => Logger = () => logger): Promise<SendPaymentResult> {
    const parsed = parseInput(sendPaymentInput, input);
    if (!parsed.ok) return { payment: null, errors: [parsed.error] };
    const cmd = parsed.value;
    const fingerprint = fingerprintOf(cmd);
    const now = deps.clock.now();
    const today = londonDay(now);
    const { executeOn } = cmd;
    if (executeOn !== null && executeOn < today) {
      // A retry of a scheduled payment made before its day is still a replay; anything else is refused.
      const replayed = await replay(customerId, cmd, fingerprint);
      if (replayed.payment) return replayed;
      return { payment: null, errors: [userError('INVALID_INPUT', `executeOn must be today (${today}, London) or later`, ['executeOn'])] };
    }
    if (executeOn !== null && executeOn > addCalendarDays(today, MAX_SCHEDULE_DAYS)) {
      return {
        payment: null,
        errors: [userError('INVALID_INPUT', `executeOn must be at most ${MAX_SCHEDULE_DAYS} days ahead`, ['executeOn'])],
      };
    }

    // Payee safety: a refusal writes nothing, but a replay still gets its payment.
    const screened = await deps.screen(customerId, cmd, { now, today });
    if (!screened.ok) {
      if (await findPaymentByKey(prisma, customerId, cmd.fromAccountId, cmd.idempotencyKey)) return replay(customerId, cmd, fingerprint);
      deps.metrics.refusals.inc({ code: screened.error.code });
      return { payment: null, errors: [screened.error] };
    }

    // Its id is chosen here so that its settlement job, written by the same statement, can name it.
    const paymentId = randomUUID();
    const later = executeOn !== null && executeOn > today;
    // Written only if the statement finds it is not to be held.
    const settlement = later ? null : await jobs.settlementInsert(paymentId);
    const endTransaction = deps.metrics.transactionSeconds.startTimer();
    try {
      const taken = await deps
        .transaction(async (tx, sql): Promise<{ payment: Payment; balanceAfter: bigint | null; holdReason: HoldReason | null } | null> => {
          if (later && executeOn !== null) {
            // Screened now for the payee (a refusal above); the limit and a hold apply on its day.
            const scheduled = await schedule(tx, customerId, { ...cmd, executeOn }, fingerprint);
            if (!scheduled) return null;
            await jobs.execute(tx, { paymentId: scheduled.id, executeOn });
            return { payment: scheduled, balanceAfter: null, holdReason: null };
          }
          const inserted = await take(sql, customerId, cmd, fingerprint, screened, { paymentId, settlement });
          if (!inserted) return null;
          const { payment: created, balanceAfter, dayTotal, holdReason, jobWritten } = inserted;
          deps.failpoints?.hit('send-payment.in-transaction');
          if (balanceAfter === null) {
            throw new DomainError(userError('INSUFFICIENT_FUNDS', 'The account balance is lower than the amount', ['amount']));
          }
          // The day's total, raised in the same statement after the debit.
          if (dayTotal === null) {
            throw new DomainError(
              userError('LIMIT_EXCEEDED', `This payment would pass your daily limit of ${screened.dailyLimit} pence`, ['amount']),
            );
          }
          // A HELD payment gets its job only when an operator approves it (holds.ts).
          if (created.status === 'HELD') return { payment: created, balanceAfter, holdReason };
          // The outbox: a PENDING payment never commits without its settlement job.
          if (!jobWritten) throw new Error(`payment ${created.id} was taken without its settlement job`);
          return { payment: created, balanceAfter, holdReason };
        }, TX_OPTIONS)
        .finally(() => endTransaction());

      if (taken) {
        const { payment, balanceAfter, holdReason } = taken;
        deps.afterCommit?.();
        if (holdReason && payment.status === 'HELD') deps.metrics.held.inc({ reason: holdReason });
        if (logger.isLevelEnabled('info')) {
          log().info(
            { paymentId: payment.id, accountId: payment.accountId, amount: cmd.amount, status: payment.status, executeOn },
            'payment accepted',
          );
        }
        return { payment, replayed: false, balanceAfter, errors: [] };
      }
      return await replay(customerId, cmd, fingerprint);
    } catch (error) {
      if (error instanceof DomainError) {
        if (error.userError.code === 'LIMIT_EXCEEDED') deps.metrics.refusals.inc({ code: 'LIMIT_EXCEEDED' });
        return { payment: null, errors: [error.userError] };
      }
      throw error;
    }
  }

  /** Nothing was inserted: the key is taken on that account, or the account is not the caller's. */
  async function replay(customerId: string, cmd: SendPaymentCommand, fingerprint: string): Promise<SendPaymentResult> {
    const existing = await findPaymentByKey(prisma, customerId, cmd.fromAccountId, cmd.idempotencyKey);
    if (!existing) {
      return { payment: null, errors: [userError('ACCOUNT_NOT_FOUND', 'No such account', ['fromAccountId'])] };
    }
    if (existing.fingerprint !== fingerprint) {
      return {
        payment: null,
        errors: [
          userError('IDEMPOTENCY_KEY_REUSED', 'This idempotency key was already used for a different payment from this account', [
            'idempotencyKey',
          ]),
        ],
      };
    }
    return { payment: existing, replayed: true, balanceAfter: null, errors: [] };
  }

  /** The payment when the viewer may see it; null when it is not theirs, does not exist, or the id is malformed (all alike). */
  async function visiblePayment(viewer: Viewer, id: string): Promise<Payment | null> {
    if (!isUuid(id)) return null;
    return prisma.payment.findFirst({ where: { id, account: ownedAccountWhere(viewer) } });
  }

  /** The payment as it is now; throws when there is none. */
  const currentPayment = (id: string): Promise<Payment> => prisma.payment.findUniqueOrThrow({ where: { id } });

  /** Payments newest first, keyed by (createdAt, id). */
  function paymentPage(filter: PaymentFilter, page: KeysetPage<[string, string]>): Promise<Payment[]> {
    const where =
      'standingOrderId' in filter
        ? { standingOrderId: filter.standingOrderId }
        : { accountId: filter.accountId, ...(filter.status ? { status: filter.status } : {}) };
    return prisma.payment.findMany({
      where: { ...where, ...afterCreatedAtId(page.after) },
      orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
      take: page.limit + 1,
    });
  }

  return { sendPayment, visiblePayment, currentPayment, paymentPage };
}

export type PaymentService = ReturnType<typeof createPaymentService>;

import { addCalendarDays, type CalendarDate, type Clock, type Frequency, londonToday, occurrenceDate } from '../calendar.ts';
import type { PrismaClient, StandingOrder } from '../db/prisma.ts';
import { DomainError, type UserError, userError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../ops/metrics.ts';
import { confirmRecipient } from '../payees/payees.ts';
import { type CreateStandingOrderCommand, createStandingOrderInput, isUuid, parseInput, STANDING_ORDER_KEY_PREFIX } from '../validation.ts';
import type { PaymentJobs } from './outbox.ts';
import { fingerprintOf, hashOf } from './payment-service.ts';
import { MAX_SCHEDULE_DAYS, TX_OPTIONS } from './scheduled.ts';
import type { SafetyPolicy } from './screening.ts';
import { cancelOccurrences, scheduleOccurrence } from './transitions.ts';

/**
 * Standing orders: pay the same recipient every week or month, from `firstPaymentOn` to
 * `lastPaymentOn` (or until cancelled).
 *
 * Payee safety: an order is created only past the PAYEE_NOT_CONFIRMED rule of `sendPayment`
 * (payees.ts `confirmRecipient`, with its `payeeCheckId`), judged on one occurrence's amount; each
 * occurrence, on its day, is held or not by the same hold rule (scheduled.ts, holds.ts).
 *
 * Occurrence n (from 0) falls on `occurrenceDate(first, frequency, n)`: monthly dates count from the
 * first, so a 31st becomes the last day of a shorter month. The scheduler (`runDue`, every minute)
 * turns each due occurrence into a SCHEDULED payment keyed `so:<order id>:<date>` whose execution
 * job is due at once, and advances the order past it, in one transaction per occurrence:
 * - two schedulers never create one occurrence twice: each takes the order's row lock (SKIP LOCKED,
 *   so they share the work), the advance is guarded by the count it read, and the payment's unique
 *   keys (account + idempotency key, order + date) would refuse a second one anyway;
 * - a scheduler that was down for days creates every occurrence it missed, once each, when it is back.
 */

export type CreateStandingOrderResult = { standingOrder: StandingOrder; errors: [] } | { standingOrder: null; errors: [UserError] };

const asDate = (date: CalendarDate) => new Date(`${date}T00:00:00.000Z`);

/** The idempotency key of an occurrence. */
export const occurrenceKey = (orderId: string, date: CalendarDate) => `${STANDING_ORDER_KEY_PREFIX}${orderId}:${date}`;

export function standingOrderFingerprint(cmd: CreateStandingOrderCommand): string {
  return hashOf([fingerprintOf({ ...cmd, executeOn: null }), cmd.frequency, cmd.firstPaymentOn, cmd.lastPaymentOn]);
}

/** The date after occurrence n, or null when the order ends before it. */
function following(first: CalendarDate, frequency: Frequency, last: CalendarDate | null, n: number): CalendarDate | null {
  const date = occurrenceDate(first, frequency, n);
  return last !== null && date > last ? null : date;
}

/** Most occurrences one run creates; the next run carries on. */
const MAX_PER_RUN = 1_000;

/**
 * Most active standing orders one account may have (MAX_ACTIVE_STANDING_ORDERS_PER_ACCOUNT may
 * lower it), and so the most `Account.standingOrders` lists in one answer: every active one fits.
 */
export const MAX_ACTIVE_STANDING_ORDERS = 100;

export function createStandingOrders(deps: {
  prisma: PrismaClient;
  jobs: Pick<PaymentJobs, 'execute' | 'runStandingOrders'>;
  clock: Clock;
  /** The PAYEE_NOT_CONFIRMED rule's threshold, as for sendPayment. */
  policy: Pick<SafetyPolicy, 'checkThreshold'>;
  logger: Logger;
  metrics: Pick<Metrics, 'standingOrderOccurrences'>;
  /** Called after a cancellation commits (the API wakes its event feed); nothing by default. */
  afterCommit?: () => void;
  /** Active orders one account may have; MAX_ACTIVE_STANDING_ORDERS by default. */
  maxActivePerAccount?: number;
}) {
  const { prisma, jobs, clock, logger } = deps;
  const maxActive = Math.min(deps.maxActivePerAccount ?? MAX_ACTIVE_STANDING_ORDERS, MAX_ACTIVE_STANDING_ORDERS);

  async function create(customerId: string, input: unknown, log: Logger = logger): Promise<CreateStandingOrderResult> {
    const parsed = parseInput(createStandingOrderInput, input);
    if (!parsed.ok) return { standingOrder: null, errors: [parsed.error] };
    const cmd = parsed.value;
    const fingerprint = standingOrderFingerprint(cmd);
    const today = londonToday(clock);
    if (cmd.firstPaymentOn < today) {
      const replayed = await replay(customerId, cmd, fingerprint);
      if (replayed.standingOrder) return replayed;
      return {
        standingOrder: null,
        errors: [userError('INVALID_INPUT', `firstPaymentOn must be today (${today}, London) or later`, ['firstPaymentOn'])],
      };
    }
    if (cmd.firstPaymentOn > addCalendarDays(today, MAX_SCHEDULE_DAYS)) {
      return {
        standingOrder: null,
        errors: [userError('INVALID_INPUT', `firstPaymentOn must be at most ${MAX_SCHEDULE_DAYS} days ahead`, ['firstPaymentOn'])],
      };
    }
    const account = await prisma.account.findFirst({ where: { id: cmd.fromAccountId, customerId }, select: { id: true } });
    if (!account) return { standingOrder: null, errors: [userError('ACCOUNT_NOT_FOUND', 'No such account', ['fromAccountId'])] };
    // The rule of sendPayment: a refusal writes nothing, but a replay still gets its order.
    const confirmed = await confirmRecipient({ prisma, clock }, customerId, cmd, deps.policy.checkThreshold);
    if (!confirmed.ok) {
      const replayed = await replay(customerId, cmd, fingerprint);
      if (replayed.standingOrder) return replayed;
      log.info({ accountId: account.id, code: confirmed.error.code }, 'standing order refused');
      return { standingOrder: null, errors: [confirmed.error] };
    }

    const created = await prisma.$transaction(async (tx) => {
      // Orders of one account are created one at a time (a lock on the account's orders only, not
      // its balance row), so racing creations cannot pass the cap together.
      await tx.$executeRaw`SELECT 1 FROM pg_advisory_xact_lock(hashtextextended(${`standing-orders:${account.id}`}, 0))`;
      const active = await tx.standingOrder.count({ where: { accountId: account.id, active: true } });
      if (active >= maxActive) return 'full' as const;
      const [order] = await tx.standingOrder.createManyAndReturn({
        data: [
          {
            accountId: account.id,
            idempotencyKey: cmd.idempotencyKey,
            fingerprint,
            amount: BigInt(cmd.amount),
            recipientName: cmd.recipient.name,
            recipientSortCode: cmd.recipient.sortCode,
            recipientAccountNumber: cmd.recipient.accountNumber,
            reference: cmd.reference,
            frequency: cmd.frequency,
            firstPaymentOn: asDate(cmd.firstPaymentOn),
            lastPaymentOn: cmd.lastPaymentOn === null ? null : asDate(cmd.lastPaymentOn),
            nextPaymentOn: asDate(cmd.firstPaymentOn),
          },
        ],
        skipDuplicates: true,
      });
      // Due today: the scheduler runs now rather than at the next minute.
      if (order && cmd.firstPaymentOn === today) await jobs.runStandingOrders(tx);
      return order ?? null;
    }, TX_OPTIONS);
    if (created === 'full') {
      // A retry of an order created before the account filled up still gets it.
      const replayed = await replay(customerId, cmd, fingerprint);
      if (replayed.standingOrder) return replayed;
      log.info({ accountId: account.id, maxActive }, 'standing order refused: the account has the most active orders allowed');
      return {
        standingOrder: null,
        errors: [
          userError('LIMIT_EXCEEDED', `An account may have at most ${maxActive} active standing orders: cancel one first`, [
            'fromAccountId',
          ]),
        ],
      };
    }
    if (created) {
      log.info(
        { standingOrderId: created.id, accountId: account.id, frequency: cmd.frequency, firstPaymentOn: cmd.firstPaymentOn },
        'standing order created',
      );
      return { standingOrder: created, errors: [] };
    }
    return replay(customerId, cmd, fingerprint);
  }

  async function replay(customerId: string, cmd: CreateStandingOrderCommand, fingerprint: string): Promise<CreateStandingOrderResult> {
    const existing = await prisma.standingOrder.findFirst({
      where: { accountId: cmd.fromAccountId, idempotencyKey: cmd.idempotencyKey, account: { customerId } },
    });
    if (!existing) return { standingOrder: null, errors: [userError('ACCOUNT_NOT_FOUND', 'No such account', ['fromAccountId'])] };
    if (existing.fingerprint !== fingerprint) {
      return {
        standingOrder: null,
        errors: [
          userError('IDEMPOTENCY_KEY_REUSED', 'This idempotency key was already used for a different standing order from this account', [
            'idempotencyKey',
          ]),
        ],
      };
    }
    return { standingOrder: existing, errors: [] };
  }

  /**
   * Stops the customer's order: no occurrence is created after this, and occurrences created but
   * not yet run (SCHEDULED) are cancelled, whether or not the order was still active: an order whose
   * last occurrence has been created is no longer active, but that occurrence has not run yet.
   * Cancelling an order with nothing left to stop returns it unchanged. Another customer's order is
   * answered exactly like one that does not exist.
   */
  async function cancel(customerId: string, orderId: string, log: Logger = logger): Promise<StandingOrder> {
    const notFound = () => new DomainError(userError('INVALID_INPUT', 'No such standing order', ['id']));
    if (!isUuid(orderId)) throw notFound();
    const changed = await prisma.$transaction(async (tx) => {
      // Waits for a scheduler holding the order (its occurrence commits first), then reads `active`.
      const [order] = await tx.$queryRaw<{ active: boolean }[]>`
        SELECT active FROM standing_orders
        WHERE id = ${orderId}::uuid AND account_id IN (SELECT id FROM accounts WHERE customer_id = ${customerId}::uuid)
        FOR UPDATE`;
      if (!order) return false;
      // A statement of its own, so it sees an occurrence a scheduler committed just before.
      const occurrences = await cancelOccurrences(tx, orderId);
      if (!order.active && occurrences === 0) return false;
      // Still active, or ended with an occurrence not yet run: the customer stopped something.
      await tx.$executeRaw`
        UPDATE standing_orders SET active = false, next_payment_on = NULL, cancelled_at = coalesce(cancelled_at, now()), updated_at = now()
        WHERE id = ${orderId}::uuid`;
      log.info({ standingOrderId: orderId, wasActive: order.active, occurrencesCancelled: occurrences }, 'standing order cancelled');
      return true;
    }, TX_OPTIONS);
    if (changed) deps.afterCommit?.();
    const order = await prisma.standingOrder.findFirst({ where: { id: orderId, account: { customerId } } });
    if (!order) throw notFound();
    return order;
  }

  /** Creates one due occurrence (the earliest), or returns null when none is due. */
  async function createNextDue(today: CalendarDate): Promise<{ orderId: string; date: CalendarDate; paymentId: string | null } | null> {
    return prisma.$transaction(async (tx) => {
      const [order] = await tx.$queryRaw<
        Array<{
          id: string;
          account_id: string;
          n: number;
          next: string;
          first: string;
          last: string | null;
          frequency: Frequency;
          fingerprint: string;
        }>
      >`
        SELECT id::text, account_id::text, occurrences_created AS n, to_char(next_payment_on, 'YYYY-MM-DD') AS next,
          to_char(first_payment_on, 'YYYY-MM-DD') AS first, to_char(last_payment_on, 'YYYY-MM-DD') AS last,
          frequency::text AS frequency, fingerprint
        FROM standing_orders
        WHERE active AND next_payment_on <= ${today}::date
        ORDER BY next_payment_on, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED`;
      if (!order) return null;
      const date = order.next;
      // The occurrence's fingerprint: the order's and the date, so a clash with anything else shows.
      const fingerprint = hashOf([order.fingerprint, date]);
      const payment = await scheduleOccurrence(tx, { orderId: order.id, key: occurrenceKey(order.id, date), fingerprint, date });
      if (payment) await jobs.execute(tx, { paymentId: payment.id, executeOn: date });
      const next = following(order.first, order.frequency, order.last, order.n + 1);
      await tx.$executeRaw`
        UPDATE standing_orders SET occurrences_created = ${order.n + 1}, next_payment_on = ${next}::date,
          active = ${next !== null}, updated_at = now()
        WHERE id = ${order.id}::uuid AND occurrences_created = ${order.n}`;
      return { orderId: order.id, date, paymentId: payment?.id ?? null };
    }, TX_OPTIONS);
  }

  /** The scheduler: creates every due occurrence of every order, each once. Returns how many it created. */
  async function runDue(): Promise<number> {
    const today = londonToday(clock);
    let created = 0;
    for (let i = 0; i < MAX_PER_RUN; i++) {
      const occurrence = await createNextDue(today);
      if (!occurrence) break;
      if (occurrence.paymentId) {
        created++;
        deps.metrics.standingOrderOccurrences.inc();
        logger.info(
          { standingOrderId: occurrence.orderId, paymentId: occurrence.paymentId, date: occurrence.date },
          'standing order occurrence created',
        );
      } else {
        logger.warn(
          { standingOrderId: occurrence.orderId, date: occurrence.date },
          'standing order occurrence existed already; order advanced past it',
        );
      }
    }
    return created;
  }

  /** An account's standing orders, oldest first. */
  /** The account's orders, active ones first, then oldest first; at most `limit` (every active one fits in MAX_ACTIVE_STANDING_ORDERS). */
  const listForAccount = (accountId: string, limit = MAX_ACTIVE_STANDING_ORDERS): Promise<StandingOrder[]> =>
    prisma.standingOrder.findMany({
      where: { accountId },
      orderBy: [{ active: 'desc' }, { createdAt: 'asc' }, { id: 'asc' }],
      take: Math.min(Math.max(limit, 1), MAX_ACTIVE_STANDING_ORDERS),
    });

  const findById = (id: string): Promise<StandingOrder | null> => prisma.standingOrder.findUnique({ where: { id } });

  return { create, cancel, runDue, listForAccount, findById };
}

export type StandingOrders = ReturnType<typeof createStandingOrders>;

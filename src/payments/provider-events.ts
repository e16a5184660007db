import type { PrismaClient, Tx } from '../db/prisma.ts';
import { type Failpoints, noFailpoints } from '../failpoints.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { ProviderClient, ProviderEvent } from '../provider/client.ts';
import { isUuid } from '../validation.ts';
import type { PaymentJobs } from './outbox.ts';
import { markCreditReturned, recordAttempt, recordInboundCredit } from './repository.ts';
import { TX_OPTIONS } from './scheduled.ts';
import { complete, returnPayment } from './transitions.ts';

/**
 * What the provider tells us after the fact, from its event feed (`GET /v1/events`):
 *
 * - `payment.returned`: the recipient's bank sent a COMPLETED payment back. COMPLETED -> RETURNED
 *   with its return code and a PAYMENT_RETURN ledger entry, once (guarded on COMPLETED; the unique
 *   index on ledger_entries (payment_id, kind) stands behind it). A return for a payment still
 *   PENDING here (the worker has not recorded the acceptance yet) completes it first: the provider
 *   can only return what it accepted.
 * - `credit.received`: money in. To one of our accounts (sort code + account number, GBP): an
 *   INBOUND_CREDIT ledger entry with the sender and reference. Otherwise: recorded as RETURNING and a
 *   job sends it back (`POST /v1/credits/:id/return`) until the provider confirms -> RETURNED. The
 *   credit's id is the primary key of `provider_credits`: never credited twice, never lost.
 *
 * - anything else (a type we do not handle, or an event not in its type's shape, such as a credit
 *   with a bad amount): quarantined (`provider_event_quarantine`) for operators, once, and the feed
 *   moves on past it.
 *
 * One poll at a time (pg-boss `stately` queue), but correctness does not rest on that: every effect
 * is idempotent (an event applied twice changes nothing the second time), each event is applied in
 * a transaction of its own, and the cursor moves past a page only from the cursor the page was
 * fetched from. A poller that dies mid-page leaves the cursor where it was; the next one applies the
 * page again, changing nothing that was already done.
 */

export const EVENTS_PAGE_SIZE = 100;

export function createProviderEvents(deps: {
  prisma: PrismaClient;
  jobs: Pick<PaymentJobs, 'returnCredit'>;
  provider: ProviderClient;
  logger: Logger;
  metrics: Pick<Metrics, 'providerEvents' | 'providerEventsQuarantined' | 'creditReturns' | 'settled'>;
  failpoints?: Failpoints;
  pageSize?: number;
}) {
  const { prisma, jobs, provider, logger, metrics } = deps;
  const failpoints = deps.failpoints ?? noFailpoints;

  async function applyReturn(tx: Tx, event: Extract<ProviderEvent, { type: 'payment.returned' }>): Promise<string> {
    const paymentId = event.idempotencyKey;
    const payment = isUuid(paymentId) ? await tx.payment.findUnique({ where: { id: paymentId }, select: { status: true } }) : null;
    if (!payment) {
      logger.error({ eventId: event.id, idempotencyKey: paymentId }, 'the provider returned a payment we do not know');
      return 'unknown-payment';
    }
    if (payment.status === 'PENDING') {
      await complete(tx, paymentId, 'the provider reported a return, so it had accepted the payment');
    }
    const returned = await returnPayment(tx, paymentId, event.returnCode);
    if (returned) {
      await recordAttempt(tx, paymentId, 'RETURNED', `returned by the recipient's bank: ${event.returnCode}`);
      logger.info({ paymentId, returnCode: event.returnCode }, 'payment returned; money back');
      return 'returned';
    }
    // Read again: the status read above may be stale when another poller (another worker) applied
    // the same event meanwhile, and a payment it returned is no error.
    const now = await tx.payment.findUnique({ where: { id: paymentId }, select: { status: true } });
    if (now?.status !== 'RETURNED') {
      logger.error({ eventId: event.id, paymentId, status: now?.status }, 'the provider returned a payment that is not COMPLETED here');
      return 'not-completed';
    }
    return 'already-returned';
  }

  async function applyCredit(tx: Tx, event: Extract<ProviderEvent, { type: 'credit.received' }>): Promise<string> {
    const recorded = await recordInboundCredit(tx, event);
    if (!recorded) return 'already-recorded';
    if (recorded.outcome === 'RETURNING') {
      await jobs.returnCredit(tx, event.id);
      logger.info({ creditId: event.id, amount: event.amount }, 'inbound credit for no account of ours: returning it');
      return 'returning';
    }
    logger.info({ creditId: event.id, accountId: recorded.accountId, amount: event.amount }, 'inbound credit credited');
    return 'credited';
  }

  /**
   * Keeps an event the parser refused, whole, for operators (quarantinedProviderEvents): never
   * applied, never dropped without a trace, and never holding up the events behind it. Once per
   * event, however often its page is read.
   */
  async function quarantine(tx: Tx, event: Extract<ProviderEvent, { type: 'unknown' }>): Promise<string> {
    const added = await tx.$executeRaw`
      INSERT INTO provider_event_quarantine (event_key, raw_type, problem, raw)
      VALUES (${event.id}, ${event.rawType}, ${event.problem}, ${JSON.stringify(event.raw)}::jsonb)
      ON CONFLICT (event_key) DO NOTHING`;
    if (added === 0) return 'already-quarantined';
    metrics.providerEventsQuarantined.inc({ type: event.rawType ?? 'none' });
    logger.error(
      { eventId: event.id, type: event.rawType, problem: event.problem },
      'provider event quarantined: not one we can apply; an operator must look (quarantinedProviderEvents)',
    );
    return 'quarantined';
  }

  async function apply(tx: Tx, event: ProviderEvent): Promise<string> {
    switch (event.type) {
      case 'payment.returned':
        return applyReturn(tx, event);
      case 'credit.received':
        return applyCredit(tx, event);
      default:
        return quarantine(tx, event);
    }
  }

  /**
   * Applies one page, each event in a transaction of its own, then moves the cursor to `next` if it
   * is still `from`; false when another poller moved it first (what this one applied meanwhile was
   * a no-op, every effect being idempotent). One event per transaction, never a page: a transaction
   * holds a transaction id from its first write, and the event stream orders a payment's events by
   * it, so a page that had written anything before it returned a payment would sort that return
   * before the worker's completion committed just earlier (RETURNED, then COMPLETED). It also locks
   * one account at a time, so it cannot deadlock with payments from the accounts it credits.
   */
  async function applyPage(from: string | null, events: ProviderEvent[], next: string | null): Promise<boolean> {
    const [row] = await prisma.$queryRaw<{ cursor: string | null }[]>`SELECT cursor FROM provider_event_cursor WHERE id`;
    if (!row || row.cursor !== from) return false;
    for (const event of events) {
      const outcome = await prisma.$transaction((tx) => apply(tx, event), TX_OPTIONS);
      metrics.providerEvents.inc({ type: event.type, outcome });
      if (outcome === 'returned') metrics.settled.inc({ status: 'RETURNED' });
    }
    failpoints.hit('provider-events.before-cursor');
    const moved = await prisma.$executeRaw`
      UPDATE provider_event_cursor SET cursor = ${next}, events_applied = events_applied + ${events.length}, updated_at = now()
      WHERE id AND cursor IS NOT DISTINCT FROM ${from}`;
    return moved === 1;
  }

  /**
   * Reads the feed from the stored cursor and applies it page by page until it is drained (or
   * `maxPages` were read: the next poll carries on). Returns the events applied. Throws when the
   * provider cannot be read; the next poll tries again from the same cursor.
   */
  async function poll(maxPages = 50): Promise<number> {
    let applied = 0;
    for (let page = 0; page < maxPages; page++) {
      const cursor = (await prisma.providerEventCursor.findUniqueOrThrow({ where: { id: true } })).cursor;
      const result = await provider.listEvents(cursor, deps.pageSize ?? EVENTS_PAGE_SIZE);
      if (result.kind !== 'events') throw new Error(`reading the provider's events: ${result.detail}`);
      if (result.events.length === 0) break;
      if (!(await applyPage(cursor, result.events, result.next))) break;
      applied += result.events.length;
    }
    return applied;
  }

  /** Sends a credit we could not credit back to the provider; throws (the job retries) until it confirms. */
  async function returnCredit(creditId: string): Promise<void> {
    const credit = await prisma.providerCredit.findUnique({ where: { id: creditId } });
    if (credit?.outcome !== 'RETURNING') return;
    const result = await provider.returnCredit(creditId, credit.returnReason ?? 'UNKNOWN_ACCOUNT');
    if (result.kind === 'returned') {
      if (await markCreditReturned(prisma, creditId)) metrics.creditReturns.inc();
      logger.info({ creditId, amount: Number(credit.amount) }, 'inbound credit returned to the provider');
      return;
    }
    if (result.kind === 'unknown-credit') {
      // The provider does not know its own credit: nothing to return to; operators must look.
      logger.error({ creditId }, 'the provider does not know a credit it sent us; left RETURNING for operators');
      return;
    }
    throw new Error(`returning credit ${creditId}: ${result.detail}`);
  }

  return { poll, returnCredit, applyPage };
}

export type ProviderEventsService = ReturnType<typeof createProviderEvents>;

import type { Payment, PrismaClient } from '../db/prisma.ts';
import { type UserError, userError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { ProviderClient } from '../provider/client.ts';
import { isUuid } from '../validation.ts';
import type { HoldService } from './holds.ts';
import { canTransition } from './lifecycle.ts';
import { recordAttempt } from './repository.ts';
import { cancelScheduled, cancelVoided, complete, requestCancellation, withdrawCancellation } from './transitions.ts';

/**
 * cancelPayment: the customer stops a payment that has not gone yet.
 *
 * - SCHEDULED -> CANCELLED: nothing was debited, nothing moves (guarded on SCHEDULED, so it cannot
 *   race the day's execution: one of the two finds the payment as it expects, the other does not).
 * - PENDING: record the request (guarded on PENDING), then void at the provider. Voided -> CANCELLED
 *   with the money back (one transaction);
 *   the provider had already accepted it (409) -> COMPLETED and PAYMENT_NOT_CANCELLABLE. The worker
 *   racing this cannot also win: after the void the provider answers its POST with 410 (the worker
 *   then refunds, guarded on PENDING, so the money comes back once), and once the provider accepted,
 *   the void answers 409. The provider could not be reached: PAYMENT_NOT_CANCELLABLE, and the
 *   request is taken back when the void certainly never reached the provider.
 * - Already CANCELLED: answered as cancelled (a retried request). Any status the lifecycle cannot
 *   move to CANCELLED: PAYMENT_NOT_CANCELLABLE, with the payment as it is.
 */

export type CancelPaymentResult = { payment: Payment | null; errors: UserError[] };

export function createCancellation(deps: {
  prisma: PrismaClient;
  /** Null when this process has no provider URL: a PENDING payment then cannot be voided. */
  provider: ProviderClient | null;
  /** A HELD payment is cancelled by the hold service: money back, nothing at the provider. */
  holds: Pick<HoldService, 'cancelHeldPayment'>;
  logger: Logger;
  metrics: Pick<Metrics, 'cancellations'>;
  /** Called after a cancellation changed the payment (the API wakes its event feed); nothing by default. */
  afterCommit?: () => void;
}) {
  const { prisma, provider, logger } = deps;

  const notFound = (): CancelPaymentResult => ({ payment: null, errors: [userError('INVALID_INPUT', 'No such payment', ['paymentId'])] });
  const done = (payment: Payment): CancelPaymentResult => {
    deps.afterCommit?.();
    deps.metrics.cancellations.inc({ outcome: 'CANCELLED' });
    return { payment, errors: [] };
  };
  const refused = (payment: Payment, why: string, message: string): CancelPaymentResult => {
    deps.metrics.cancellations.inc({ outcome: why });
    return { payment, errors: [userError('PAYMENT_NOT_CANCELLABLE', message, ['paymentId'])] };
  };

  async function cancelPending(payment: Payment, log: Logger): Promise<CancelPaymentResult | null> {
    if (!provider) {
      log.error({ paymentId: payment.id }, 'cancelPayment needs PROVIDER_URL on the API to void a PENDING payment');
      return refused(payment, 'provider-unreachable', 'The payment could not be stopped now; it may still be sent. Try again shortly.');
    }
    // Recorded first, so whoever refunds after the void (the worker may meet it first) refunds it
    // as this cancellation. Not PENDING any more: look again.
    const request = await requestCancellation(prisma, payment.id);
    if (!request) return null;
    const voided = await provider.voidPayment(payment.id);
    if (voided.kind === 'voided') {
      const refunded = await prisma.$transaction(async (tx) => {
        const updated = await cancelVoided(tx, payment.id);
        if (updated) await recordAttempt(tx, payment.id, 'CANCELLED_BY_CUSTOMER', "voided at the provider at the customer's request");
        return updated;
      });
      log.info({ paymentId: payment.id, applied: refunded !== null }, 'payment cancelled by the customer: voided at the provider');
      // Not applied: the worker met the void first and refunded it (as this cancellation).
      return done(refunded ?? (await prisma.payment.findUniqueOrThrow({ where: { id: payment.id } })));
    }
    if (voided.kind === 'accepted') {
      await complete(prisma, payment.id, 'the provider had accepted the payment when the customer asked to cancel it');
      deps.afterCommit?.();
      const now = await prisma.payment.findUniqueOrThrow({ where: { id: payment.id } });
      log.info({ paymentId: payment.id }, 'cancellation refused: the provider had already accepted the payment');
      return refused(now, 'already-accepted', 'The payment provider has already accepted this payment; it can no longer be cancelled');
    }
    // Refused: the request is taken back only when no void can have reached the provider. This
    // one certainly did not (not sent, the connection never made, or a 429), and no other request
    // may have: none came before it (`first`; one whose answer was lost may have voided it) and none
    // since (the withdrawal is guarded on this request's own mark). Otherwise it stays: a void that
    // did land is met by the worker (410), which must refund the payment as the customer's
    // cancellation. (A refund by the worker during the void call itself still counts as the
    // customer's: the mark has to come before the void, since the void may land.)
    const certainlyNotVoided = voided.kind === 'unavailable' || (voided.kind === 'transient' && voided.notActedOn === true);
    const withdrawn = request.first && certainlyNotVoided && (await withdrawCancellation(prisma, payment.id, request.requestedAt));
    log.warn({ paymentId: payment.id, result: voided, withdrawn }, 'cancellation not possible now: the provider could not be reached');
    return refused(payment, 'provider-unreachable', 'The payment could not be stopped now; it may still be sent. Try again shortly.');
  }

  /** Cancels the customer's own payment; another customer's looks exactly like one that does not exist. */
  async function cancelPayment(customerId: string, paymentId: string, log: Logger = logger): Promise<CancelPaymentResult> {
    if (!isUuid(paymentId)) return notFound();
    // Twice at most: a SCHEDULED payment whose day came meanwhile (or a HELD one approved) is looked at again.
    for (let look = 0; look < 2; look++) {
      const payment = await prisma.payment.findFirst({ where: { id: paymentId, account: { customerId } } });
      if (!payment) return notFound();
      if (payment.status === 'CANCELLED') return { payment, errors: [] };
      // What may be cancelled is what the lifecycle lets move to CANCELLED.
      if (!canTransition(payment.status, 'CANCELLED'))
        return refused(payment, payment.status, `A ${payment.status} payment cannot be cancelled`);
      switch (payment.status) {
        case 'SCHEDULED': {
          const cancelled = await cancelScheduled(prisma, paymentId);
          if (cancelled) {
            log.info({ paymentId }, 'scheduled payment cancelled by the customer');
            return done(cancelled);
          }
          continue;
        }
        case 'PENDING': {
          const result = await cancelPending(payment, log);
          if (result) return result;
          continue;
        }
        case 'HELD': {
          const held = await deps.holds.cancelHeldPayment(customerId, paymentId);
          if (held.kind === 'cancelled') return done(held.payment);
          continue; // approved, rejected or expired meanwhile: look again
        }
      }
    }
    const now = await prisma.payment.findUniqueOrThrow({ where: { id: paymentId } });
    return refused(now, now.status, `A ${now.status} payment cannot be cancelled`);
  }

  return { cancelPayment };
}

export type Cancellation = ReturnType<typeof createCancellation>;

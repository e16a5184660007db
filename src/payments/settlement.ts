import type { Payment, PrismaClient } from '../db/prisma.ts';
import { type Failpoints, noFailpoints } from '../failpoints.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { ProviderClient, ProviderPaymentRequest, ProviderResult } from '../provider/client.ts';
import { FAILURE_REASONS, type FailureReason } from './failure-reasons.ts';
import { recordAttempt } from './repository.ts';
import * as transitions from './transitions.ts';

/**
 * Settlement: what the worker does with a PENDING payment, as the lifecycle says.
 *
 * `settle` runs on every attempt of a `payment.settle` job. On a payment's first attempt it sends
 * the payment straight away (the provider is idempotent on the payment id, so even a duplicate send
 * cannot execute it twice). Any attempt that may follow an earlier one (a retry, a job handed on
 * after its worker died, a deferred or swept job) asks the provider first (a previous attempt may
 * have died after the provider accepted) and creates the payment only if the provider has never
 * seen it. It throws `RetryLater` for anything transient so the queue retries
 * with backoff. `reconcile` runs once those retries are spent: it never leaves a payment PENDING
 * for good, and refunds only once the provider can no longer execute the payment.
 */

/** Thrown for a transient outcome: the job is retried later; the attempt is already recorded. */
export class RetryLater extends Error {
  override name = 'RetryLater';
}

/**
 * Thrown when the provider was not called at all (its circuit is open, or its Retry-After has not
 * passed): nothing was tried, so the job is put off by `resumeInSeconds` without spending a retry.
 */
export class Deferred extends Error {
  override name = 'Deferred';
  readonly resumeInSeconds: number;
  constructor(detail: string, resumeInSeconds: number) {
    super(detail);
    this.resumeInSeconds = resumeInSeconds;
  }
}

export interface SettlementDeps {
  prisma: PrismaClient;
  provider: ProviderClient;
  logger: Logger;
  metrics: Pick<Metrics, 'settlementRetries' | 'settled'>;
  failpoints?: Failpoints;
}

/** What `findUnique` must include for `providerRequestOf`. */
export const WITH_SENDER = { account: { select: { sortCode: true, accountNumber: true, customer: { select: { name: true } } } } } as const;

export type PaymentWithSender = Payment & { account: { sortCode: string; accountNumber: string; customer: { name: string } } };

/**
 * What the provider is sent for a payment: always the same body for the same payment. The payer as
 * Faster Payments needs it: the account holder's (customer's) name, never the account's nickname
 * ("Everyday"), with the account's sort code and number.
 */
export function providerRequestOf(payment: PaymentWithSender): ProviderPaymentRequest {
  return {
    idempotencyKey: payment.id,
    amount: Number(payment.amount),
    currency: payment.currency,
    sender: { name: payment.account.customer.name, sortCode: payment.account.sortCode, accountNumber: payment.account.accountNumber },
    recipient: {
      name: payment.recipientName,
      sortCode: payment.recipientSortCode,
      accountNumber: payment.recipientAccountNumber,
    },
    reference: payment.reference,
  };
}

export function createSettlement(deps: SettlementDeps) {
  const { prisma, provider, logger, metrics } = deps;
  const failpoints = deps.failpoints ?? noFailpoints;

  async function load(paymentId: string): Promise<PaymentWithSender | null> {
    return prisma.payment.findUnique({
      where: { id: paymentId },
      include: WITH_SENDER,
    });
  }

  async function complete(payment: Payment, detail: string): Promise<void> {
    const done = await transitions.complete(prisma, payment.id, detail);
    if (done) metrics.settled.inc({ status: 'COMPLETED' });
    logger.info({ paymentId: payment.id, applied: done !== null }, 'payment completed');
  }

  /** `reason` is the customer's code; `internal` says what happened, for operators and logs. */
  async function refund(payment: Payment, to: 'CANCELLED' | 'FAILED', reason: FailureReason, internal: string): Promise<void> {
    const done = await prisma.$transaction(async (tx) => {
      const updated = await transitions.refund(tx, payment.id, to, reason);
      failpoints.hit('settle.during-refund');
      // A payment the customer asked to cancel is refunded as their cancellation (see transitions.refund).
      const byCustomer = updated?.failureReason === FAILURE_REASONS.CANCELLED_BY_CUSTOMER;
      if (updated) await recordAttempt(tx, payment.id, byCustomer ? 'CANCELLED_BY_CUSTOMER' : to, internal);
      return updated;
    });
    if (done) metrics.settled.inc({ status: done.status });
    logger.info(
      { paymentId: payment.id, status: done?.status ?? to, reason: done?.failureReason ?? reason, internal, applied: done !== null },
      'payment refunded',
    );
  }

  async function retryLater(payment: Payment, what: string, result: ProviderResult): Promise<never> {
    const detail = result.kind === 'transient' || result.kind === 'conflict' || result.kind === 'unavailable' ? result.detail : result.kind;
    await recordAttempt(prisma, payment.id, 'RETRY', `${what}: ${detail}`);
    metrics.settlementRetries.inc({ step: what });
    throw new RetryLater(`${what}: ${detail}`);
  }

  /**
   * One attempt at settling a payment. Returns when it is settled (or already was). `askFirst`
   * (the default) asks the provider whether it already holds the payment before sending it.
   */
  async function settle(paymentId: string, attempt: { askFirst: boolean } = { askFirst: true }): Promise<void> {
    const payment = await load(paymentId);
    if (!payment) {
      logger.error({ paymentId }, 'settlement job for a payment that does not exist');
      return;
    }
    if (payment.status !== 'PENDING') return;

    failpoints.hit('settle.before-provider');
    if (attempt.askFirst) {
      const known = await provider.getPayment(payment.id);
      switch (known.kind) {
        case 'accepted':
          return complete(payment, 'the provider already had the payment');
        case 'voided':
          return refund(payment, 'FAILED', FAILURE_REASONS.NOT_SENT_VOIDED, 'voided at the provider');
        case 'absent':
          break;
        case 'unavailable':
          throw new Deferred(`checking the provider: ${known.detail}`, known.resumeInSeconds);
        default:
          return retryLater(payment, 'checking the provider', known);
      }
    }

    // A 422 (the provider holds another body under this key) is a `conflict`: retried, and the
    // retry asks first; it is never taken for a rejection.
    const created = await provider.createPayment(providerRequestOf(payment));
    switch (created.kind) {
      case 'unavailable':
        throw new Deferred(`sending to the provider: ${created.detail}`, created.resumeInSeconds);
      case 'accepted':
        failpoints.hit('settle.after-provider-accepted');
        return complete(payment, created.replayed ? 'the provider already had the payment' : 'accepted by the provider');
      case 'rejected':
        return refund(
          payment,
          'CANCELLED',
          FAILURE_REASONS.RECIPIENT_REJECTED,
          `rejected by the provider: ${created.code}: ${created.message}`,
        );
      case 'voided':
        return refund(payment, 'FAILED', FAILURE_REASONS.NOT_SENT_VOIDED, 'voided at the provider');
      default:
        return retryLater(payment, 'sending to the provider', created);
    }
  }

  /**
   * The retries are spent. Completed if the provider has the payment; otherwise void it there
   * first, and only then fail and refund it. While the provider cannot be reached, throws so
   * the reconciliation job tries again later (each try is recorded on the payment).
   */
  async function reconcile(paymentId: string): Promise<void> {
    const payment = await load(paymentId);
    if (payment?.status !== 'PENDING') return;

    const known = await provider.getPayment(payment.id);
    switch (known.kind) {
      case 'accepted':
        return complete(payment, 'reconciled: the provider has the payment');
      case 'voided':
        return refund(payment, 'FAILED', FAILURE_REASONS.NOT_SENT_VOIDED, 'reconciled: voided at the provider');
      case 'absent':
        break;
      default:
        return retryLater(payment, 'reconciling', known);
    }

    const voided = await provider.voidPayment(payment.id);
    switch (voided.kind) {
      case 'voided':
        return refund(payment, 'FAILED', FAILURE_REASONS.NOT_SENT_PROVIDER_UNAVAILABLE, 'retries exhausted; voided at the provider');
      case 'accepted':
        return complete(payment, 'reconciled: the provider accepted the payment before the void');
      default:
        return retryLater(payment, 'voiding at the provider', voided);
    }
  }

  return { settle, reconcile };
}

export type Settlement = ReturnType<typeof createSettlement>;

import type { CalendarDate } from '../calendar.ts';
import type { Tx } from '../db/prisma.ts';

/**
 * A job's INSERT, built by the job queue exactly as it would send it, for a statement of the caller's
 * to run as one of its CTEs: `text` is a single `INSERT ... RETURNING id` whose only parameter is
 * `$1`, the job rows as JSON (`json`). Replacing `$1` by an expression that yields `'[]'` writes no job.
 */
export interface JobInsert {
  text: string;
  json: string;
}

/**
 * The background work the payment services ask for. Each request is written in the caller's
 * transaction (the outbox): the job exists if and only if the change that needs it commits.
 * Implemented with the job queue in src/jobs/enqueue.ts and handed in by the composition
 * (src/app/), so nothing here knows the queue.
 */
export interface PaymentJobs {
  /**
   * The settlement of a payment that has just become PENDING (taken, approved, or debited on its
   * day). Its job is keyed by the payment, so a second request for the same payment is refused.
   */
  settle(tx: Tx, paymentId: string): Promise<void>;
  /**
   * The same settlement job for a payment not yet written, as one INSERT for the caller to run in
   * the statement that creates the payment PENDING: the payment and its job in one round trip.
   */
  settlementInsert(paymentId: string): Promise<JobInsert>;
  /**
   * The execution of a SCHEDULED payment when `executeOn` begins in London. Keyed by the payment
   * (a second request is a no-op) unless `fresh`, which replaces a job that is gone or ran too early.
   */
  execute(tx: Tx, job: { paymentId: string; executeOn: CalendarDate; fresh?: boolean }): Promise<void>;
  /** The return to the provider of an inbound credit for no account of ours. */
  returnCredit(tx: Tx, creditId: string): Promise<void>;
  /** A run of the standing-order scheduler now, rather than at the next minute. */
  runStandingOrders(tx: Tx): Promise<void>;
}

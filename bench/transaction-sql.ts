import type { PgBoss } from 'pg-boss';
import { queuePolicy } from '../src/app/queue.ts';
import { systemClock } from '../src/calendar.ts';
import type { Config } from '../src/config.ts';
import type { Payment } from '../src/db/prisma.ts';
import { createPaymentJobs } from '../src/jobs/enqueue.ts';
import { londonDay } from '../src/payments/limits.ts';
import { fingerprintOf } from '../src/payments/payment-service.ts';
import { createTake } from '../src/payments/transitions.ts';
import type { SendPaymentCommand } from '../src/validation.ts';

export interface Statement {
  text: string;
  values: unknown[];
}

/** The statement a sendPayment transaction sends between BEGIN and COMMIT. */
export interface TransactionSql {
  /** The payment, the guarded debit, its ledger entry, the day total and the settlement job (one statement). */
  insertPayment: Statement;
  /** The job JSON (`$15`) with the payment id (`$14`) replaced by PAYMENT_ID. */
  jobJsonTemplate: string;
}

const SAMPLE_PAYMENT_ID = '11111111-2222-4333-8444-555555555555';

export function sampleCommand(accountId: string, key: string, amount: number): SendPaymentCommand {
  return {
    idempotencyKey: key,
    fromAccountId: accountId,
    amount,
    recipient: { name: 'Grace Hopper', sortCode: '123456', accountNumber: '12345678' },
    reference: 'Bench',
    executeOn: null,
  };
}

/**
 * Records the SQL text and parameters that the service's own functions (transitions.ts, with the
 * settlement job pg-boss builds) would send, by handing them a recording transaction.
 * The baselines replay exactly this, so they stay in step with the code.
 */
export async function captureTransactionSql(boss: PgBoss, config: Config, customerId: string, accountId: string): Promise<TransactionSql> {
  const recorded: Statement[] = [];
  const cmd = sampleCommand(accountId, 'bench-capture', 1000);
  const fakePayment = {
    id: SAMPLE_PAYMENT_ID,
    accountId,
    amount: BigInt(cmd.amount),
  } satisfies Pick<Payment, 'id' | 'accountId' | 'amount'>;
  const recorder = async <T>(text: string, values: unknown[]): Promise<T[]> => {
    recorded.push({ text, values });
    return [{ ...fakePayment, balanceAfter: 1n } as T];
  };

  // The insert statement includes the daily limit's upsert (issue 15), so the baselines pay for it too.
  const jobs = createPaymentJobs({ boss, policy: queuePolicy(config), clock: systemClock });
  await createTake()(
    recorder,
    customerId,
    cmd,
    fingerprintOf(cmd),
    { at: new Date(), limitDay: londonDay(new Date()), dailyLimit: config.payeeSafety.dailyLimit, hold: config.payeeSafety },
    { paymentId: SAMPLE_PAYMENT_ID, settlement: await jobs.settlementInsert(SAMPLE_PAYMENT_ID) },
  );
  const [insert] = recorded;
  if (!insert || recorded.length !== 1) throw new Error(`expected 1 statement in the sendPayment transaction, recorded ${recorded.length}`);
  const json = insert.values[14];
  if (typeof json !== 'string') throw new Error('pg-boss job parameter is not a JSON string');
  return { insertPayment: insert, jobJsonTemplate: json.replaceAll(SAMPLE_PAYMENT_ID, 'PAYMENT_ID') };
}

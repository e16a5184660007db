import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPrisma, type PrismaClient, prismaSql } from '../src/db/prisma.ts';
import { createTake, refund } from '../src/payments/transitions.ts';
import { createTestDatabase } from './helpers.ts';

/**
 * A statement timeout must never cancel the COMMIT of a transaction that moves money: PostgreSQL
 * answers a COMMIT cancelled while it waits for a synchronous standby as committed, although no
 * standby has it, and a failover then loses what we acknowledged. The money statements lift the
 * timeout for the rest of their transaction; everything else keeps it.
 */

const CUSTOMER = '00000000-0000-4000-8000-00000000d001';
const ACCOUNT = '00000000-0000-4000-8000-00000000d0a1';

let database: Awaited<ReturnType<typeof createTestDatabase>>;
let prisma: PrismaClient;

beforeAll(async () => {
  database = await createTestDatabase();
  prisma = createPrisma({ databaseUrl: database.url, poolSize: 2 });
  await prisma.$executeRawUnsafe(`INSERT INTO customers (id, name) VALUES ('${CUSTOMER}', 'Durable')`);
  await prisma.$executeRawUnsafe(
    `INSERT INTO accounts (id, customer_id, name, sort_code, account_number, balance) VALUES ('${ACCOUNT}', '${CUSTOMER}', 'Main', '608371', '55553333', 10000)`,
  );
});

afterAll(async () => {
  await prisma?.$disconnect();
  await database?.drop();
});

const timeoutNow = async (tx: Pick<PrismaClient, '$queryRaw'>) =>
  (await tx.$queryRaw<{ t: string }[]>`SELECT current_setting('statement_timeout') AS t`)[0]?.t;

describe('the COMMIT of a money transaction', () => {
  it('runs with no statement timeout once the money statement has run, and only in that transaction', async () => {
    const seen = await prisma.$transaction(async (tx) => {
      await tx.$executeRaw`SET LOCAL statement_timeout = '5s'`;
      const before = await timeoutNow(tx);
      const taken = await createTake()(
        prismaSql(tx),
        CUSTOMER,
        {
          idempotencyKey: 'durable-1',
          fromAccountId: ACCOUNT,
          amount: 1_000,
          recipient: { name: 'Ada', sortCode: '123456', accountNumber: '12345678' },
          reference: null,
          payeeCheckId: null,
          executeOn: null,
        },
        'f'.repeat(64),
        { at: new Date(), limitDay: '2026-12-02', dailyLimit: 1_000_000, hold: { reviewThreshold: 1_000_000, newPayeeSeconds: 0 } },
        { paymentId: randomUUID(), settlement: null },
      );
      expect(taken?.balanceAfter).toBe(9_000n);
      const afterTake = await timeoutNow(tx);
      if (!taken) throw new Error('nothing taken');
      return { before, afterTake, paymentId: taken.payment.id };
    });
    expect(seen.before).toBe('5s');
    expect(seen.afterTake).toBe('0');

    // Money back (a refund) lifts it too.
    const afterRefund = await prisma.$transaction(async (tx) => {
      await tx.$executeRaw`SET LOCAL statement_timeout = '5s'`;
      expect(await refund(tx, seen.paymentId, 'CANCELLED', 'RECIPIENT_REJECTED')).not.toBeNull();
      return timeoutNow(tx);
    });
    expect(afterRefund).toBe('0');

    // The next transaction on the same connections has its own timeout back.
    const next = await prisma.$transaction(async (tx) => {
      await tx.$executeRaw`SET LOCAL statement_timeout = '7s'`;
      return timeoutNow(tx);
    });
    expect(next).toBe('7s');
  });
});

import type { PgBoss } from 'pg-boss';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { queuePolicy, startQueue } from '../src/app/queue.ts';
import { systemClock } from '../src/calendar.ts';
import { sweepOrphanedPayments } from '../src/jobs/sweeper.ts';
import { paymentInput, type Stack, startStack } from './helpers.ts';

let stack: Stack;
let boss: PgBoss;
beforeAll(async () => {
  stack = await startStack({ worker: false });
  boss = await startQueue({ databaseUrl: stack.databaseUrl, config: stack.config, logger: stack.logger });
});
afterAll(async () => {
  await boss?.stop({ graceful: false, close: true });
  await stack?.stop();
});

const liveJobs = async (paymentId: string) =>
  Number(
    (
      await stack.db.$queryRaw<{ n: bigint }[]>`
        SELECT count(*) AS n FROM pgboss.job
        WHERE name IN ('payment.settle', 'payment.reconcile') AND data->>'paymentId' = ${paymentId} AND state IN ('created', 'retry', 'active')`
    )[0]?.n,
  );

describe('the sweeper', () => {
  it('re-enqueues a PENDING payment that lost its job, once, and the payment then settles', async () => {
    const alice = await stack.newCustomer(10_000);
    const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 1_500 }));
    const paymentId = sent.payment?.id ?? '';
    // What pg-boss's retention does to a job left waiting too long.
    await stack.db.$executeRaw`DELETE FROM pgboss.job WHERE id = ${paymentId}::uuid`;
    expect(await liveJobs(paymentId)).toBe(0);

    const sweep = () =>
      sweepOrphanedPayments({
        prisma: stack.db,
        boss,
        queue: queuePolicy(stack.config),
        minAgeSeconds: 0,
        clock: systemClock,
        logger: stack.logger,
      });
    expect(await sweep()).toEqual([paymentId]);
    expect(await sweep()).toEqual([]);
    expect(await liveJobs(paymentId)).toBe(1);

    await stack.startWorker();
    await vi.waitFor(
      async () => expect((await stack.db.payment.findUniqueOrThrow({ where: { id: paymentId } })).status).toBe('COMPLETED'),
      {
        timeout: 20_000,
        interval: 100,
      },
    );
  });

  it('leaves alone payments younger than its threshold and payments that have a live job', async () => {
    const alice = await stack.newCustomer(10_000);
    stack.emulator.setFaults({ errorRate: 1 });
    try {
      const sent = await stack.send(alice.token, paymentInput(alice.accountId));
      const paymentId = sent.payment?.id ?? '';
      expect(
        await sweepOrphanedPayments({
          prisma: stack.db,
          boss,
          queue: queuePolicy(stack.config),
          minAgeSeconds: 0,
          clock: systemClock,
          logger: stack.logger,
        }),
      ).not.toContain(paymentId);
      await stack.db.$executeRaw`DELETE FROM pgboss.job WHERE data->>'paymentId' = ${paymentId}`;
      expect(
        await sweepOrphanedPayments({
          prisma: stack.db,
          boss,
          queue: queuePolicy(stack.config),
          minAgeSeconds: 3600,
          clock: systemClock,
          logger: stack.logger,
        }),
      ).toEqual([]);
    } finally {
      stack.emulator.setFaults({ errorRate: 0 });
    }
  });

  it('keeps settlement jobs waiting far longer than the default 14 days', async () => {
    const alice = await stack.newCustomer(10_000);
    const sent = await stack.send(alice.token, paymentInput(alice.accountId));
    const rows = await stack.db.$queryRaw<{ days: number }[]>`
      SELECT extract(epoch FROM keep_until - start_after)::float8 / 86400 AS days FROM pgboss.job WHERE id = ${sent.payment?.id ?? ''}::uuid`;
    expect(rows[0]?.days).toBeGreaterThanOrEqual(365);
  });
});

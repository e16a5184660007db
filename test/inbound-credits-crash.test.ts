import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { BANK_SORT_CODE } from '../src/accounts/accounts.ts';
import { audit, formatAudit } from '../src/audit.ts';
import { EVENTS_PAGE_SIZE } from '../src/payments/provider-events.ts';
import { type StartedProcess, startProcess } from '../tools/processes.ts';
import { emulatorCall, type Stack, startStack, type TestCustomer, workerProcessEnv } from './helpers.ts';

/** The element at `i`, which must be there. */
function at<T>(list: readonly T[], i: number): T {
  const value = list[i];
  if (value === undefined) throw new Error(`nothing at ${i}`);
  return value;
}

/**
 * 500 inbound credits, one in ten to an account we do not have, taken in by real worker processes
 * that are killed with SIGKILL along the way: one between applying a page of the feed and moving its
 * cursor (a failpoint), two more at whatever they were doing. The books must balance to the penny.
 */
let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ worker: false, env: { PAYMENT_JOB_EXPIRE_SECONDS: '2', PROVIDER_TIMEOUT_MS: '1000' } });
});
afterAll(async () => {
  await stack?.stop();
});

const workerEnv = (failpoints: string) =>
  workerProcessEnv(stack, {
    PAYMENT_JOB_EXPIRE_SECONDS: '2',
    PROVIDER_TIMEOUT_MS: '1000',
    PAYMENT_RETRY_DELAY_MAX_SECONDS: '2',
    PROVIDER_EVENTS_POLL_SECONDS: '1',
    FAILPOINTS: failpoints,
  });

const recorded = () => stack.db.providerCredit.count();

describe('500 inbound credits under worker SIGKILLs', () => {
  it('credits each known one once and returns each unknown one, and the audit balances to the penny', { timeout: 240_000 }, async () => {
    const customers: TestCustomer[] = [];
    for (let i = 0; i < 5; i++) customers.push(await stack.newCustomer(1_000 * (i + 1)));
    const accounts = await stack.db.account.findMany({ where: { id: { in: customers.map((c) => c.accountId) } } });
    const expected = new Map(accounts.map((a) => [a.id, a.balance]));
    let unknownTotal = 0n;
    // Slow the provider a little, so the kills land while there is work in flight.
    stack.emulator.setFaults({ latencyMs: 2 });
    for (let i = 0; i < 500; i++) {
      const amount = 1 + ((i * 7919) % 50_000);
      const account = at(accounts, i % accounts.length);
      const unknown = i % 10 === 3;
      const recipient = unknown
        ? { sortCode: BANK_SORT_CODE, accountNumber: String(10_000_000 + i) }
        : { sortCode: account.sortCode, accountNumber: account.accountNumber };
      const posted = await emulatorCall(stack, 'POST', '/admin/credits', {
        amount,
        recipient,
        sender: { name: `Payer ${i}`, sortCode: '401234', accountNumber: '87654321' },
        reference: `crash ${i}`,
      });
      expect(posted.status).toBe(201);
      if (unknown) unknownTotal += BigInt(amount);
      else expected.set(account.id, (expected.get(account.id) ?? 0n) + BigInt(amount));
    }

    // A worker that dies after applying the first page, before the cursor moves past it: the
    // page's credits are in, the cursor is not, and whoever reads the page again changes nothing.
    const doomed = await startProcess('main-worker.ts', workerEnv('provider-events.before-cursor'), 'worker started');
    expect(await doomed.exited).toEqual({ code: null, signal: 'SIGKILL' });
    expect(await recorded()).toBe(EVENTS_PAGE_SIZE);
    expect((await stack.db.providerEventCursor.findUniqueOrThrow({ where: { id: true } })).cursor).toBeNull();

    // Two workers killed at whatever they are doing, once each part of the feed is in.
    const workers: StartedProcess[] = [];
    try {
      for (const threshold of [100, 300]) {
        const worker = await startProcess('main-worker.ts', workerEnv(''), 'worker started');
        workers.push(worker);
        await vi.waitFor(async () => expect(await recorded()).toBeGreaterThanOrEqual(threshold), { timeout: 60_000, interval: 20 });
        await worker.kill();
      }
      workers.push(await startProcess('main-worker.ts', workerEnv(''), 'worker started'));
      await vi.waitFor(
        async () => {
          expect(await recorded()).toBe(500);
          expect(await stack.db.providerCredit.count({ where: { outcome: 'RETURNING' } })).toBe(0);
        },
        { timeout: 90_000, interval: 250 },
      );
    } catch (error) {
      console.info(
        workers
          .map((w) =>
            w.logs
              .slice(-30)
              .map((l) => JSON.stringify(l))
              .join('\n'),
          )
          .join('\n----\n'),
      );
      throw error;
    } finally {
      for (const w of workers) await w.kill();
      stack.emulator.setFaults({ latencyMs: 0 });
    }

    const outcomes = await stack.db.providerCredit.groupBy({ by: ['outcome'], _count: true, _sum: { amount: true } });
    expect(outcomes.map((o) => [o.outcome, o._count]).sort()).toEqual([
      ['CREDITED', 450],
      ['RETURNED', 50],
    ]);
    expect(outcomes.find((o) => o.outcome === 'RETURNED')?._sum.amount).toBe(unknownTotal);
    const balances = await stack.db.account.findMany({ where: { id: { in: customers.map((c) => c.accountId) } } });
    for (const account of balances) expect(account.balance, `account ${account.id}`).toBe(expected.get(account.id));
    expect(await stack.db.ledgerEntry.count({ where: { kind: 'INBOUND_CREDIT' } })).toBe(450);
    const theirs = (await emulatorCall(stack, 'GET', '/admin/credits')).json as Array<{ returned: unknown }>;
    expect(theirs.filter((c) => c.returned !== null)).toHaveLength(50);

    const report = await audit({ prisma: stack.db, provider: { url: stack.emulator.url, apiKey: stack.config.providerApiKey } });
    expect(report.ok, formatAudit(report)).toBe(true);
  });
});

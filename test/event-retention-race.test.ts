import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prismaSql } from '../src/db/prisma.ts';
import type { EventPosition } from '../src/events/cursor.ts';
import { EventsPrunedError, pruneEvents, readEvents } from '../src/events/store.ts';
import { accountEventStream, createAccountEvents } from '../src/events/stream.ts';
import { expectNoErrorLogs, paymentInput, type Stack, startStack, type TestCustomer } from './helpers.ts';

/**
 * Retention racing a reader: a prune that passes a reader's position between two of its page
 * reads is refused on the next read, never skipped over.
 */

let stack: Stack;
let alice: TestCustomer;
beforeAll(async () => {
  stack = await startStack({ worker: false });
});
afterAll(async () => {
  await stack?.stop();
});

const FUTURE = () => new Date(Date.now() + 31 * 24 * 3600 * 1000);

/** The account's events as the database has them, below the horizon. */
async function eventsOf(accountId: string): Promise<EventPosition[]> {
  const events = await readEvents(prismaSql(stack.db), { after: { xid: 0n, seq: 0n }, limit: 1000, accountId });
  return events.map((e) => e.position);
}

describe('retention racing a replay', () => {
  it('ends a replay whose position retention passed between two pages with EventsPrunedError, not a gap', async () => {
    alice = await stack.newCustomer(100_000);
    for (let i = 0; i < 6; i++) await stack.send(alice.token, paymentInput(alice.accountId, { amount: 100 + i }));
    await expect.poll(async () => (await eventsOf(alice.accountId)).length, { timeout: 10_000 }).toBe(6);
    const [first] = await eventsOf(alice.accountId);
    if (!first) throw new Error('no events');
    const stream = accountEventStream({ feed: stack.api.events, prisma: stack.db, accountId: alice.accountId, after: first, pageSize: 2 });
    try {
      // The first page (events 2 and 3) is read; then retention deletes everything so far.
      const second = await stream.next();
      const third = await stream.next();
      expect(second.done).toBe(false);
      expect(third.done).toBe(false);
      expect(await pruneEvents(prismaSql(stack.db), { before: FUTURE() })).toBeGreaterThan(0);
      // A new event after the prune: a reader that skipped the deleted ones would deliver it next.
      await stack.send(alice.token, paymentInput(alice.accountId, { amount: 999 }));
      await expect(stream.next()).rejects.toBeInstanceOf(EventsPrunedError);
    } finally {
      await stream.return();
    }
    expectNoErrorLogs(stack);
  });

  it('refuses a page read after a position retention passed, in the statement that reads it', async () => {
    const bob = await stack.newCustomer(10_000);
    await stack.send(bob.token, paymentInput(bob.accountId));
    await stack.send(bob.token, paymentInput(bob.accountId));
    await expect.poll(async () => (await eventsOf(bob.accountId)).length, { timeout: 10_000 }).toBe(2);
    const [oldest] = await eventsOf(bob.accountId);
    if (!oldest) throw new Error('no events');
    await pruneEvents(prismaSql(stack.db), { before: FUTURE() });
    const events = createAccountEvents({ feed: stack.api.events, prisma: stack.db });
    await expect(events.page(bob.accountId, oldest, 10)).rejects.toBeInstanceOf(EventsPrunedError);
    // From the start (no cursor) is never refused: it reads what is left.
    await expect(events.page(bob.accountId, null, 10)).resolves.toEqual([]);
  });
});

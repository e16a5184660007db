import fc from 'fast-check';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished, vi } from 'vitest';
import { type ApiProcess, startApiProcess } from '../src/app/api.ts';
import { prismaSql } from '../src/db/prisma.ts';
import { comparePositions, decodeCursor, encodeCursor, START } from '../src/events/cursor.ts';
import { startEventFeed } from '../src/events/feed.ts';
import { pruneEvents, readEvents } from '../src/events/store.ts';
import { gql, paymentInput, type Stack, startStack, type TestCustomer } from './helpers.ts';
import { type StallingProxy, startStallingProxy } from './tcp-proxy.ts';
import { collect, wsClient } from './ws-helpers.ts';

/**
 * The durable payment event stream: commit order without gaps, resumable on any API process,
 * through lost and hung connections, with retention and authorisation.
 */

const ACCOUNT_EVENTS = /* GraphQL */ `
  subscription($id: ID!, $after: String) {
    accountEvents(accountId: $id, after: $after) { id paymentId accountId previousStatus status amount occurredAt payment { id status } }
  }
`;
const PAYMENT_EVENTS = /* GraphQL */ `
  query($id: ID!, $after: String, $first: Int) {
    paymentEvents(accountId: $id, after: $after, first: $first) {
      edges { cursor node { id paymentId previousStatus status amount } }
      pageInfo { hasNextPage endCursor }
    }
  }
`;

interface EventNode {
  id: string;
  paymentId: string;
  accountId: string;
  previousStatus: string | null;
  status: string;
  amount: number;
}
interface EventsPage {
  paymentEvents: { edges: Array<{ cursor: string; node: EventNode }>; pageInfo: { hasNextPage: boolean; endCursor: string | null } };
}

let stack: Stack;
let proxy: StallingProxy;
let second: ApiProcess;
let secondUrl: string;

beforeAll(async () => {
  // The feed of API one reaches PostgreSQL through a proxy that can stall; API two goes direct.
  const server = new URL(inject('adminUrl'));
  proxy = await startStallingProxy({ host: server.hostname, port: Number(server.port || 5432) });
  stack = await startStack({
    env: { EVENT_POLL_INTERVAL_MS: '50', EVENT_QUERY_TIMEOUT_MS: '1000' },
    eventsDatabaseUrl: (url) => proxy.via(url),
  });
  second = await startApiProcess({ config: stack.config, databaseUrl: stack.databaseUrl, logger: stack.logger, port: 0 });
  secondUrl = second.api.url.replace('localhost', '127.0.0.1');
});
afterAll(async () => {
  await second?.stop();
  await stack?.stop();
  await proxy?.close();
});

async function allEvents(token: string, accountId: string, url = stack.apiUrl): Promise<EventNode[]> {
  const events: EventNode[] = [];
  let after: string | null = null;
  for (;;) {
    const page: Awaited<ReturnType<typeof gql<EventsPage>>> = await gql<EventsPage>(url, token, PAYMENT_EVENTS, {
      id: accountId,
      after,
      first: 500,
    });
    if (!page.data) throw new Error(JSON.stringify(page.errors));
    events.push(...page.data.paymentEvents.edges.map((e) => e.node));
    if (!page.data.paymentEvents.pageInfo.hasNextPage) return events;
    after = page.data.paymentEvents.pageInfo.endCursor;
  }
}

describe('cursors', () => {
  const position = fc.record({ xid: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), seq: fc.bigInt({ min: 0n, max: 2n ** 63n - 1n }) });

  it('round-trip, and sort as strings exactly as their positions do', () => {
    fc.assert(
      fc.property(position, position, (a, b) => {
        expect(decodeCursor(encodeCursor(a))).toEqual(a);
        const [x, y] = [encodeCursor(a), encodeCursor(b)];
        expect(x < y ? -1 : x > y ? 1 : 0).toBe(comparePositions(a, b));
      }),
    );
  });
});

describe('commit order', () => {
  it('never skips an event whose transaction commits after a later-numbered one', async () => {
    // No worker here: the test alone moves these payments, in the order it chooses.
    const quiet = await startStack({ worker: false });
    try {
      await commitsOutOfOrder(quiet);
    } finally {
      await quiet.stop();
    }
  });

  async function commitsOutOfOrder(stack: Stack) {
    const alice = await stack.newCustomer(10_000);
    // A slow provider keeps the worker from settling these two itself while the test plays T1 and T2.
    stack.emulator.setFaults({ latencyMs: 3_000 });
    onTestFinished(() => void stack.emulator.setFaults({ latencyMs: 0 }));
    const first = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 100 }));
    const later = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 200 }));
    const sql = prismaSql(stack.db);
    // Both creations readable: the horizon (cluster-wide, so other tests' transactions hold it too) has passed them.
    const before = await vi.waitFor(
      async () => {
        const rows = await readEvents(sql, { after: START, limit: 10_000, accountId: alice.accountId });
        expect(rows.map((e) => e.paymentId)).toEqual([first.payment?.id, later.payment?.id]);
        return rows;
      },
      { timeout: 10_000, interval: 20 },
    );
    const cursor = before.at(-1)?.position ?? START;

    const [t1, t2] = [new pg.Client({ connectionString: stack.databaseUrl }), new pg.Client({ connectionString: stack.databaseUrl })];
    await Promise.all([t1.connect(), t2.connect()]);
    try {
      // T1 writes first (the smaller event number) but commits last.
      await t1.query('BEGIN');
      await t1.query(`UPDATE payments SET status = 'COMPLETED' WHERE id = $1`, [first.payment?.id]);
      await t2.query('BEGIN');
      await t2.query(`UPDATE payments SET status = 'COMPLETED' WHERE id = $1`, [later.payment?.id]);
      await t2.query('COMMIT');

      // A reader of "every number after the last one I saw" would take T2's event now and skip
      // T1's for good once it moved its cursor past it.
      const bySeq = await stack.db.$queryRaw<{ payment_id: string }[]>`
        SELECT payment_id::text FROM payment_events WHERE account_id = ${alice.accountId}::uuid AND seq > ${cursor.seq} ORDER BY seq`;
      expect(bySeq.map((r) => r.payment_id)).toEqual([later.payment?.id]);
      // Ours does not read past the horizon T1 holds back: nothing yet.
      expect(await readEvents(sql, { after: cursor, limit: 100, accountId: alice.accountId })).toEqual([]);
      const page = await gql<EventsPage>(stack.apiUrl, alice.token, PAYMENT_EVENTS, { id: alice.accountId, after: encodeCursor(cursor) });
      expect(page.data?.paymentEvents.edges).toEqual([]);

      await t1.query('COMMIT');
      // Once the horizon (cluster-wide: other test files' transactions hold it too) passes T1, both
      // come, the earlier-numbered first. A transaction of another test that took its xid between
      // T1's and T2's can hold the horizon between them for a moment, so T1's may come alone
      // first. Never T2's without T1's: that would be the skip.
      const reads: string[][] = [];
      await expect
        .poll(
          async () => {
            const read = (await readEvents(sql, { after: cursor, limit: 100, accountId: alice.accountId })).map((e) => [
              e.paymentId,
              e.previousStatus,
              e.status,
            ]);
            reads.push(read.map((r) => String(r[0])));
            return read;
          },
          { timeout: 10_000, interval: 20 },
        )
        .toEqual([
          [first.payment?.id, 'PENDING', 'COMPLETED'],
          [later.payment?.id, 'PENDING', 'COMPLETED'],
        ]);
      const inOrder = [first.payment?.id, later.payment?.id].map(String);
      expect(reads.filter((read) => read.join() !== inOrder.slice(0, read.length).join())).toEqual([]);
    } finally {
      await Promise.all([t1.end(), t2.end()]);
    }
  }

  it('records the creation and every status change of a payment, and the cursors sort as strings', async () => {
    const alice = await stack.newCustomer(10_000);
    const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 700 }));
    const rejected = await stack.send(
      alice.token,
      paymentInput(alice.accountId, { amount: 300, recipient: { name: 'Nobody', sortCode: '000000', accountNumber: '12345678' } }),
    );
    await expect.poll(async () => (await allEvents(alice.token, alice.accountId)).length, { timeout: 20_000, interval: 100 }).toBe(4);
    const events = await allEvents(alice.token, alice.accountId);
    const of = (id: string | undefined) => events.filter((e) => e.paymentId === id).map((e) => [e.previousStatus, e.status, e.amount]);
    expect(of(sent.payment?.id)).toEqual([
      [null, 'PENDING', 700],
      ['PENDING', 'COMPLETED', 700],
    ]);
    expect(of(rejected.payment?.id)).toEqual([
      [null, 'PENDING', 300],
      ['PENDING', 'CANCELLED', 300],
    ]);
    const ids = events.map((e) => e.id);
    expect([...ids].sort()).toEqual(ids);
  });
});

describe('resuming on another API process', () => {
  type Disruption = 'disconnect' | 'feed connection killed' | 'feed connection stalled';

  it.each<Disruption>(['disconnect', 'feed connection killed', 'feed connection stalled'])(
    'delivers every event exactly once and in order after a %s mid-stream',
    async (disruption) => {
      const customers: TestCustomer[] = await Promise.all(Array.from({ length: 4 }, () => stack.newCustomer(1_000_000)));
      const received = new Map<string, EventNode[]>(customers.map((c) => [c.accountId, []]));
      const total = (c: TestCustomer) => received.get(c.accountId)?.length ?? 0;

      // Subscribed on API one from now on (the accounts are new: that is their whole stream).
      const listenersBefore = stack.api.events.size();
      const onApiOne = customers.map((c) => {
        const { client } = wsClient(stack.apiUrl, c.token);
        return { client, sub: collect<{ accountEvents: EventNode }>(client, ACCOUNT_EVENTS, { id: c.accountId, after: null }) };
      });
      const subsOne = onApiOne.map((o) => o.sub);
      await vi.waitFor(() => expect(stack.api.events.size()).toBe(listenersBefore + customers.length));
      const record = () => {
        customers.forEach((c, i) => {
          received.set(
            c.accountId,
            (subsOne[i]?.values ?? []).map((v) => v.accountEvents),
          );
        });
      };

      // 200 payments from four accounts, settled by the worker while we watch.
      const sending = Promise.all(
        customers.flatMap((c) => Array.from({ length: 50 }, (_, n) => stack.send(c.token, paymentInput(c.accountId, { amount: 100 + n })))),
      );
      await Promise.all(subsOne.map((s) => s.until((v) => v.length >= 20)));

      if (disruption === 'feed connection killed') {
        await stack.db.$queryRaw`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = 'payments-events' AND datname = current_database()`;
        await Promise.all(subsOne.map((s, i) => s.until((v) => v.length >= 40 + i)));
      }
      if (disruption === 'feed connection stalled') {
        // The connection hangs without closing; the feed notices by its query timeout.
        proxy.stall();
        await vi.waitFor(() => expect(stack.api.events.isHealthy()).toBe(false), { timeout: 10_000, interval: 20 });
        proxy.resume();
        await Promise.all(subsOne.map((s, i) => s.until((v) => v.length >= 40 + i)));
      }
      // The client drops off API one mid-stream, remembering the last id it saw of each account.
      record();
      await Promise.all(onApiOne.map((o) => o.client.dispose()));
      const resumeFrom = customers.map((c) => received.get(c.accountId)?.at(-1)?.id ?? null);
      await sending;

      // Back, on API two.
      const subsTwo = customers.map((c, i) =>
        collect<{ accountEvents: EventNode }>(wsClient(secondUrl, c.token).client, ACCOUNT_EVENTS, {
          id: c.accountId,
          after: resumeFrom[i],
        }),
      );
      for (const [i, c] of customers.entries()) {
        // 50 creations and 50 outcomes per account.
        const rest = await subsTwo[i]?.until((v) => total(c) + v.length >= 100);
        received.get(c.accountId)?.push(...(rest ?? []).map((v) => v.accountEvents));
        subsTwo[i]?.unsubscribe();
      }

      for (const c of customers) {
        const truth = await allEvents(c.token, c.accountId, secondUrl);
        expect(truth).toHaveLength(100);
        const seen = received.get(c.accountId) ?? [];
        expect(seen.map((e) => e.id)).toEqual(truth.map((e) => e.id));
        expect(new Set(seen.map((e) => e.id)).size).toBe(seen.length);
      }
    },
  );
});

describe('authorisation and bad cursors', () => {
  it("refuses another customer's account and a cursor that is not one, for the query and the subscription", async () => {
    const alice = await stack.newCustomer(10_000);
    const mallory = await stack.newCustomer(0);
    await stack.send(alice.token, paymentInput(alice.accountId));

    const stolen = await gql<EventsPage>(stack.apiUrl, mallory.token, PAYMENT_EVENTS, { id: alice.accountId });
    expect(stolen.data).toBeNull();
    expect(stolen.errors?.[0]).toMatchObject({ message: 'No such account', extensions: { code: 'BAD_USER_INPUT' } });

    for (const after of ['garbage', 'ZZZZ', '0000000000000ABC0000000000000001', `${encodeCursor(START)}0`, '']) {
      const page = await gql<EventsPage>(stack.apiUrl, alice.token, PAYMENT_EVENTS, { id: alice.accountId, after });
      expect(page.errors?.[0]).toMatchObject({ message: expect.stringMatching(/^after /), extensions: { code: 'BAD_USER_INPUT' } });
    }
    for (const first of [0, 501, -1]) {
      const page = await gql<EventsPage>(stack.apiUrl, alice.token, PAYMENT_EVENTS, { id: alice.accountId, first });
      expect(page.errors?.[0]).toMatchObject({ message: expect.stringMatching(/^first /), extensions: { code: 'BAD_USER_INPUT' } });
    }

    const ws = wsClient(stack.apiUrl, mallory.token);
    const own = wsClient(stack.apiUrl, alice.token);
    try {
      const subStolen = collect(ws.client, ACCOUNT_EVENTS, { id: alice.accountId, after: null });
      const subGarbage = collect(own.client, ACCOUNT_EVENTS, { id: alice.accountId, after: 'garbage' });
      await Promise.all([subStolen.done, subGarbage.done]);
      expect(subStolen.values).toEqual([]);
      expect(subStolen.errors).toEqual([expect.objectContaining({ message: 'No such account' })]);
      expect(subGarbage.values).toEqual([]);
      expect(subGarbage.errors).toEqual([expect.objectContaining({ message: expect.stringMatching(/^after is not an event cursor/) })]);
    } finally {
      await Promise.all([ws.client.dispose(), own.client.dispose()]);
    }
    expect(decodeCursor('garbage')).toBeNull();
  });

  it('lets an operator read any account and a customer read their own', async () => {
    const alice = await stack.newCustomer(10_000);
    await stack.send(alice.token, paymentInput(alice.accountId));
    // Settled first, so both read the same two events.
    await expect.poll(async () => (await allEvents(alice.token, alice.accountId)).length, { timeout: 20_000 }).toBe(2);
    const own = await gql<EventsPage>(stack.apiUrl, alice.token, PAYMENT_EVENTS, { id: alice.accountId });
    const operator = await gql<EventsPage>(stack.apiUrl, stack.operatorToken, PAYMENT_EVENTS, { id: alice.accountId });
    expect(own.data?.paymentEvents.edges.length).toBeGreaterThan(0);
    expect(operator.data).toEqual(own.data);
  });
});

describe('retention', () => {
  it('prunes events past retention and refuses a cursor older than what was pruned', async () => {
    const alice = await stack.newCustomer(10_000);
    await stack.send(alice.token, paymentInput(alice.accountId));
    await stack.send(alice.token, paymentInput(alice.accountId));
    await expect.poll(async () => (await allEvents(alice.token, alice.accountId)).length, { timeout: 20_000 }).toBe(4);
    const events = await allEvents(alice.token, alice.accountId);
    const oldCursor = events[0]?.id ?? '';
    const lastCursor = events.at(-1)?.id ?? '';

    // A clock 31 days ahead: everything so far is past a 30-day retention.
    const deleted = await pruneEvents(prismaSql(stack.db), { before: new Date(Date.now() + 31 * 24 * 3600 * 1000), batchSize: 7 });
    expect(deleted).toBeGreaterThanOrEqual(events.length);
    expect(await pruneEvents(prismaSql(stack.db), { before: new Date(Date.now() + 31 * 24 * 3600 * 1000) })).toBe(0);

    const page = await gql<EventsPage>(stack.apiUrl, alice.token, PAYMENT_EVENTS, { id: alice.accountId, after: oldCursor });
    expect(page.errors?.[0]).toMatchObject({
      message: expect.stringMatching(/older than the event retention/),
      extensions: { code: 'BAD_USER_INPUT' },
    });
    const fromStart = await gql<EventsPage>(stack.apiUrl, alice.token, PAYMENT_EVENTS, { id: alice.accountId });
    expect(fromStart.data?.paymentEvents.edges).toEqual([]);
    // A client that had seen everything before the prune loses nothing and carries on.
    const fromLast = await gql<EventsPage>(stack.apiUrl, alice.token, PAYMENT_EVENTS, { id: alice.accountId, after: lastCursor });
    expect(fromLast).toEqual({ data: { paymentEvents: { edges: [], pageInfo: { hasNextPage: false, endCursor: null } } } });

    const ws = wsClient(stack.apiUrl, alice.token);
    try {
      const sub = collect(ws.client, ACCOUNT_EVENTS, { id: alice.accountId, after: oldCursor });
      await sub.done;
      expect(sub.errors).toEqual([expect.objectContaining({ message: expect.stringMatching(/older than the event retention/) })]);
    } finally {
      await ws.client.dispose();
    }
  });

  it('is scheduled as a pg-boss job', async () => {
    const rows = await stack.db.$queryRaw<
      { name: string; cron: string }[]
    >`SELECT name, cron FROM pgboss.schedule WHERE name = 'events.prune'`;
    expect(rows).toEqual([{ name: 'events.prune', cron: '17 * * * *' }]);
  });
});

describe('the feed of one process', () => {
  it('reads each payment once per batch of events, for all of its listeners', async () => {
    const alice = await stack.newCustomer(10_000);
    let reads = 0;
    // The real client, with its payment reads counted.
    const counted = new Proxy(stack.db, {
      get(target, key, receiver) {
        if (key !== 'payment') return Reflect.get(target, key, receiver);
        return new Proxy(target.payment, {
          get(model, method, r) {
            if (method === 'findMany') reads += 1;
            return Reflect.get(model, method, r);
          },
        });
      },
    });
    const feed = await startEventFeed({
      databaseUrl: stack.databaseUrl,
      prisma: counted,
      logger: stack.logger,
      pollIntervalMs: 20,
      queryTimeoutMs: 2_000,
    });
    try {
      const seen: string[] = [];
      const unsubscribes = Array.from({ length: 20 }, (_, i) =>
        feed.subscribe(i % 2 ? { accountId: alice.accountId } : { paymentId: 'not-yet-known' }, (events) => {
          for (const event of events) void event.payment().then((p) => seen.push(p.id));
        }),
      );
      const sent = await stack.send(alice.token, paymentInput(alice.accountId));
      // Its creation and its completion, each to the ten listeners of the account.
      await vi.waitFor(() => expect(seen.length).toBe(20), { timeout: 20_000 });
      expect(new Set(seen)).toEqual(new Set([sent.payment?.id]));
      // Twenty asks, one read per poll that found events (both events in one poll, or one each).
      expect(reads).toBeGreaterThanOrEqual(1);
      expect(reads).toBeLessThanOrEqual(2);
      for (const u of unsubscribes) u();
      expect(feed.size()).toBe(0);
    } finally {
      await feed.stop();
    }
  });
});

describe('the money transaction', () => {
  it('sends no NOTIFY: no trigger on payments notifies and the settlement queue does not', async () => {
    const triggers = await stack.db.$queryRaw<{ name: string }[]>`
      SELECT t.tgname AS name FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
      WHERE t.tgrelid = 'payments'::regclass AND p.prosrc ILIKE '%notify%'`;
    expect(triggers).toEqual([]);
    const queue = await stack.db.$queryRaw<{ notify: boolean }[]>`SELECT notify FROM pgboss.queue WHERE name = 'payment.settle'`;
    expect(queue).toEqual([{ notify: false }]);
  });

  it('refuses to rewrite an event', async () => {
    const alice = await stack.newCustomer(10_000);
    await stack.send(alice.token, paymentInput(alice.accountId));
    await expect(stack.db.$executeRaw`UPDATE payment_events SET amount = 1`).rejects.toThrow(/append-only/);
    await expect(stack.db.$executeRaw`TRUNCATE payment_events`).rejects.toThrow(/append-only/);
  });
});

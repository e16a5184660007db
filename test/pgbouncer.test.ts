import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { applyRoleTimeouts } from '../src/db/migrate.ts';
import { type PgBouncer, pgBouncerBinary, startPgBouncer } from '../tools/pgbouncer.ts';
import { gql, paymentInput, type Stack, startStack, type TestCustomer } from './helpers.ts';
import { startReceiver } from './webhook-receiver.ts';
import { collect, PAYMENT_UPDATED, type PaymentUpdate, wsClient } from './ws-helpers.ts';

/**
 * Every process behind a real PgBouncer 1.18 in `pool_mode = transaction` with stock settings: the
 * API (Prisma, pg-boss, the event feed, the rate limiter) and the worker connect only through it;
 * payments, settlement, the event stream (live over a WebSocket and paged) and webhooks all work,
 * and the sessions PgBouncer opens carry the role's timeouts that `npm run migrate` writes.
 */
const binary = pgBouncerBinary();
if (!binary) {
  console.warn('\n*** SKIPPED: the PgBouncer test needs pgbouncer (apt-get install pgbouncer, or set PGBOUNCER_PATH). ***\n');
}

const ACCOUNT_EVENTS = /* GraphQL */ `
  subscription($id: ID!) { accountEvents(accountId: $id) { id paymentId status } }
`;
const PAYMENT_EVENTS = /* GraphQL */ `
  query($id: ID!, $after: String) {
    paymentEvents(accountId: $id, after: $after, first: 50) { edges { node { id paymentId status } } pageInfo { hasNextPage endCursor } }
  }
`;
const CREATE_ENDPOINT = /* GraphQL */ `
  mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { endpoint { id } errors { code message } } }
`;
interface EventNode {
  id: string;
  paymentId: string;
  status: string;
}

const TIMEOUTS = { idleInTransactionMs: 15_000, lockMs: 5_000, statementMs: 30_000 };

let bouncer: PgBouncer;
let stack: Stack;
let alice: TestCustomer;

/** The application names of PgBouncer's clients, gathered over the test. */
const clientsSeen = new Set<string>();
async function noteClients(): Promise<void> {
  const admin = new pg.Client({ connectionString: bouncer.adminUrl });
  await admin.connect();
  try {
    const { rows } = await admin.query<{ application_name: string }>('SHOW CLIENTS');
    for (const r of rows) clientsSeen.add(r.application_name);
  } finally {
    await admin.end();
  }
}

describe.skipIf(!binary)('behind PgBouncer in transaction pooling', () => {
  beforeAll(async () => {
    const server = new URL(inject('adminUrl'));
    bouncer = await startPgBouncer({ serverHost: server.hostname, serverPort: Number(server.port || 5432) });
    stack = await startStack({
      via: (url) => bouncer.urlFor(new URL(url).pathname.slice(1)),
      // What `npm run migrate` does on DIRECT_DATABASE_URL: the role's timeouts in this database.
      beforeStart: (url) => applyRoleTimeouts(url, TIMEOUTS),
      env: {
        DATABASE_POOL_MODE: 'transaction',
        // The limiter's pool exists only with a limit.
        SEND_PAYMENT_RATE_LIMIT_PER_MINUTE: '10000',
        WEBHOOK_DISPATCH_INTERVAL_MS: '50',
      },
    }).catch(async (error: unknown) => {
      throw new Error(`${String(error)}\npgbouncer log:\n${bouncer.log()}`);
    });
    alice = await stack.newCustomer(1_000_000);
  }, 60_000);

  afterAll(async () => {
    await stack?.stop();
    await bouncer?.stop();
  });

  it('gives the sessions it opens the role timeouts', async () => {
    const client = new pg.Client({ connectionString: bouncer.urlFor(new URL(stack.databaseUrl).pathname.slice(1)) });
    await client.connect();
    try {
      const { rows } = await client.query(
        `SELECT current_setting('idle_in_transaction_session_timeout') AS idle, current_setting('lock_timeout') AS lock,
                current_setting('statement_timeout') AS statement`,
      );
      expect(rows[0]).toEqual({ idle: '15s', lock: '5s', statement: '30s' });
    } finally {
      await client.end();
    }
  });

  it('takes payments, settles them, streams their events live and in pages, and delivers webhooks', async () => {
    const receiver = await startReceiver('ok');
    const { client } = wsClient(stack.apiUrl, alice.token);
    try {
      const endpoint = await gql<{ createWebhookEndpoint: { endpoint: { id: string } | null; errors: unknown[] } }>(
        stack.apiUrl,
        alice.token,
        CREATE_ENDPOINT,
        { input: { accountId: alice.accountId, url: receiver.url } },
      );
      expect(endpoint.data?.createWebhookEndpoint.errors).toEqual([]);
      const live = collect<{ accountEvents: EventNode }>(client, ACCOUNT_EVENTS, { id: alice.accountId });
      // Let the subscription start before the payments, so it sees them live.
      await vi.waitFor(() => expect(stack.api.events.size()).toBeGreaterThan(0));

      // More requests at once than PgBouncer has server connections for one pool: they share them.
      const sent = await Promise.all(
        Array.from({ length: 40 }, () => stack.send(alice.token, paymentInput(alice.accountId, { amount: 100 }))),
      );
      expect(sent.flatMap((r) => r.errors)).toEqual([]);
      // Now, while every pool is busy: an idle pool closes its connections after a while.
      await noteClients();
      const ids = sent.map((r) => r.payment?.id ?? 'missing');
      // A retry of one of them replays it: idempotency holds through the pooler.
      const first = paymentInput(alice.accountId, { amount: 100 });
      const once = await stack.send(alice.token, first);
      const again = await stack.send(alice.token, first);
      expect(again.payment?.id).toBe(once.payment?.id);
      ids.push(once.payment?.id ?? 'missing');

      // One subscription follows a payment to COMPLETED.
      const followed = collect<PaymentUpdate>(client, PAYMENT_UPDATED, { id: ids[0] });
      await followed.done;
      expect(followed.values.at(-1)?.paymentUpdated.status).toBe('COMPLETED');

      await vi.waitFor(
        async () => expect(await stack.db.payment.count({ where: { id: { in: ids }, status: 'COMPLETED' } })).toBe(ids.length),
        {
          timeout: 30_000,
          interval: 100,
        },
      );

      // Live: created (PENDING) and COMPLETED for each, each once, in order per payment.
      const expected = ids.length * 2;
      const values = await live.until((v) => v.length >= expected);
      expect(values).toHaveLength(expected);
      expect(new Set(values.map((v) => v.accountEvents.id)).size).toBe(expected);
      for (const id of ids) {
        expect(values.filter((v) => v.accountEvents.paymentId === id).map((v) => v.accountEvents.status)).toEqual(['PENDING', 'COMPLETED']);
      }

      // Paged: the same events, in the same order.
      const paged: EventNode[] = [];
      let after: string | null = null;
      for (;;) {
        const page: Awaited<ReturnType<typeof gql<PagedEvents>>> = await gql<PagedEvents>(stack.apiUrl, alice.token, PAYMENT_EVENTS, {
          id: alice.accountId,
          after,
        });
        const data = page.data?.paymentEvents;
        if (!data) throw new Error(JSON.stringify(page));
        paged.push(...data.edges.map((e) => e.node));
        if (!data.pageInfo.hasNextPage) break;
        after = data.pageInfo.endCursor;
      }
      expect(paged.map((e) => e.id)).toEqual(values.map((v) => v.accountEvents.id));

      // Webhooks: every event delivered.
      await vi.waitFor(() => expect(receiver.delivered().size).toBe(expected), { timeout: 30_000, interval: 100 });
      expect(receiver.delivered()).toEqual(new Set(paged.map((e) => e.id)));
      live.unsubscribe();
    } finally {
      await client.dispose();
      await receiver.close();
    }
    expect(stack.errorLogs).toEqual([]);
    // Every pool of both processes is a client of PgBouncer (its address is all they were given).
    await noteClients();
    expect([...clientsSeen]).toEqual(
      expect.arrayContaining(['payments-api', 'payments-events', 'payments-queue', 'payments-ratelimit', 'payments-worker']),
    );
  });
});

interface PagedEvents {
  paymentEvents: { edges: Array<{ node: EventNode }>; pageInfo: { hasNextPage: boolean; endCursor: string | null } };
}

import { type Client, createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { encodeCursor, START } from '../../src/events/cursor.ts';

/**
 * A client of `accountEvents` as an integrator would write one: it remembers the id of the last
 * event it saw, and whenever its connection ends (an API process killed, PostgreSQL restarting)
 * it subscribes again, to the next API process, after that id. What it received must be the
 * account's stream exactly: every event once, in order.
 */
export interface EventFollower {
  /** Event ids in the order received. */
  readonly seen: string[];
  readonly reconnects: number;
  stop(): Promise<void>;
}

const ACCOUNT_EVENTS = 'subscription($id: ID!, $after: String) { accountEvents(accountId: $id, after: $after) { id } }';

export function followAccountEvents(options: { urls: string[]; token: string; accountId: string }): EventFollower {
  const seen: string[] = [];
  let reconnects = 0;
  let stopped = false;
  let client: Client | null = null;

  const once = (url: string) =>
    new Promise<void>((resolve) => {
      const c = createClient({
        url: url.replace(/^http/, 'ws'),
        webSocketImpl: WebSocket,
        connectionParams: { authorization: `Bearer ${options.token}` },
        retryAttempts: 0,
        lazy: true,
        on: { closed: () => resolve() },
      });
      client = c;
      c.subscribe<{ accountEvents: { id: string } }>(
        { query: ACCOUNT_EVENTS, variables: { id: options.accountId, after: seen.at(-1) ?? encodeCursor(START) } },
        {
          next: (result) => {
            const id = result.data?.accountEvents.id;
            if (id) seen.push(id);
          },
          error: () => resolve(),
          complete: () => resolve(),
        },
      );
    });

  const running = (async () => {
    for (let n = 0; !stopped; n++) {
      await once(options.urls[n % options.urls.length] ?? '');
      await (client as Client | null)?.dispose();
      if (stopped) return;
      reconnects++;
      await new Promise((r) => setTimeout(r, 200));
    }
  })();

  return {
    seen,
    get reconnects() {
      return reconnects;
    },
    async stop() {
      stopped = true;
      await (client as Client | null)?.dispose();
      await running;
    },
  };
}

/** Every event id of the account, oldest first, read page by page with `paymentEvents`. */
export async function accountEventIds(url: string, token: string, accountId: string): Promise<string[]> {
  const ids: string[] = [];
  let after: string | null = null;
  for (;;) {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({
        query:
          'query($id: ID!, $after: String) { paymentEvents(accountId: $id, after: $after, first: 500) { edges { cursor } pageInfo { hasNextPage endCursor } } }',
        variables: { id: accountId, after },
      }),
    });
    const body = (await response.json()) as {
      data?: { paymentEvents: { edges: Array<{ cursor: string }>; pageInfo: { hasNextPage: boolean; endCursor: string | null } } };
      errors?: unknown;
    };
    if (!body.data) throw new Error(`paymentEvents failed: ${JSON.stringify(body.errors)}`);
    ids.push(...body.data.paymentEvents.edges.map((e) => e.cursor));
    if (!body.data.paymentEvents.pageInfo.hasNextPage) return ids;
    after = body.data.paymentEvents.pageInfo.endCursor;
  }
}

/** What is wrong with what a follower received, against the stream itself; empty when exact. */
export function compareStreams(received: string[], truth: string[]): string[] {
  const problems: string[] = [];
  const duplicates = received.length - new Set(received).size;
  if (duplicates > 0) problems.push(`${duplicates} events received twice`);
  const missing = truth.filter((id) => !received.includes(id));
  if (missing.length > 0) problems.push(`${missing.length} events never received (first ${missing[0]})`);
  const sorted = [...received].sort();
  if (sorted.some((id, i) => id !== received[i])) problems.push('events received out of order');
  return problems;
}

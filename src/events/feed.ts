import pg from 'pg';
import { connectionOptions, type DatabaseSession, UNBOUNDED_SESSION } from '../db/connection.ts';
import type { Payment, PrismaClient, Sql } from '../db/prisma.ts';
import type { Logger } from '../logger.ts';
import type { EventPosition } from './cursor.ts';
import { currentHorizon, readEvents, type StoredEvent, snapshotBounds } from './store.ts';

/**
 * The payment event feed of one API process: a single tail of the durable event stream, fanned
 * out in memory to every live subscription of the process.
 *
 * One dedicated connection polls "events after my position, below the horizon" (store.ts) every
 * `pollIntervalMs`, at once again while pages come back full, and at once when `wake()` is called
 * (this process just committed a change). The position lives in memory: when the connection is
 * lost, hangs, or the database restarts, the next poll on a new connection carries on from it,
 * so nothing is missed and nothing is delivered twice. No NOTIFY is involved anywhere.
 *
 * Each event's payment is read at most once per process (`payment()`), shared by every listener.
 */
export interface FeedEvent extends StoredEvent {
  /** The payment as it is now: read once for all listeners of this process. */
  payment(): Promise<Payment>;
}

export type FeedListener = (events: FeedEvent[]) => void;

export interface EventFeed {
  /** What the feed has delivered up to: a listener added now receives every event after it. */
  position(): EventPosition;
  /** Listens to one account's or one payment's events; returns the unsubscribe function. */
  subscribe(key: { accountId: string } | { paymentId: string }, listener: FeedListener): () => void;
  /** Poll now rather than at the next interval (a change was just committed here). */
  wake(): void;
  /** True while polls succeed: false when the connection is lost or hangs. */
  isHealthy(): boolean;
  /**
   * How old the feed's position is: it has delivered every event of every transaction that began
   * more than this many seconds ago. Grows while the horizon is held back (a frozen or forgotten
   * transaction anywhere on the cluster), while polls fail, and while the feed is behind.
   */
  positionAgeSeconds(): number;
  /** Listeners registered (for metrics and tests). */
  size(): number;
  stop(): Promise<void>;
}

export interface EventFeedOptions {
  databaseUrl: string;
  prisma: PrismaClient;
  logger: Logger;
  pollIntervalMs: number;
  /** A poll that takes longer is abandoned and its connection replaced (a silent network drop). */
  queryTimeoutMs: number;
  /** How the feed's connection is made (config.database); a direct, unbounded one when omitted. */
  session?: DatabaseSession;
  batchSize?: number;
}

/** Loads the payments of a batch's events in one query, the first time any of them is asked for. */
export function sharedPaymentLoader(prisma: PrismaClient, paymentIds: Iterable<string>): (id: string) => Promise<Payment> {
  const ids = [...new Set(paymentIds)];
  let loaded: Promise<Map<string, Payment>> | null = null;
  return async (id) => {
    loaded ??= prisma.payment.findMany({ where: { id: { in: ids } } }).then((rows) => new Map(rows.map((p) => [p.id, p])));
    const payment = (await loaded).get(id);
    if (!payment) throw new Error(`payment ${id} of an event was not found`);
    return payment;
  };
}

/** The events with their payments, read in one query when first asked for. */
export function withPayments(prisma: PrismaClient, events: StoredEvent[]): FeedEvent[] {
  const load = sharedPaymentLoader(
    prisma,
    events.map((e) => e.paymentId),
  );
  return events.map((e) => ({ ...e, payment: () => load(e.paymentId) }));
}

/** How often the feed samples the snapshot for its position's age. */
const POSITION_SAMPLE_MS = 1_000;

export async function startEventFeed(options: EventFeedOptions): Promise<EventFeed> {
  const { logger, prisma } = options;
  const session = options.session ?? UNBOUNDED_SESSION;
  const batchSize = options.batchSize ?? 1_000;
  const byAccount = new Map<string, Set<FeedListener>>();
  const byPayment = new Map<string, Set<FeedListener>>();
  let client: pg.Client | null = null;
  let stopped = false;
  let lastOkAt = Date.now();
  let wakeUp: (() => void) | null = null;
  let wakeRequested = false;

  async function connection(): Promise<pg.Client> {
    if (client) return client;
    const c = new pg.Client({
      connectionString: options.databaseUrl,
      // A dead peer is found by TCP keepalive, and a hung query by the client-side timeout. The
      // server-side statement timeout is the poll's own on a direct connection; through a pooler
      // the startup packet may carry nothing of the kind, and the role's settings apply.
      ...connectionOptions(session, { applicationName: 'payments-events', statementMs: options.queryTimeoutMs }),
      query_timeout: options.queryTimeoutMs,
      connectionTimeoutMillis: Math.min(session.connectTimeoutMs, options.queryTimeoutMs),
    });
    c.on('error', (error) => drop(c, error));
    try {
      await c.connect();
    } catch (error) {
      drop(c, error);
      throw error;
    }
    client = c;
    return c;
  }

  function drop(c: pg.Client, error: unknown): void {
    if (client === c) client = null;
    // end() waits for the server's goodbye, which a hung network never sends: cut the socket.
    c.connection.stream.destroy();
    c.end().catch(() => undefined);
    if (!stopped) logger.warn({ err: error }, 'event feed connection lost; reconnecting');
  }

  const sql: Sql = async <T>(text: string, params: unknown[]) => {
    const c = await connection();
    try {
      return (await c.query(text, params)).rows as T[];
    } catch (error) {
      drop(c, error);
      throw error;
    }
  };

  let position = await currentHorizon(sql);

  function fanOut(events: StoredEvent[]): void {
    const listenersOf = new Map<StoredEvent, Set<FeedListener>>();
    for (const event of events) {
      const listeners = new Set([...(byAccount.get(event.accountId) ?? []), ...(byPayment.get(event.paymentId) ?? [])]);
      if (listeners.size > 0) listenersOf.set(event, listeners);
    }
    if (listenersOf.size === 0) return;
    // One read of the payments for every listener of this process.
    const deliveries = new Map<FeedListener, FeedEvent[]>();
    const delivered = [...listenersOf];
    withPayments(
      prisma,
      delivered.map(([event]) => event),
    ).forEach((event, i) => {
      for (const listener of delivered[i]?.[1] ?? []) {
        const list = deliveries.get(listener);
        if (list) list.push(event);
        else deliveries.set(listener, [event]);
      }
    });
    for (const [listener, list] of deliveries) {
      try {
        listener(list);
      } catch (error) {
        logger.error({ err: error }, 'event listener failed');
      }
    }
  }

  // The position's age: samples of (when, the snapshot's xmax then). Once every xid below a
  // sample's xmax is delivered, everything that began before that moment is delivered.
  const startedAt = Date.now();
  let samples: Array<{ at: number; xmax: bigint }> = [];
  let deliveredBefore: number | null = null;
  let lastSampleAt = 0;
  const covered = (xid: bigint) => {
    const done = samples.filter((s) => s.xmax <= xid);
    const latest = done.at(-1);
    if (latest) deliveredBefore = latest.at;
    samples = samples.filter((s) => s.xmax > xid);
  };

  async function pollOnce(): Promise<boolean> {
    // At most once a second: one more round trip, for the position-age gauge.
    const now = Date.now();
    const sample = now - lastSampleAt >= POSITION_SAMPLE_MS ? await snapshotBounds(sql) : null;
    if (sample) {
      lastSampleAt = now;
      samples.push({ at: now, xmax: sample.xmax });
    }
    const events = await readEvents(sql, { after: position, limit: batchSize });
    lastOkAt = Date.now();
    const last = events.at(-1);
    // A short page: everything below the horizon sampled before it is delivered. A full one:
    // everything below the last event's transaction.
    if (events.length < batchSize) {
      if (sample) covered(sample.xmin);
    } else if (last) covered(last.position.xid);
    if (!last) return false;
    // Advance and fan out in one synchronous step: a listener added between two polls receives
    // exactly the events after the position it was given.
    position = last.position;
    fanOut(events);
    return events.length === batchSize;
  }

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      if (wakeRequested) return resolve();
      const timer = setTimeout(resolve, ms);
      wakeUp = () => {
        clearTimeout(timer);
        resolve();
      };
    });

  async function run(): Promise<void> {
    let failures = 0;
    while (!stopped) {
      wakeRequested = false;
      let more = false;
      try {
        more = await pollOnce();
        failures = 0;
      } catch (error) {
        failures += 1;
        if (!stopped) logger.warn({ err: error, failures }, 'event feed poll failed');
      }
      if (stopped) return;
      if (!more) await sleep(failures > 0 ? Math.min(options.pollIntervalMs * 2 ** failures, 2_000) : options.pollIntervalMs);
      wakeUp = null;
    }
  }
  const running = run();

  const add = (map: Map<string, Set<FeedListener>>, key: string, listener: FeedListener) => {
    const set = map.get(key) ?? new Set<FeedListener>();
    map.set(key, set);
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) map.delete(key);
    };
  };

  // Stale when no poll has succeeded for a whole timeout plus two intervals.
  const staleAfterMs = options.queryTimeoutMs + 2 * options.pollIntervalMs;

  return {
    position: () => position,
    subscribe: (key, listener) => ('accountId' in key ? add(byAccount, key.accountId, listener) : add(byPayment, key.paymentId, listener)),
    wake() {
      wakeRequested = true;
      wakeUp?.();
    },
    isHealthy: () => !stopped && Date.now() - lastOkAt <= staleAfterMs,
    positionAgeSeconds: () => (Date.now() - (deliveredBefore ?? startedAt)) / 1000,
    size: () => [...byAccount.values(), ...byPayment.values()].reduce((n, s) => n + s.size, 0),
    async stop() {
      stopped = true;
      wakeUp?.();
      await running;
      const c = client;
      client = null;
      await c?.end().catch(() => undefined);
    },
  };
}

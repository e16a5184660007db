import pg from 'pg';
import { z } from 'zod';
import type { Logger } from '../logger.ts';

/**
 * Payment events across processes. Whoever changes a payment calls `pg_notify(PAYMENT_EVENTS, ...)`
 * in the same transaction (see payments/repository.ts), so an event exists exactly when the change
 * committed. Events carry ids only; listeners re-read the state.
 *
 * Each API process holds one LISTEN connection and fans events out in memory. When that connection
 * drops it reconnects, then asks every listener to resync (re-read what it watches), because
 * events sent while it was away are gone.
 */
export const PAYMENT_EVENTS = 'payment_events';

const eventSchema = z.object({ paymentId: z.uuid(), accountId: z.uuid() });
export type PaymentEvent = z.infer<typeof eventSchema>;

export interface PaymentEventListener {
  onEvent(event: PaymentEvent): void;
  /** The LISTEN connection was lost and is back; events since `since` may have been missed. */
  onResync(since: Date): void;
}

export interface PaymentEventHub {
  /** Listens to events of one payment or one account; returns the unsubscribe function. */
  subscribe(key: { paymentId: string } | { accountId: string }, listener: PaymentEventListener): () => void;
  isConnected(): boolean;
  /** Listeners currently registered (for metrics and tests). */
  size(): number;
  stop(): Promise<void>;
}

export async function startPaymentEventHub(options: {
  databaseUrl: string;
  logger: Logger;
  /** How often the idle LISTEN connection is checked; a silent drop is noticed within this. */
  heartbeatMs?: number;
  /** First delay before reconnecting; doubles per failed try, up to 2 s. */
  reconnectDelayMs?: number;
}): Promise<PaymentEventHub> {
  const { logger } = options;
  const byPayment = new Map<string, Set<PaymentEventListener>>();
  const byAccount = new Map<string, Set<PaymentEventListener>>();
  let client: pg.Client | null = null;
  let stopped = false;
  let lostAt: Date | null = null;
  let reconnecting: Promise<void> | null = null;

  const fanOut = (map: Map<string, Set<PaymentEventListener>>, key: string, event: PaymentEvent) => {
    for (const listener of map.get(key) ?? []) listener.onEvent(event);
  };

  async function connect(): Promise<void> {
    const c = new pg.Client({ connectionString: options.databaseUrl, application_name: 'payments-listen' });
    c.on('notification', (message) => {
      if (message.channel !== PAYMENT_EVENTS || !message.payload) return;
      const parsed = eventSchema.safeParse(safeJson(message.payload));
      if (!parsed.success) {
        logger.warn({ payload: message.payload }, 'ignored a malformed payment event');
        return;
      }
      fanOut(byPayment, parsed.data.paymentId, parsed.data);
      fanOut(byAccount, parsed.data.accountId, parsed.data);
    });
    c.on('error', (error) => lost(c, error));
    c.on('end', () => lost(c, new Error('connection ended')));
    await c.connect();
    await c.query(`LISTEN ${PAYMENT_EVENTS}`);
    client = c;
  }

  function lost(c: pg.Client, error: Error) {
    if (client !== c) return;
    client = null;
    lostAt ??= new Date();
    c.removeAllListeners('notification');
    c.end().catch(() => undefined);
    if (stopped) return;
    logger.warn({ err: error }, 'LISTEN connection lost; reconnecting');
    reconnecting ??= reconnect().finally(() => {
      reconnecting = null;
    });
  }

  async function reconnect(): Promise<void> {
    for (let attempt = 0; !stopped; attempt++) {
      await new Promise((r) => setTimeout(r, Math.min((options.reconnectDelayMs ?? 50) * 2 ** attempt, 2_000)));
      if (stopped) return;
      try {
        await connect();
      } catch (error) {
        logger.warn({ err: error, attempt }, 'LISTEN reconnect failed');
        continue;
      }
      const since = lostAt ?? new Date();
      lostAt = null;
      logger.info({ since }, 'LISTEN connection restored; resyncing subscriptions');
      for (const set of [...byPayment.values(), ...byAccount.values()]) {
        for (const listener of set) listener.onResync(since);
      }
      return;
    }
  }

  await connect();

  // A connection can die without an error reaching us (a dropped network path): poke it.
  const heartbeat = setInterval(() => {
    const c = client;
    if (!c) return;
    c.query('SELECT 1').catch((error: unknown) => lost(c, error instanceof Error ? error : new Error(String(error))));
  }, options.heartbeatMs ?? 5_000);
  heartbeat.unref();

  const add = (map: Map<string, Set<PaymentEventListener>>, key: string, listener: PaymentEventListener) => {
    let set = map.get(key);
    if (!set) map.set(key, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) map.delete(key);
    };
  };

  return {
    subscribe(key, listener) {
      return 'paymentId' in key ? add(byPayment, key.paymentId, listener) : add(byAccount, key.accountId, listener);
    },
    isConnected: () => client !== null,
    size: () => [...byPayment.values(), ...byAccount.values()].reduce((n, s) => n + s.size, 0),
    async stop() {
      stopped = true;
      clearInterval(heartbeat);
      const c = client;
      client = null;
      await c?.end().catch(() => undefined);
      await reconnecting;
    },
  };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

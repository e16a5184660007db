import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request a receiver got, as it arrived. */
export interface ReceivedWebhook {
  eventId: string | undefined;
  signature: string | undefined;
  rawBody: string;
  /** What the receiver answered: a status, or null when it never answered. */
  answered: number | null;
  at: number;
}

export type ReceiverMode = 'ok' | 'fail' | 'hang';

/**
 * A webhook receiver on 127.0.0.1 that records every request. `ok` answers 200, `fail` 500,
 * `hang` never answers (until closed).
 */
export async function startReceiver(initial: ReceiverMode = 'ok', options: { delayMs?: number } = {}) {
  const received: ReceivedWebhook[] = [];
  let mode = initial;
  let inFlight = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    inFlight++;
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const record: ReceivedWebhook = {
        eventId: req.headers['payments-event-id'] as string | undefined,
        signature: req.headers['payments-signature'] as string | undefined,
        rawBody: Buffer.concat(chunks).toString('utf8'),
        answered: null,
        at: Date.now(),
      };
      received.push(record);
      if (mode === 'hang') return;
      const status = mode === 'ok' ? 200 : 500;
      setTimeout(() => {
        record.answered = status;
        inFlight--;
        res.writeHead(status).end(status === 200 ? 'thanks' : 'oops');
      }, options.delayMs ?? 0);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hooks`,
    received,
    /** Requests that got no answer yet. */
    inFlight: () => inFlight,
    setMode(next: ReceiverMode) {
      mode = next;
    },
    /** Event ids answered 2xx. */
    delivered: () => new Set(received.filter((r) => r.answered === 200).map((r) => r.eventId)),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export type Receiver = Awaited<ReturnType<typeof startReceiver>>;

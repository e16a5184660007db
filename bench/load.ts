import http from 'node:http';

export interface LoadResult {
  accepted: number;
  acceptedPerSec: number;
  errors: number;
  /** Up to five distinct error messages, to show what failed. */
  errorSamples: string[];
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  elapsedMs: number;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index] ?? NaN;
}

export function summarize(run: { accepted: number; errors: string[]; latencies: number[]; elapsedMs: number }): LoadResult {
  const sorted = Float64Array.from(run.latencies).sort();
  const list = Array.from(sorted);
  return {
    accepted: run.accepted,
    acceptedPerSec: run.accepted / (run.elapsedMs / 1000),
    errors: run.errors.length,
    errorSamples: [...new Set(run.errors)].slice(0, 5),
    p50Ms: percentile(list, 50),
    p95Ms: percentile(list, 95),
    p99Ms: percentile(list, 99),
    elapsedMs: run.elapsedMs,
  };
}

export const SEND_PAYMENT_MUTATION =
  'mutation Send($input: SendPaymentInput!) { sendPayment(input: $input) { payment { id status } errors { code message } } }';

interface SendPaymentResponse {
  data?: { sendPayment?: { payment: { id: string; status: string } | null; errors: { code: string; message: string }[] } } | null;
  errors?: { message: string }[];
}

/** Who sends a request: the token and the account to pay from. */
export interface Sender {
  token: string;
  accountId: string;
}

/** One sendPayment request over keep-alive HTTP: `ok` when the payment came back PENDING with no errors. */
function createSender(url: string, maxSockets: number, keyPrefix: string) {
  const target = new URL(url);
  // Idle sockets are dropped after 4 s, before the server's keep-alive timeout (Node's 5 s) closes
  // them: reusing a socket the server is closing at that moment fails with ECONNRESET, an error of
  // the load generator, not of the service.
  const agent = new http.Agent({ keepAlive: true, maxSockets, timeout: 4_000 });
  let counter = 0;

  const post = (body: string, token: string) =>
    new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request(
        {
          agent,
          hostname: target.hostname,
          port: target.port,
          path: target.pathname,
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(body),
            authorization: `Bearer ${token}`,
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });

  return {
    /** Resolves with null when accepted, or with what went wrong. */
    async send(sender: Sender): Promise<string | null> {
      const input = {
        idempotencyKey: `${keyPrefix}${counter++}`,
        fromAccountId: sender.accountId,
        amount: 1 + Math.floor(Math.random() * 1000),
        recipient: { name: 'Grace Hopper', sortCode: '12-34-56', accountNumber: '12345678' },
        reference: 'Bench',
      };
      const body = JSON.stringify({ query: SEND_PAYMENT_MUTATION, variables: { input } });
      try {
        const { status, text } = await post(body, sender.token);
        const parsed = JSON.parse(text) as SendPaymentResponse;
        const result = parsed.data?.sendPayment;
        if (status === 200 && result?.payment?.status === 'PENDING' && result.errors.length === 0) return null;
        return `HTTP ${status}: ${parsed.errors?.[0]?.message ?? result?.errors[0]?.code ?? text.slice(0, 200)}`;
      } catch (error) {
        return error instanceof Error ? error.message : String(error);
      }
    },
    close: () => agent.destroy(),
  };
}

/**
 * Drives sendPayment over HTTP with `clients` concurrent closed loops (each sends its next request
 * when the previous answer arrives) on keep-alive connections, for `seconds`. A request counts as
 * accepted when the payment comes back PENDING with no errors; everything else is an error.
 * Closed loops find the maximum rate; their latencies hide queueing (see `runOpenLoop`).
 */
export async function runLoad(options: {
  url: string;
  clients: number;
  seconds: number;
  keyPrefix: string;
  pickSender: () => Sender;
}): Promise<LoadResult> {
  const sender = createSender(options.url, options.clients, options.keyPrefix);
  const latencies: number[] = [];
  const errors: string[] = [];
  let accepted = 0;
  const started = performance.now();
  const deadline = started + options.seconds * 1000;
  try {
    await Promise.all(
      Array.from({ length: options.clients }, async () => {
        while (performance.now() < deadline) {
          const t0 = performance.now();
          const error = await sender.send(options.pickSender());
          latencies.push(performance.now() - t0);
          if (error === null) accepted++;
          else errors.push(error);
        }
      }),
    );
  } finally {
    sender.close();
  }
  return summarize({ accepted, errors, latencies, elapsedMs: performance.now() - started });
}

/**
 * Open loop: request i is due at start + i / rate, whatever happened to the earlier ones, and its
 * latency is measured from when it was due, not from when it was sent. A server that falls behind
 * cannot hide its queue (no coordinated omission): requests it could not take in time show up as
 * latency. The rate is what was accepted over the whole time until the last answer.
 */
export async function runOpenLoop(options: {
  url: string;
  rate: number;
  seconds: number;
  keyPrefix: string;
  pickSender: () => Sender;
}): Promise<LoadResult & { offered: number }> {
  const sender = createSender(options.url, 1024, options.keyPrefix);
  const latencies: number[] = [];
  const errors: string[] = [];
  const inFlight: Promise<void>[] = [];
  let accepted = 0;
  const total = Math.round(options.rate * options.seconds);
  const intervalMs = 1000 / options.rate;
  const started = performance.now();
  try {
    let next = 0;
    while (next < total) {
      const now = performance.now();
      // Everything due by now goes out at once (a late timer must not thin the load out).
      while (next < total && started + next * intervalMs <= now) {
        const due = started + next * intervalMs;
        next++;
        inFlight.push(
          sender.send(options.pickSender()).then((error) => {
            latencies.push(performance.now() - due);
            if (error === null) accepted++;
            else errors.push(error);
          }),
        );
      }
      if (next < total) await new Promise((r) => setTimeout(r, Math.max(0, started + next * intervalMs - performance.now())));
    }
    await Promise.all(inFlight);
  } finally {
    sender.close();
  }
  return { ...summarize({ accepted, errors, latencies, elapsedMs: performance.now() - started }), offered: total };
}

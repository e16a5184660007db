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

/**
 * Drives sendPayment over HTTP with `clients` concurrent closed loops (each sends its next request
 * when the previous answer arrives) on keep-alive connections, for `seconds`. A request counts as
 * accepted when the payment comes back PENDING with no errors; everything else is an error.
 */
export async function runLoad(options: {
  url: string;
  clients: number;
  seconds: number;
  keyPrefix: string;
  pickSender: () => Sender;
}): Promise<LoadResult> {
  const target = new URL(options.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.clients });
  const latencies: number[] = [];
  const errors: string[] = [];
  let accepted = 0;
  let counter = 0;
  const started = performance.now();
  const deadline = started + options.seconds * 1000;

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

  try {
    await Promise.all(
      Array.from({ length: options.clients }, async () => {
        while (performance.now() < deadline) {
          const sender = options.pickSender();
          const input = {
            idempotencyKey: `${options.keyPrefix}${counter++}`,
            fromAccountId: sender.accountId,
            amount: 1 + Math.floor(Math.random() * 1000),
            recipient: { name: 'Grace Hopper', sortCode: '12-34-56', accountNumber: '12345678' },
            reference: 'Bench',
          };
          const body = JSON.stringify({ query: SEND_PAYMENT_MUTATION, variables: { input } });
          const t0 = performance.now();
          try {
            const { status, text } = await post(body, sender.token);
            latencies.push(performance.now() - t0);
            const parsed = JSON.parse(text) as SendPaymentResponse;
            const result = parsed.data?.sendPayment;
            if (status === 200 && result?.payment?.status === 'PENDING' && result.errors.length === 0) {
              accepted++;
            } else {
              errors.push(
                `HTTP ${status}: ${parsed.errors?.[0]?.message ?? result?.errors[0]?.code ?? text.slice(0, 200)}`,
              );
            }
          } catch (error) {
            latencies.push(performance.now() - t0);
            errors.push(error instanceof Error ? error.message : String(error));
          }
        }
      }),
    );
  } finally {
    agent.destroy();
  }
  return summarize({ accepted, errors, latencies, elapsedMs: performance.now() - started });
}

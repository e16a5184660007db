import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import type { Logger } from '../logger.ts';

/**
 * An emulator of the outside payment provider, over real HTTP, with fault injection.
 * State is in memory: it models the provider, not a bank.
 *
 *   POST /v1/payments                     201 new, 200 replay, 422 same key other body, 400 invalid
 *   GET  /v1/payments/:idempotencyKey     200 record, 404 unknown, 410 voided
 *   POST /v1/payments/:idempotencyKey/void 200 voided (never accepted afterwards), 409 already accepted
 *   PUT  /admin/faults  GET /admin/faults  GET /admin/payments  GET /admin/requests
 *
 * Every request needs `x-api-key`. A recipient sort code of 000000 is always rejected (400).
 */

export const faultsSchema = z
  .object({
    errorRate: z.number().min(0).max(1).default(0),
    rateLimitRate: z.number().min(0).max(1).default(0),
    timeoutRate: z.number().min(0).max(1).default(0),
    acceptThenFailRate: z.number().min(0).max(1).default(0),
    latencyMs: z.number().int().min(0).max(60_000).default(0),
    /** Extension: the Retry-After (seconds) sent with an injected 429. */
    retryAfterSeconds: z.number().int().min(0).max(3600).default(1),
    /** Extension: the next N `POST /v1/payments` answer 500 before recording anything. */
    failNextCreates: z.number().int().min(0).default(0),
    /**
     * Extension: requests for these payments (idempotency keys) are held, unanswered, until the key
     * is taken off the list ("*" holds every payment request): a call that hangs, for as long as a
     * test needs it to.
     */
    holdKeys: z.array(z.string()).default([]),
  })
  .strict();
export type Faults = z.output<typeof faultsSchema>;

const party = z.object({
  name: z.string().trim().min(1).max(140),
  sortCode: z.string().regex(/^\d{6}$/),
  accountNumber: z.string().regex(/^\d{8}$/),
});
const paymentRequest = z.object({
  idempotencyKey: z.string().min(1).max(255),
  amount: z.number().int().positive(),
  currency: z.literal('GBP'),
  sender: party,
  recipient: party,
  reference: z.string().max(18).nullish(),
});
type PaymentRequest = z.output<typeof paymentRequest>;

interface StoredPayment {
  id: string;
  idempotencyKey: string;
  status: 'accepted';
  request: PaymentRequest;
  body: string;
  acceptedAt: string;
  /** How many POSTs for this key reached the emulator (1 for a payment sent exactly once). */
  createRequests: number;
}

export interface EmulatorOptions {
  apiKey: string;
  port: number;
  host?: string;
  faults?: unknown;
  logger?: Logger;
  /** Random source for fault injection, replaceable for reproducible runs. */
  random?: () => number;
}

/** What reached the emulator: payment requests in progress now and at most, and per payment. */
export interface RequestCounts {
  inFlight: number;
  maxInFlight: number;
  byKey: Record<string, { get: number; create: number; void: number }>;
}

export interface RunningEmulator {
  url: string;
  server: Server;
  setFaults(faults: Partial<Faults>): Faults;
  /** The counts behind GET /admin/requests. */
  requests(): RequestCounts;
  close(): Promise<void>;
}

const HANG_MS = 120_000;

export async function startEmulator(options: EmulatorOptions): Promise<RunningEmulator> {
  const random = options.random ?? Math.random;
  const payments = new Map<string, StoredPayment>();
  const voided = new Set<string>();
  let faults: Faults = faultsSchema.parse(options.faults ?? {});
  let sequence = 0;
  const counts: RequestCounts = { inFlight: 0, maxInFlight: 0, byKey: {} };
  // Held requests wait for the next change of faults, then look again at whether they are held.
  let released: { promise: Promise<void>; resolve: () => void } = Promise.withResolvers<void>();
  const setFaultsTo = (next: Faults) => {
    faults = next;
    released.resolve();
    released = Promise.withResolvers<void>();
  };
  const isHeld = (key: string) => faults.holdKeys.includes(key) || faults.holdKeys.includes('*');
  async function holdWhileListed(key: string): Promise<void> {
    while (isHeld(key)) await released.promise;
  }
  const count = (key: string, kind: 'get' | 'create' | 'void') => {
    const entry = (counts.byKey[key] ??= { get: 0, create: 0, void: 0 });
    entry[kind] += 1;
  };

  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    if (res.destroyed) return;
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  const error = (res: ServerResponse, status: number, code: string, message: string) =>
    send(res, status, { error: { code, message } });
  const publicRecord = (p: StoredPayment) => ({ id: p.id, idempotencyKey: p.idempotencyKey, status: p.status });

  /** Applies the configured faults; true when the request was answered (or swallowed) by one. */
  async function injectFault(res: ServerResponse, isCreate = false): Promise<boolean> {
    if (faults.latencyMs > 0) await new Promise((r) => setTimeout(r, faults.latencyMs));
    if (isCreate && faults.failNextCreates > 0) {
      faults = { ...faults, failNextCreates: faults.failNextCreates - 1 };
      error(res, 500, 'INJECTED_ERROR', 'injected failure');
      return true;
    }
    if (random() < faults.timeoutRate) {
      // Never answer; the client's timeout fires first. The socket is closed eventually.
      setTimeout(() => res.destroy(), HANG_MS).unref();
      return true;
    }
    if (random() < faults.rateLimitRate) {
      send(res, 429, { error: { code: 'RATE_LIMITED', message: 'slow down' } }, { 'retry-after': String(faults.retryAfterSeconds) });
      return true;
    }
    if (random() < faults.errorRate) {
      error(res, 500, 'INJECTED_ERROR', 'injected failure');
      return true;
    }
    return false;
  }

  function create(res: ServerResponse, raw: string) {
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch {
      return error(res, 400, 'MALFORMED_JSON', 'body is not JSON');
    }
    const parsed = paymentRequest.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return error(res, 400, 'INVALID_PAYMENT', `${issue?.path.join('.') ?? 'body'}: ${issue?.message ?? 'invalid'}`);
    }
    const request = parsed.data;
    const key = request.idempotencyKey;
    const body = JSON.stringify(request);
    if (voided.has(key)) return error(res, 410, 'VOIDED', 'this payment was voided');
    const existing = payments.get(key);
    if (existing) {
      existing.createRequests += 1;
      if (existing.body !== body) return error(res, 422, 'IDEMPOTENCY_KEY_REUSED', 'key used with another payment');
      return send(res, 200, publicRecord(existing));
    }
    if (request.recipient.sortCode === '000000') {
      return error(res, 400, 'RECIPIENT_REJECTED', 'the recipient bank rejected the payment');
    }
    const record: StoredPayment = {
      id: `pp_${(++sequence).toString().padStart(8, '0')}`,
      idempotencyKey: key,
      status: 'accepted',
      request,
      body,
      acceptedAt: new Date().toISOString(),
      createRequests: 1,
    };
    payments.set(key, record);
    if (random() < faults.acceptThenFailRate) return error(res, 500, 'INJECTED_ERROR', 'accepted, then failed');
    return send(res, 201, publicRecord(record));
  }

  /** The idempotency key of a create request, for counting and holding ("" when unreadable). */
  const keyOf = (raw: string): string => {
    try {
      const body: unknown = JSON.parse(raw);
      return typeof body === 'object' && body !== null && 'idempotencyKey' in body && typeof body.idempotencyKey === 'string' ? body.idempotencyKey : '';
    } catch {
      return '';
    }
  };

  async function route(req: IncomingMessage, res: ServerResponse, raw: string) {
    if (req.headers['x-api-key'] !== options.apiKey) return error(res, 401, 'UNAUTHORIZED', 'missing or wrong x-api-key');
    const url = new URL(req.url ?? '/', 'http://emulator');
    const path = url.pathname;
    const method = req.method ?? 'GET';

    if (path === '/admin/faults' && method === 'GET') return send(res, 200, faults);
    if (path === '/admin/faults' && method === 'PUT') {
      try {
        setFaultsTo(faultsSchema.parse(JSON.parse(raw || '{}')));
      } catch (e) {
        return error(res, 400, 'INVALID_FAULTS', e instanceof Error ? e.message : 'invalid');
      }
      return send(res, 200, faults);
    }
    if (path === '/admin/requests' && method === 'GET') return send(res, 200, counts);
    if (path === '/admin/payments' && method === 'GET') {
      return send(
        res,
        200,
        [...payments.values()].map((p) => ({ ...publicRecord(p), ...p.request, acceptedAt: p.acceptedAt, createRequests: p.createRequests })),
      );
    }

    if (path === '/v1/payments' && method === 'POST') {
      const key = keyOf(raw);
      count(key, 'create');
      await holdWhileListed(key);
      if (await injectFault(res, true)) return;
      return create(res, raw);
    }
    const match = /^\/v1\/payments\/([^/]+)(\/void)?$/.exec(path);
    if (match) {
      const key = decodeURIComponent(match[1] ?? '');
      count(key, match[2] ? 'void' : 'get');
      await holdWhileListed(key);
      if (method === 'GET' && !match[2]) {
        if (await injectFault(res)) return;
        if (voided.has(key)) return error(res, 410, 'VOIDED', 'this payment was voided');
        const found = payments.get(key);
        return found ? send(res, 200, publicRecord(found)) : error(res, 404, 'NOT_FOUND', 'no such payment');
      }
      if (method === 'POST' && match[2]) {
        if (await injectFault(res)) return;
        const found = payments.get(key);
        if (found) return send(res, 409, publicRecord(found));
        voided.add(key);
        return send(res, 200, { idempotencyKey: key, status: 'voided' });
      }
    }
    return error(res, 404, 'NOT_FOUND', `no route for ${method} ${path}`);
  }

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > 64 * 1024) {
        error(res, 413, 'TOO_LARGE', 'body too large');
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      const payments = req.url?.startsWith('/v1/') ?? false;
      if (payments) counts.maxInFlight = Math.max(counts.maxInFlight, ++counts.inFlight);
      route(req, res, Buffer.concat(chunks).toString('utf8'))
        .catch((e: unknown) => {
          options.logger?.error({ err: e }, 'emulator request failed');
          error(res, 500, 'INTERNAL', 'emulator error');
        })
        .finally(() => {
          if (payments) counts.inFlight -= 1;
        });
    });
  });
  // Keep-alive sockets would hold close() open for their idle timeout.
  server.keepAliveTimeout = 5_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${options.host ?? '127.0.0.1'}:${port}`;
  options.logger?.info({ url }, 'provider emulator listening');

  return {
    url,
    server,
    setFaults(next) {
      setFaultsTo(faultsSchema.parse({ ...faults, ...next }));
      return faults;
    },
    requests: () => counts,
    close: () =>
      new Promise<void>((resolve) => {
        setFaultsTo({ ...faults, holdKeys: [] });
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

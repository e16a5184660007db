import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import type { Logger } from '../logger.ts';
import { HELD_NAMES, heldNameKey, matchPayeeName } from './payee-names.ts';

/**
 * An emulator of the outside payment provider, over real HTTP, with fault injection.
 * State is in memory: it models the provider, not a bank.
 *
 *   POST /v1/payments                     201 new, 200 replay, 422 same key other body, 400 invalid
 *   GET  /v1/payments/:idempotencyKey     200 record, 404 unknown, 410 voided
 *   POST /v1/payments/:idempotencyKey/void 200 voided (never accepted afterwards), 409 already accepted
 *   PUT  /admin/faults  GET /admin/faults  GET /admin/payments
 *   POST /v1/payee-checks {name, sortCode, accountNumber}  200 {result, matchedName} (payee-names.ts);
 *        503 {result: "UNAVAILABLE"} under an injected error
 *   PUT  /admin/payee-names {sortCode, accountNumber, name}  the name held for an account
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
const payeeCheckRequest = party;

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

export interface RunningEmulator {
  url: string;
  server: Server;
  setFaults(faults: Partial<Faults>): Faults;
  close(): Promise<void>;
}

const HANG_MS = 120_000;

function parseJson(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return undefined;
  }
}

export async function startEmulator(options: EmulatorOptions): Promise<RunningEmulator> {
  const random = options.random ?? Math.random;
  const payments = new Map<string, StoredPayment>();
  const voided = new Set<string>();
  let faults: Faults = faultsSchema.parse(options.faults ?? {});
  const heldNames = new Map(Object.entries(HELD_NAMES));
  let sequence = 0;

  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    if (res.destroyed) return;
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  const error = (res: ServerResponse, status: number, code: string, message: string) =>
    send(res, status, { error: { code, message } });
  const publicRecord = (p: StoredPayment) => ({ id: p.id, idempotencyKey: p.idempotencyKey, status: p.status });

  /** Applies the configured faults; true when the request was answered (or swallowed) by one. */
  async function injectFault(res: ServerResponse, isCreate = false, errorAnswer?: { status: number; body: unknown }): Promise<boolean> {
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
      if (errorAnswer) send(res, errorAnswer.status, errorAnswer.body);
      else error(res, 500, 'INJECTED_ERROR', 'injected failure');
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

  async function route(req: IncomingMessage, res: ServerResponse, raw: string) {
    if (req.headers['x-api-key'] !== options.apiKey) return error(res, 401, 'UNAUTHORIZED', 'missing or wrong x-api-key');
    const url = new URL(req.url ?? '/', 'http://emulator');
    const path = url.pathname;
    const method = req.method ?? 'GET';

    if (path === '/admin/faults' && method === 'GET') return send(res, 200, faults);
    if (path === '/admin/faults' && method === 'PUT') {
      try {
        faults = faultsSchema.parse(JSON.parse(raw || '{}'));
      } catch (e) {
        return error(res, 400, 'INVALID_FAULTS', e instanceof Error ? e.message : 'invalid');
      }
      return send(res, 200, faults);
    }
    if (path === '/admin/payments' && method === 'GET') {
      return send(
        res,
        200,
        [...payments.values()].map((p) => ({ ...publicRecord(p), ...p.request, acceptedAt: p.acceptedAt, createRequests: p.createRequests })),
      );
    }

    if (path === '/admin/payee-names' && method === 'PUT') {
      const parsed = payeeCheckRequest.safeParse(parseJson(raw));
      if (!parsed.success) return error(res, 400, 'INVALID_PAYEE', parsed.error.issues[0]?.message ?? 'invalid');
      heldNames.set(heldNameKey(parsed.data.sortCode, parsed.data.accountNumber), parsed.data.name);
      return send(res, 200, parsed.data);
    }
    if (path === '/v1/payee-checks' && method === 'POST') {
      if (await injectFault(res, false, { status: 503, body: { result: 'UNAVAILABLE', matchedName: null } })) return;
      const parsed = payeeCheckRequest.safeParse(parseJson(raw));
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        return error(res, 400, 'INVALID_PAYEE_CHECK', `${issue?.path.join('.') ?? 'body'}: ${issue?.message ?? 'invalid'}`);
      }
      const { name, sortCode, accountNumber } = parsed.data;
      return send(res, 200, matchPayeeName(name, heldNames.get(heldNameKey(sortCode, accountNumber)) ?? null));
    }

    if (path === '/v1/payments' && method === 'POST') {
      if (await injectFault(res, true)) return;
      return create(res, raw);
    }
    const match = /^\/v1\/payments\/([^/]+)(\/void)?$/.exec(path);
    if (match) {
      const key = decodeURIComponent(match[1] ?? '');
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
      route(req, res, Buffer.concat(chunks).toString('utf8')).catch((e: unknown) => {
        options.logger?.error({ err: e }, 'emulator request failed');
        error(res, 500, 'INTERNAL', 'emulator error');
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
      faults = faultsSchema.parse({ ...faults, ...next });
      return faults;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

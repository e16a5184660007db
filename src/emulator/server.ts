import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import { isCalendarDate, londonToday } from '../calendar.ts';
import type { Logger } from '../logger.ts';
import { ACCOUNT_HOLDER_NAMES, accountKey, matchPayeeName } from './payee-names.ts';

/**
 * An emulator of the outside payment provider, over real HTTP, with fault injection.
 * State is in memory: it models the provider, not a bank.
 *
 *   POST /v1/payments                     201 new, 200 replay, 422 same key other body, 400 invalid
 *   GET  /v1/payments/:idempotencyKey     200 record, 404 unknown, 410 voided
 *   POST /v1/payments/:idempotencyKey/void 200 voided (never accepted afterwards), 409 already accepted
 *   GET  /v1/events?after=&limit=          returns and inbound credits, oldest first: {events, next}
 *   POST /v1/credits/:id/return            200 sends an inbound credit back (idempotent), 404 unknown
 *   PUT  /admin/faults  GET /admin/faults  GET /admin/payments
 *   POST /v1/payee-checks {name, sortCode, accountNumber}  200 {result, matchedName} (payee-names.ts);
 *        503 {result: "UNAVAILABLE"} under an injected error
 *   PUT  /admin/payee-names {sortCode, accountNumber, name}  sets an account holder's name
 *   POST /admin/payments/:key/return       returns an accepted payment (event payment.returned)
 *   POST /admin/credits  GET /admin/credits queues an inbound credit (event credit.received) / lists them
 *   POST /admin/events {event}              queues any JSON as the feed's next event, as is (a malformed one, for tests)
 *   GET  /admin/requests                    request counts per payment, and how many were in flight at most
 *
 * Every request needs `x-api-key`. A recipient sort code of 000000 is always rejected (400).
 * With the `returnRate` fault, that share of newly accepted payments is returned `returnDelayMs` later.
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
    /** The share of newly accepted payments that the recipient's bank returns a little later. */
    returnRate: z.number().min(0).max(1).default(0),
    /** Extension: how much later (ms) a payment picked by `returnRate` is returned. */
    returnDelayMs: z.number().int().min(0).max(600_000).default(500),
    /**
     * Extension: requests for these payments (idempotency keys) stall, unanswered, until the key
     * is taken off the list ("*" stalls every payment request): a call that hangs, for as long as a
     * test needs it to.
     */
    stallKeys: z.array(z.string()).default([]),
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

const creditRequest = z.object({
  amount: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  currency: z.string().length(3).default('GBP'),
  recipient: z.object({ sortCode: z.string().min(1).max(20), accountNumber: z.string().min(1).max(20) }),
  sender: party,
  reference: z
    .string()
    .max(18)
    .nullish()
    .transform((r) => r ?? null),
});
type CreditRequest = z.output<typeof creditRequest>;

interface StoredCredit extends CreditRequest {
  id: string;
  receivedAt: string;
  /** Set once the bank sent it back (POST /v1/credits/:id/return). */
  returned: { reason: string; at: string; requests: number } | null;
}

/**
 * One entry of the feed. `cursor` orders the feed (as strings too) and is what `next` hands out;
 * the event's own `id` is the return's id or, for a credit, the credit's id (for its return).
 */
interface FeedEvent {
  cursor: string;
  body:
    | { id: string; type: 'payment.returned'; idempotencyKey: string; returnCode: string }
    | ({ id: string; type: 'credit.received' } & CreditRequest)
    // Queued as is through POST /admin/events: a feed that sends what the contract does not promise.
    | { raw: unknown };
}

const MAX_EVENTS_PAGE = 500;

/** One line of the daily settlement report. */
interface SettlementItem {
  type: 'payment' | 'return' | 'credit';
  reference: string;
  amount: number;
}

/**
 * An alteration of a day's report (`POST /admin/reports/breaks`), to make a break for the bank's
 * reconciliation to find: an item the bank does not have (MISSING_OURS), one of its items left off
 * (MISSING_THEIRS), or an item with another amount (AMOUNT_MISMATCH).
 */
const reportBreak = z.object({
  date: z.string().refine(isCalendarDate, 'a date YYYY-MM-DD'),
  kind: z.enum(['MISSING_OURS', 'MISSING_THEIRS', 'AMOUNT_MISMATCH']),
  reference: z.string().min(1).max(255).optional(),
  amount: z.number().int().positive().optional(),
  /** What an added item is (MISSING_OURS); payment unless given. */
  type: z.enum(['payment', 'return', 'credit']).optional(),
});
type ReportBreak = z.output<typeof reportBreak>;
/** The return code used for returns picked by `returnRate` (Bacs/FPS "account closed"). */
const RANDOM_RETURN_CODE = 'AC04';

interface StoredPayment {
  id: string;
  idempotencyKey: string;
  status: 'accepted';
  request: PaymentRequest;
  body: string;
  acceptedAt: string;
  /** How many POSTs for this key reached the emulator (1 for a payment sent exactly once). */
  createRequests: number;
  /** Set once the recipient's bank returned it. */
  returned: { returnCode: string; at: string } | null;
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

function parseJson(raw: string): unknown {
  try {
    return JSON.parse(raw || '{}');
  } catch {
    return null;
  }
}

export async function startEmulator(options: EmulatorOptions): Promise<RunningEmulator> {
  const random = options.random ?? Math.random;
  const payments = new Map<string, StoredPayment>();
  const voided = new Set<string>();
  const credits = new Map<string, StoredCredit>();
  const events: FeedEvent[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let faults: Faults = faultsSchema.parse(options.faults ?? {});
  const holderNames = new Map(Object.entries(ACCOUNT_HOLDER_NAMES));
  let sequence = 0;
  let eventSequence = 0;
  let creditSequence = 0;
  const nextCursor = () => `c_${(++eventSequence).toString().padStart(12, '0')}`;
  const reportBreaks: ReportBreak[] = [];
  const londonDayOf = (iso: string) => londonToday({ now: () => new Date(iso) });

  /** The settlement report of a London day: what was accepted, returned and delivered that day, then the injected breaks. */
  function settlementReport(date: string): SettlementItem[] {
    const items: SettlementItem[] = [];
    for (const p of payments.values()) {
      if (londonDayOf(p.acceptedAt) === date) items.push({ type: 'payment', reference: p.idempotencyKey, amount: p.request.amount });
      if (p.returned && londonDayOf(p.returned.at) === date)
        items.push({ type: 'return', reference: p.idempotencyKey, amount: p.request.amount });
    }
    for (const c of credits.values()) {
      if (londonDayOf(c.receivedAt) === date) items.push({ type: 'credit', reference: c.id, amount: c.amount });
    }
    for (const b of reportBreaks.filter((x) => x.date === date)) {
      const at = b.reference === undefined ? 0 : items.findIndex((i) => i.reference === b.reference);
      const item = at >= 0 ? items[at] : undefined;
      if (b.kind === 'MISSING_OURS') {
        items.push({ type: b.type ?? 'payment', reference: b.reference ?? `unknown-${reportBreaks.indexOf(b)}`, amount: b.amount ?? 100 });
      } else if (b.kind === 'MISSING_THEIRS' && item) {
        items.splice(at, 1);
      } else if (b.kind === 'AMOUNT_MISMATCH' && item) {
        item.amount = b.amount ?? item.amount + 1;
      }
    }
    return items;
  }

  /** Returns an accepted payment; a second return of the same payment changes nothing. */
  function returnPayment(record: StoredPayment, returnCode: string): void {
    if (record.returned) return;
    record.returned = { returnCode, at: new Date().toISOString() };
    const cursor = nextCursor();
    events.push({
      cursor,
      body: { id: `rt_${cursor.slice(2)}`, type: 'payment.returned', idempotencyKey: record.idempotencyKey, returnCode },
    });
  }
  const counts: RequestCounts = { inFlight: 0, maxInFlight: 0, byKey: {} };
  // Stalled requests wait for the next change of faults, then look again at whether they still stall.
  let faultsChanged: { promise: Promise<void>; resolve: () => void } = Promise.withResolvers<void>();
  const setFaultsTo = (next: Faults) => {
    faults = next;
    faultsChanged.resolve();
    faultsChanged = Promise.withResolvers<void>();
  };
  const isStalled = (key: string) => faults.stallKeys.includes(key) || faults.stallKeys.includes('*');
  async function stallWhileListed(key: string): Promise<void> {
    while (isStalled(key)) await faultsChanged.promise;
  }
  const count = (key: string, kind: 'get' | 'create' | 'void') => {
    const entry = counts.byKey[key] ?? { get: 0, create: 0, void: 0 };
    counts.byKey[key] = entry;
    entry[kind] += 1;
  };

  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    if (res.destroyed) return;
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  const error = (res: ServerResponse, status: number, code: string, message: string) => send(res, status, { error: { code, message } });
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
      returned: null,
    };
    payments.set(key, record);
    if (faults.returnRate > 0 && random() < faults.returnRate) {
      const timer = setTimeout(() => {
        timers.delete(timer);
        returnPayment(record, RANDOM_RETURN_CODE);
      }, faults.returnDelayMs);
      timers.add(timer);
    }
    if (random() < faults.acceptThenFailRate) return error(res, 500, 'INJECTED_ERROR', 'accepted, then failed');
    return send(res, 201, publicRecord(record));
  }

  /** The idempotency key of a create request, for counting and stalling ("" when unreadable). */
  const keyOf = (raw: string): string => {
    try {
      const body: unknown = JSON.parse(raw);
      return typeof body === 'object' && body !== null && 'idempotencyKey' in body && typeof body.idempotencyKey === 'string'
        ? body.idempotencyKey
        : '';
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
        [...payments.values()].map((p) => ({
          ...publicRecord(p),
          ...p.request,
          acceptedAt: p.acceptedAt,
          createRequests: p.createRequests,
          returnCode: p.returned?.returnCode ?? null,
        })),
      );
    }
    const adminReturn = /^\/admin\/payments\/([^/]+)\/return$/.exec(path);
    if (adminReturn && method === 'POST') {
      const record = payments.get(decodeURIComponent(adminReturn[1] ?? ''));
      if (!record) return error(res, 404, 'NOT_FOUND', 'no accepted payment with this key');
      const body = z.object({ returnCode: z.string().min(1).max(35) }).safeParse(parseJson(raw));
      if (!body.success) return error(res, 400, 'INVALID_RETURN', 'returnCode is required');
      returnPayment(record, body.data.returnCode);
      return send(res, 200, { ...publicRecord(record), returnCode: record.returned?.returnCode ?? body.data.returnCode });
    }
    if (path === '/admin/credits' && method === 'POST') {
      const body = creditRequest.safeParse(parseJson(raw));
      if (!body.success) {
        const issue = body.error.issues[0];
        return error(res, 400, 'INVALID_CREDIT', `${issue?.path.join('.') ?? 'body'}: ${issue?.message ?? 'invalid'}`);
      }
      const credit: StoredCredit = {
        ...body.data,
        id: `cr_${(++creditSequence).toString().padStart(10, '0')}`,
        receivedAt: new Date().toISOString(),
        returned: null,
      };
      credits.set(credit.id, credit);
      events.push({ cursor: nextCursor(), body: { id: credit.id, type: 'credit.received', ...body.data } });
      return send(res, 201, { id: credit.id });
    }
    if (path === '/admin/credits' && method === 'GET') return send(res, 200, [...credits.values()]);
    if (path === '/admin/events' && method === 'POST') {
      const body = z.object({ event: z.unknown() }).safeParse(parseJson(raw));
      if (!body.success) return error(res, 400, 'INVALID_EVENT', 'body must be {"event": <any JSON>}');
      events.push({ cursor: nextCursor(), body: { raw: body.data.event } });
      return send(res, 201, {});
    }
    if (path === '/admin/reports/breaks' && method === 'POST') {
      const body = reportBreak.safeParse(parseJson(raw));
      if (!body.success) {
        const issue = body.error.issues[0];
        return error(res, 400, 'INVALID_BREAK', `${issue?.path.join('.') ?? 'body'}: ${issue?.message ?? 'invalid'}`);
      }
      const before = settlementReport(body.data.date);
      if (body.data.kind !== 'MISSING_OURS') {
        const target = body.data.reference === undefined ? before[0] : before.find((i) => i.reference === body.data.reference);
        if (!target) return error(res, 404, 'NOT_FOUND', "no item with this reference on that day's report");
        reportBreaks.push({ ...body.data, reference: target.reference });
      } else {
        reportBreaks.push(body.data);
      }
      return send(res, 201, { ...reportBreaks.at(-1), reference: reportBreaks.at(-1)?.reference ?? `unknown-${reportBreaks.length - 1}` });
    }
    if (path === '/v1/reports/settlement' && method === 'GET') {
      const date = url.searchParams.get('date') ?? '';
      if (!isCalendarDate(date)) return error(res, 400, 'INVALID_DATE', 'date: a London calendar date YYYY-MM-DD');
      return send(res, 200, { date, items: settlementReport(date) });
    }

    if (path === '/v1/events' && method === 'GET') {
      if (await injectFault(res)) return;
      const after = url.searchParams.get('after') ?? '';
      const limit = Math.min(Math.max(Number(url.searchParams.get('limit') ?? 100) || 100, 1), MAX_EVENTS_PAGE);
      const page = events.filter((e) => e.cursor > after).slice(0, limit);
      return send(res, 200, {
        events: page.map((e) => ('raw' in e.body ? e.body.raw : e.body)),
        next: page.at(-1)?.cursor ?? (after || null),
      });
    }
    const creditReturn = /^\/v1\/credits\/([^/]+)\/return$/.exec(path);
    if (creditReturn && method === 'POST') {
      if (await injectFault(res)) return;
      const credit = credits.get(decodeURIComponent(creditReturn[1] ?? ''));
      if (!credit) return error(res, 404, 'NOT_FOUND', 'no such credit');
      const reason = z.object({ reason: z.string().max(100) }).safeParse(parseJson(raw));
      if (credit.returned) credit.returned.requests += 1;
      else credit.returned = { reason: reason.success ? reason.data.reason : 'unspecified', at: new Date().toISOString(), requests: 1 };
      return send(res, 200, { id: credit.id, status: 'returned' });
    }

    if (path === '/admin/payee-names' && method === 'PUT') {
      const parsed = payeeCheckRequest.safeParse(parseJson(raw));
      if (!parsed.success) return error(res, 400, 'INVALID_PAYEE', parsed.error.issues[0]?.message ?? 'invalid');
      holderNames.set(accountKey(parsed.data.sortCode, parsed.data.accountNumber), parsed.data.name);
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
      return send(res, 200, matchPayeeName(name, holderNames.get(accountKey(sortCode, accountNumber)) ?? null));
    }

    if (path === '/v1/payments' && method === 'POST') {
      const key = keyOf(raw);
      count(key, 'create');
      await stallWhileListed(key);
      if (await injectFault(res, true)) return;
      return create(res, raw);
    }
    const match = /^\/v1\/payments\/([^/]+)(\/void)?$/.exec(path);
    if (match) {
      const key = decodeURIComponent(match[1] ?? '');
      count(key, match[2] ? 'void' : 'get');
      await stallWhileListed(key);
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
        for (const timer of timers) clearTimeout(timer);
        setFaultsTo({ ...faults, stallKeys: [] });
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

import { createHash } from 'node:crypto';
import {
  BrokenCircuitError,
  type CircuitBreakerPolicy,
  type CircuitState,
  ConsecutiveBreaker,
  circuitBreaker,
  handleType,
} from 'cockatiel';
import { Agent, type Dispatcher } from 'undici';
import { z } from 'zod';
import type { Metrics } from '../ops/metrics.ts';

/**
 * The payment provider over HTTP. Every answer is parsed with zod and classified once:
 * the worker only ever sees a `ProviderResult`, never an HTTP status.
 */

export interface ProviderParty {
  name: string;
  sortCode: string;
  accountNumber: string;
}

export interface ProviderPaymentRequest {
  idempotencyKey: string;
  amount: number;
  currency: string;
  sender: ProviderParty;
  recipient: ProviderParty;
  reference: string | null;
}

export type ProviderResult =
  /** The provider holds the payment (it accepted it now or earlier). */
  | { kind: 'accepted'; providerId: string; replayed?: boolean }
  /** The provider has never seen the payment. */
  | { kind: 'absent' }
  /** The payment was voided at the provider: it can never be executed. */
  | { kind: 'voided' }
  /** The provider refused the payment for good (HTTP 400 with the provider's error body). */
  | { kind: 'rejected'; code: string; message: string }
  /** An answer that retrying will not change, and that should not happen (422). */
  | { kind: 'conflict'; detail: string }
  /**
   * Not called at all: the circuit is open or the provider's Retry-After has not passed. Nothing
   * was sent, so this spends no retry; try again in `resumeInSeconds`.
   */
  | { kind: 'unavailable'; detail: string; resumeInSeconds: number }
  /**
   * Worth retrying later: 429, 5xx, a timeout, a network error, the circuit is open, or an answer
   * that is not the provider's. `notActedOn`: the provider certainly did not act on the request (the
   * connection was never made, or it answered 429); without it, the request may have been carried
   * out (a timeout, a 5xx, a connection lost mid-request).
   */
  | { kind: 'transient'; detail: string; retryAfterSeconds?: number; notActedOn?: true };

/** A Confirmation of Payee answer. UNAVAILABLE: the provider could not answer (a fault, a timeout, the circuit open). */
export type PayeeMatch = 'MATCH' | 'CLOSE_MATCH' | 'NO_MATCH' | 'UNAVAILABLE';
export interface PayeeCheckAnswer {
  result: PayeeMatch;
  /** The name the recipient's bank holds, for CLOSE_MATCH. */
  matchedName: string | null;
}
/** What can answer payee checks: the provider client, or `noPayeeChecks` when there is no provider. */
export interface PayeeChecker {
  checkPayee(recipient: ProviderParty): Promise<PayeeCheckAnswer>;
}
export const noPayeeChecks: PayeeChecker = { checkPayee: () => Promise.resolve({ result: 'UNAVAILABLE', matchedName: null }) };

const payeeCheckSchema = z.discriminatedUnion('result', [
  z.object({ result: z.literal('MATCH'), matchedName: z.string().nullish() }),
  z.object({ result: z.literal('CLOSE_MATCH'), matchedName: z.string().min(1) }),
  z.object({ result: z.literal('NO_MATCH'), matchedName: z.string().nullish() }),
]);

/** What the provider's event feed says (GET /v1/events); each event is parsed on its own. */
export type ProviderEvent =
  | { type: 'payment.returned'; id: string; idempotencyKey: string; returnCode: string }
  | {
      type: 'credit.received';
      id: string;
      amount: number;
      currency: string;
      recipient: { sortCode: string; accountNumber: string };
      sender: { name: string; sortCode: string; accountNumber: string };
      reference: string | null;
    }
  /**
   * A type we do not handle, or an event not in its type's shape (one with no usable id or type
   * included): quarantined for operators with `raw`, the event as received, never blocking the feed.
   * `id` is the event's own, or `sha256:<hex>` of its JSON when it has none.
   */
  | { type: 'unknown'; id: string; rawType: string | null; problem: string; raw: unknown };

export type ProviderFeedResult =
  | { kind: 'events'; events: ProviderEvent[]; next: string | null }
  | Extract<ProviderResult, { kind: 'transient' | 'unavailable' }>;

/** One line of the provider's daily settlement report: what it executed, returned or delivered that London day. */
export const settlementItemSchema = z.object({
  type: z.enum(['payment', 'return', 'credit']),
  /** The payment's idempotency key (our payment id), or the credit's id. */
  reference: z.string().min(1),
  amount: z.number().int(),
});
export type SettlementItem = z.infer<typeof settlementItemSchema>;
const settlementReportSchema = z.object({ date: z.string(), items: z.array(settlementItemSchema) });

export type SettlementReportResult =
  | { kind: 'report'; items: SettlementItem[] }
  | Extract<ProviderResult, { kind: 'transient' | 'unavailable' }>;

export type CreditReturnResult =
  | { kind: 'returned' }
  | { kind: 'unknown-credit' }
  | Extract<ProviderResult, { kind: 'transient' | 'unavailable' }>;

// Each event is parsed on its own (parseEvent): one malformed event must not refuse the whole page.
const feedPageSchema = z.object({
  events: z.array(z.unknown()),
  next: z.string().nullish(),
});
const eventHeadSchema = z.looseObject({ id: z.string().min(1).max(200), type: z.string().max(200) });
const returnedEventSchema = z.object({
  id: z.string(),
  type: z.literal('payment.returned'),
  idempotencyKey: z.string().min(1),
  returnCode: z.string().min(1).max(35),
});
const creditEventSchema = z.object({
  id: z.string(),
  type: z.literal('credit.received'),
  amount: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  currency: z.string().min(1).max(3),
  recipient: z.object({ sortCode: z.string().max(20), accountNumber: z.string().max(20) }),
  sender: z.object({ name: z.string().min(1).max(140), sortCode: z.string().regex(/^\d{6}$/), accountNumber: z.string().regex(/^\d{8}$/) }),
  reference: z
    .string()
    .max(140)
    .nullish()
    .transform((r) => r ?? null),
});

const describeIssue = (error: z.ZodError) => {
  const issue = error.issues[0];
  return `${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`;
};

function parseEvent(raw: unknown): ProviderEvent {
  const head = eventHeadSchema.safeParse(raw);
  if (!head.success) {
    const id = `sha256:${createHash('sha256')
      .update(JSON.stringify(raw) ?? 'undefined')
      .digest('hex')}`;
    const type = typeof raw === 'object' && raw !== null && 'type' in raw && typeof raw.type === 'string' ? raw.type.slice(0, 200) : null;
    return { type: 'unknown', id, rawType: type, problem: describeIssue(head.error), raw: raw ?? null };
  }
  const { id, type } = head.data;
  const schema = type === 'payment.returned' ? returnedEventSchema : type === 'credit.received' ? creditEventSchema : null;
  if (!schema) return { type: 'unknown', id, rawType: type, problem: 'a type we do not handle', raw };
  const parsed = schema.safeParse(raw);
  if (parsed.success) return parsed.data;
  return { type: 'unknown', id, rawType: type, problem: describeIssue(parsed.error), raw };
}

const recordSchema = z.object({ id: z.string(), idempotencyKey: z.string(), status: z.string() });
const errorSchema = z.object({ error: z.object({ code: z.string(), message: z.string() }) });
const voidedSchema = z.object({ status: z.literal('voided') });

/**
 * Errors raised before a connection exists (refused, no such host, connect timeout): the request
 * never reached anyone. A reset or a timeout later on may come after the provider acted on it.
 */
const NOT_CONNECTED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT']);
const neverConnected = (error: unknown): boolean =>
  error instanceof Error &&
  [error, error.cause].some((e) => e instanceof Error && 'code' in e && typeof e.code === 'string' && NOT_CONNECTED.has(e.code));

class TransientFailure extends Error {
  readonly result: Extract<ProviderResult, { kind: 'transient' }>;
  constructor(result: Extract<ProviderResult, { kind: 'transient' }>) {
    super(result.detail);
    this.result = result;
  }
}

export interface ProviderClientOptions {
  baseUrl: string;
  apiKey: string;
  timeoutMs: number;
  /** Consecutive transient failures that open the circuit. */
  breakerThreshold?: number;
  /** How long the circuit stays open before one probe is let through. */
  breakerHalfOpenAfterMs?: number;
  metrics?: Pick<Metrics, 'providerCalls'>;
  /**
   * Most sockets open to the provider at once (keep-alive, reused between calls); calls beyond wait
   * for a free one, inside their timeout. By default one per call a worker can have in flight.
   */
  maxConnections?: number;
}

export function createProviderClient(options: ProviderClientOptions) {
  const halfOpenAfterMs = options.breakerHalfOpenAfterMs ?? 5_000;
  const breaker: CircuitBreakerPolicy = circuitBreaker(handleType(TransientFailure), {
    halfOpenAfter: halfOpenAfterMs,
    breaker: new ConsecutiveBreaker(options.breakerThreshold ?? 5),
  });
  // When the circuit last left "closed" (null while it is closed): a half-open probe that fails
  // opens it again, so this spans the whole outage, not one open period.
  let notClosedSince: number | null = null;
  breaker.onBreak(() => {
    notClosedSince ??= Date.now();
  });
  breaker.onReset(() => {
    notClosedSince = null;
  });

  // Keep-alive sockets, at most `maxConnections` of them: a settlement does not pay a TCP (and, in
  // production, TLS) handshake per call, and hundreds of calls in flight cannot open hundreds of
  // sockets at once against the provider's connection limits.
  const origin = new URL(options.baseUrl).origin;
  const basePath = new URL(options.baseUrl).pathname.replace(/\/+$/, '');
  const agent = new Agent({ connections: options.maxConnections ?? 256, keepAliveTimeout: 4_000, pipelining: 1 });

  /** One HTTP exchange; a timeout or a network error is a `TransientFailure`. */
  async function call(
    method: Dispatcher.HttpMethod,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: unknown; retryAfter: number }> {
    const signal = AbortSignal.timeout(options.timeoutMs);
    let status: number;
    let text: string;
    let header: string | string[] | undefined;
    try {
      const response = await agent.request({
        origin,
        path: `${basePath}${path}`,
        method,
        headers: { 'x-api-key': options.apiKey, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? null : JSON.stringify(body),
        signal,
      });
      status = response.statusCode;
      header = response.headers['retry-after'];
      text = await response.body.text();
    } catch (error) {
      const detail = signal.aborted
        ? `timed out after ${options.timeoutMs} ms`
        : `network error: ${error instanceof Error ? (error.cause instanceof Error ? error.cause.message : error.message) : String(error)}`;
      throw new TransientFailure({ kind: 'transient', detail, ...(!signal.aborted && neverConnected(error) ? { notActedOn: true } : {}) });
    }
    let json: unknown = null;
    try {
      json = text === '' ? null : JSON.parse(text);
    } catch {
      json = null;
    }
    return { status, json, retryAfter: Number(Array.isArray(header) ? header[0] : header) };
  }

  type NotCalled = Extract<ProviderResult, { kind: 'transient' | 'unavailable' }>;

  /** Runs one request through the breaker; transient outcomes count against it. */
  async function guarded<T extends { kind: string }>(
    operation: 'get' | 'create' | 'void' | 'events' | 'credit-return' | 'payee-check' | 'settlement-report',
    method: Dispatcher.HttpMethod,
    path: string,
    body: unknown,
    classify: (status: number, json: unknown) => T | undefined,
  ): Promise<T | NotCalled> {
    const end = options.metrics?.providerCalls.startTimer({ operation });
    const result = await attempt(method, path, body, classify);
    end?.({ outcome: result.kind });
    return result;
  }

  // Set from a 429's Retry-After: until then this process does not call the provider at all.
  let pausedUntil = 0;

  async function attempt<T>(
    method: Dispatcher.HttpMethod,
    path: string,
    body: unknown,
    classify: (status: number, json: unknown) => T | undefined,
  ): Promise<T | NotCalled> {
    const wait = pausedUntil - Date.now();
    if (wait > 0) {
      const seconds = Math.ceil(wait / 1000);
      return { kind: 'unavailable', detail: `provider asked us to wait (Retry-After), ${seconds} s left`, resumeInSeconds: seconds };
    }
    try {
      return await breaker.execute(async () => {
        const answer = await call(method, path, body);
        const known = classify(answer.status, answer.json);
        if (known) return known;
        if (answer.status === 429 || answer.status >= 500) {
          const { retryAfter } = answer;
          if (Number.isFinite(retryAfter) && retryAfter > 0)
            pausedUntil = Math.max(pausedUntil, Date.now() + Math.min(retryAfter, 300) * 1000);
          throw new TransientFailure({
            kind: 'transient',
            detail: `HTTP ${answer.status}`,
            ...(Number.isFinite(retryAfter) && retryAfter > 0 ? { retryAfterSeconds: retryAfter } : {}),
            // 429: the provider refused to handle the request at all.
            ...(answer.status === 429 ? { notActedOn: true } : {}),
          });
        }
        // Not the provider's answer (a proxy's page, a record in an unknown state): nothing was
        // decided, so it is transient, and it counts against the circuit like any other failure.
        throw new TransientFailure({ kind: 'transient', detail: `unexpected answer: HTTP ${answer.status} from ${method} ${path}` });
      });
    } catch (error) {
      if (error instanceof TransientFailure) return error.result;
      if (error instanceof BrokenCircuitError) {
        return { kind: 'unavailable', detail: 'circuit open: provider failing', resumeInSeconds: Math.ceil(halfOpenAfterMs / 1000) };
      }
      throw error;
    }
  }

  // An answer counts only when it has the provider's own shape: a proxy's error page or a record in
  // a state we do not know is not a decision, so it is left undefined (unknown: retried, and the
  // payment is refunded only after a void). `undefined` from a classifier means exactly that.
  const accepted = (json: unknown): ProviderResult | undefined => {
    const record = recordSchema.safeParse(json);
    return record.success && record.data.status === 'accepted' ? { kind: 'accepted', providerId: record.data.id } : undefined;
  };
  const providerError = (json: unknown) => {
    const body = errorSchema.safeParse(json);
    return body.success ? body.data.error : undefined;
  };

  return {
    /** Does the provider already hold this payment? */
    getPayment(idempotencyKey: string): Promise<ProviderResult> {
      return guarded<ProviderResult>('get', 'GET', `/v1/payments/${encodeURIComponent(idempotencyKey)}`, undefined, (status, json) => {
        if (status === 200) return accepted(json);
        if (status === 404 && providerError(json)) return { kind: 'absent' };
        if (status === 410 && providerError(json)) return { kind: 'voided' };
        return undefined;
      });
    },

    /** Asks the provider to execute the payment; idempotent on `idempotencyKey`. */
    createPayment(request: ProviderPaymentRequest): Promise<ProviderResult> {
      return guarded<ProviderResult>('create', 'POST', '/v1/payments', request, (status, json) => {
        if (status === 201) return accepted(json);
        // 200: the provider already held this payment (same key, same body): accepted, earlier.
        if (status === 200) {
          const known = accepted(json);
          return known && { ...known, replayed: true };
        }
        const error = providerError(json);
        if (!error) return undefined;
        if (status === 400) return { kind: 'rejected', code: error.code, message: error.message };
        if (status === 410) return { kind: 'voided' };
        if (status === 422) return { kind: 'conflict', detail: 'the provider holds a different payment under this key' };
        return undefined;
      });
    },

    /** Makes sure the provider can never execute the payment; `accepted` if it already did. */
    voidPayment(idempotencyKey: string): Promise<ProviderResult> {
      return guarded<ProviderResult>('void', 'POST', `/v1/payments/${encodeURIComponent(idempotencyKey)}/void`, {}, (status, json) => {
        if (status === 200 && voidedSchema.safeParse(json).success) return { kind: 'voided' };
        if (status === 409) return accepted(json);
        return undefined;
      });
    },

    /**
     * Confirmation of Payee: how `recipient.name` compares with the name its bank holds. Anything
     * but the provider's own answer (a fault, a timeout, the circuit open) is UNAVAILABLE.
     */
    async checkPayee(recipient: ProviderParty): Promise<PayeeCheckAnswer> {
      const answer = await guarded<{ kind: 'checked'; answer: PayeeCheckAnswer }>(
        'payee-check',
        'POST',
        '/v1/payee-checks',
        recipient,
        (status, json) => {
          const parsed = status === 200 ? payeeCheckSchema.safeParse(json) : null;
          if (!parsed?.success) return undefined;
          const { result } = parsed.data;
          return { kind: 'checked', answer: { result, matchedName: result === 'CLOSE_MATCH' ? parsed.data.matchedName : null } };
        },
      );
      return answer.kind === 'checked' ? answer.answer : { result: 'UNAVAILABLE', matchedName: null };
    },

    /** The provider's events after `after` (returns, inbound credits), oldest first. */
    listEvents(after: string | null, limit: number): Promise<ProviderFeedResult> {
      const query = new URLSearchParams({ limit: String(limit), ...(after === null ? {} : { after }) });
      return guarded<Extract<ProviderFeedResult, { kind: 'events' }>>('events', 'GET', `/v1/events?${query}`, undefined, (status, json) => {
        if (status !== 200) return undefined;
        const page = feedPageSchema.safeParse(json);
        return page.success ? { kind: 'events', events: page.data.events.map(parseEvent), next: page.data.next ?? null } : undefined;
      });
    },

    /** The provider's settlement report of a London day (`GET /v1/reports/settlement?date=`). */
    settlementReport(date: string): Promise<SettlementReportResult> {
      const query = new URLSearchParams({ date });
      return guarded<Extract<SettlementReportResult, { kind: 'report' }>>(
        'settlement-report',
        'GET',
        `/v1/reports/settlement?${query}`,
        undefined,
        (status, json) => {
          if (status !== 200) return undefined;
          const report = settlementReportSchema.safeParse(json);
          return report.success && report.data.date === date ? { kind: 'report', items: report.data.items } : undefined;
        },
      );
    },

    /** Sends an inbound credit back to the provider (no account of ours to credit); idempotent there. */
    returnCredit(creditId: string, reason: string): Promise<CreditReturnResult> {
      return guarded<Extract<CreditReturnResult, { kind: 'returned' | 'unknown-credit' }>>(
        'credit-return',
        'POST',
        `/v1/credits/${encodeURIComponent(creditId)}/return`,
        { reason },
        (status, json) => {
          if (status === 200) return { kind: 'returned' };
          if (status === 404 && providerError(json)) return { kind: 'unknown-credit' };
          return undefined;
        },
      );
    },

    circuitState(): CircuitState {
      return breaker.state;
    },

    /** How long the circuit has been other than closed (open or probing), in ms; 0 while closed. */
    circuitNotClosedForMs(): number {
      return notClosedSince === null ? 0 : Date.now() - notClosedSince;
    },

    /** Closes the keep-alive sockets (calls still in flight finish first). */
    close(): Promise<void> {
      return agent.close();
    },
  };
}

export type ProviderClient = ReturnType<typeof createProviderClient>;

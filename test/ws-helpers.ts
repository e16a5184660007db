import { type Client, createClient } from 'graphql-ws';
import WebSocket from 'ws';

/** A graphql-ws client over a real WebSocket, with what closed it recorded. */
export function wsClient(httpUrl: string, token: string | null): { client: Client; closed: Promise<{ code: number; reason: string }> } {
  let onClosed: (value: { code: number; reason: string }) => void = () => undefined;
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    onClosed = resolve;
  });
  const client = createClient({
    url: httpUrl.replace(/^http/, 'ws'),
    webSocketImpl: WebSocket,
    connectionParams: token ? { authorization: `Bearer ${token}` } : {},
    lazy: false,
    retryAttempts: 0,
    onNonLazyError: () => undefined,
    on: {
      closed: (event) => {
        const e = event as { code: number; reason: string | Buffer };
        onClosed({ code: e.code, reason: String(e.reason) });
      },
    },
  });
  return { client, closed };
}

export interface Collected<T> {
  values: T[];
  errors: unknown[];
  /** Resolves when the server completes the subscription or it errors. */
  done: Promise<void>;
  /**
   * Resolves once `predicate` holds for the values received so far; rejects after `timeoutMs` with
   * what was received, so a test that waits in vain says what it saw before its own timeout.
   */
  until(predicate: (values: T[]) => boolean, timeoutMs?: number): Promise<T[]>;
  unsubscribe(): void;
}

/** How long `until` waits by default: under the tests' own 60 s timeout, so its message is the one seen. */
const UNTIL_TIMEOUT_MS = 40_000;

/** Subscribes and collects every value, so a test can await what it expects to see. */
export function collect<T>(client: Client, query: string, variables: Record<string, unknown>): Collected<T> {
  const values: T[] = [];
  const errors: unknown[] = [];
  const waiters: Array<{ predicate: (v: T[]) => boolean; resolve: (v: T[]) => void; reject: (e: unknown) => void }> = [];
  let settle: () => void = () => undefined;
  const done = new Promise<void>((resolve) => {
    settle = resolve;
  });
  const check = () => {
    for (const w of [...waiters]) {
      if (w.predicate(values)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve([...values]);
      }
    }
  };
  const finish = () => {
    check();
    for (const w of waiters.splice(0)) {
      w.reject(new Error(`subscription ended first; received ${JSON.stringify(values)}, errors ${JSON.stringify(errors)}`));
    }
    settle();
  };
  const unsubscribe = client.subscribe<T>(
    { query, variables },
    {
      next: (result) => {
        if (result.errors) errors.push(...result.errors);
        if (result.data) values.push(result.data as T);
        check();
      },
      error: (error) => {
        // An `error` message carries a list of GraphQL errors; a closed socket, a CloseEvent.
        if (Array.isArray(error)) errors.push(...error);
        else errors.push(error);
        finish();
      },
      complete: finish,
    },
  );
  return {
    values,
    errors,
    done,
    until: (predicate, timeoutMs = UNTIL_TIMEOUT_MS) =>
      new Promise<T[]>((resolve, reject) => {
        const waiter = {
          predicate,
          resolve: (v: T[]) => {
            clearTimeout(timer);
            resolve(v);
          },
          reject: (e: unknown) => {
            clearTimeout(timer);
            reject(e);
          },
        };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(waiter), 1);
          reject(new Error(`not seen within ${timeoutMs} ms; received ${JSON.stringify(values)}, errors ${JSON.stringify(errors)}`));
        }, timeoutMs);
        waiters.push(waiter);
        check();
      }),
    unsubscribe,
  };
}

export const PAYMENT_UPDATED = /* GraphQL */ `
  subscription($id: ID!) { paymentUpdated(paymentId: $id) { id status failureReason account { balance } } }
`;
export const ACCOUNT_PAYMENTS_UPDATED = /* GraphQL */ `
  subscription($id: ID!) { accountPaymentsUpdated(accountId: $id) { id status } }
`;
export interface PaymentUpdate {
  paymentUpdated: { id: string; status: string; failureReason: string | null; account: { balance: number } };
}
export interface AccountUpdate {
  accountPaymentsUpdated: { id: string; status: string };
}

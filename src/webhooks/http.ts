import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import { type AddressGuard, hostOf, type ResolvedAddress } from './address.ts';

/**
 * One POST of a webhook: the address checked by the guard is the address connected to (a
 * `lookup` that answers only with the checked addresses, so DNS cannot change between the check
 * and the connection), no redirect followed (node:http never follows one), a new connection
 * each time, and everything (connect, TLS, headers, body) bounded by `timeoutMs`.
 */

export type PostOutcome =
  | { kind: 'response'; status: number }
  | { kind: 'timeout' }
  | { kind: 'network'; message: string }
  | { kind: 'refused'; message: string };

const pinnedLookup =
  (addresses: ResolvedAddress[]): LookupFunction =>
  (_hostname, options, callback) => {
    if (options.all) {
      callback(null, addresses);
      return;
    }
    const first = addresses.find((a) => !options.family || a.family === options.family) ?? addresses[0];
    if (first) callback(null, first.address, first.family);
    else callback(Object.assign(new Error('no checked address'), { code: 'ENOTFOUND' }), '', 4);
  };

export async function postWebhook(options: {
  url: string;
  body: string;
  headers: Record<string, string>;
  timeoutMs: number;
  guard: AddressGuard;
}): Promise<PostOutcome> {
  const url = new URL(options.url);
  if (url.protocol !== 'https:' && (options.guard.strict || url.protocol !== 'http:')) {
    return { kind: 'refused', message: `${url.protocol} URLs are not allowed` };
  }
  const signal = AbortSignal.timeout(options.timeoutMs);
  const checked = await options.guard.check(hostOf(url));
  if (!checked.ok) return { kind: 'refused', message: checked.reason };
  const transport = url.protocol === 'https:' ? https : http;
  return new Promise<PostOutcome>((resolve) => {
    const request = transport.request(url, {
      method: 'POST',
      agent: false,
      lookup: pinnedLookup(checked.addresses),
      signal,
      headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(options.body)), ...options.headers },
    });
    request.on('response', (response) => {
      // The body is not ours to read; drain it so the exchange ends (or the timeout ends it).
      response.resume();
      response.on('end', () => resolve({ kind: 'response', status: response.statusCode ?? 0 }));
      response.on('error', () => resolve(signal.aborted ? { kind: 'timeout' } : { kind: 'response', status: response.statusCode ?? 0 }));
    });
    request.on('error', (error: NodeJS.ErrnoException) => {
      resolve(signal.aborted ? { kind: 'timeout' } : { kind: 'network', message: error.code ?? error.message });
    });
    request.end(options.body);
  });
}

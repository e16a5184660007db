import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';

/**
 * Which addresses a webhook may reach (SSRF protection, docs/security.md).
 *
 * In production only public unicast addresses are allowed: ipaddr.js classifies each address
 * and anything it does not call `unicast` is refused (loopback, private 10/8 172.16/12
 * 192.168/16, unique-local fc00::/7 (which holds fd00:ec2::254), link-local 169.254/16 and
 * fe80::/10 (which hold 169.254.169.254), unspecified, carrier-grade NAT 100.64/10, multicast,
 * broadcast, reserved, and the IPv6 forms that embed an IPv4 address: IPv4-mapped addresses are
 * judged as the IPv4 address they carry; NAT64, 6to4 and Teredo are refused outright).
 *
 * Outside production every address is allowed, so tests and developers deliver to 127.0.0.1.
 */

/** A resolved address, as `dns.lookup(..., { all: true })` gives it. */
export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

/** Resolves a host name to every address it has. Injected, so tests need no DNS. */
export type Resolver = (hostname: string) => Promise<ResolvedAddress[]>;

const RESOLVE_TIMEOUT_MS = 5_000;

/** The system resolver (getaddrinfo), every address, bounded in time. */
export const systemResolver: Resolver = async (hostname) => {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`resolving ${hostname} took over ${RESOLVE_TIMEOUT_MS} ms`)), RESOLVE_TIMEOUT_MS);
  });
  try {
    const found = await Promise.race([lookup(hostname, { all: true, verbatim: true }), timeout]);
    return found.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));
  } finally {
    clearTimeout(timer);
  }
};

/** The range name of a refused address, or null when the address is public unicast. */
export function refusedRange(address: string): string | null {
  if (!ipaddr.isValid(address)) return 'not an IP address';
  const parsed = ipaddr.parse(address);
  // ::ffff:10.0.0.1 is 10.0.0.1 on the wire: judge the IPv4 address it carries.
  const ip = parsed.kind() === 'ipv6' && (parsed as ipaddr.IPv6).isIPv4MappedAddress() ? (parsed as ipaddr.IPv6).toIPv4Address() : parsed;
  const range = ip.range();
  return range === 'unicast' ? null : range;
}

export type AddressCheck = { ok: true; addresses: ResolvedAddress[] } | { ok: false; reason: string };

export interface AddressGuard {
  /** Whether production rules apply (https only, public addresses only). */
  readonly strict: boolean;
  /**
   * The addresses to connect to for `hostname`, all of them checked, or why not. A delivery
   * connects only to an address this returned (no second lookup that DNS rebinding could change).
   */
  check(hostname: string): Promise<AddressCheck>;
}

/** The host part of a URL as an address or name (IPv6 literals lose their brackets). */
export function hostOf(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, '$1');
}

export function createAddressGuard(options: { strict: boolean; resolve: Resolver }): AddressGuard {
  const { strict, resolve } = options;
  return {
    strict,
    async check(hostname) {
      const family = isIP(hostname);
      let addresses: ResolvedAddress[];
      if (family !== 0) {
        addresses = [{ address: hostname, family: family === 6 ? 6 : 4 }];
      } else {
        try {
          addresses = await resolve(hostname);
        } catch {
          return { ok: false, reason: `host ${hostname} could not be resolved` };
        }
        if (addresses.length === 0) return { ok: false, reason: `host ${hostname} has no address` };
      }
      if (strict) {
        for (const { address } of addresses) {
          const range = refusedRange(address);
          if (range !== null)
            return { ok: false, reason: `host ${hostname} resolves to ${address} (${range}), which webhooks may not reach` };
        }
      }
      return { ok: true, addresses };
    },
  };
}

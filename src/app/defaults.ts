import { type Clock, systemClock } from '../calendar.ts';
import type { Config } from '../config.ts';
import type { QueuePolicy } from '../jobs/queues.ts';
import { type Resolver, systemResolver } from '../webhooks/address.ts';
import { queuePolicy } from './queue.ts';

/** What a process is started with beyond its Config; every one has a default. */
export interface ProcessOptions {
  /** What time it is: London days, payee safety, hold expiry; the system clock by default. */
  clock?: Clock;
  /** How often an idle queue is looked at again for new jobs and due retries. */
  pollingIntervalSeconds?: number;
  /** Resolves webhook hosts (the system resolver by default; tests give their own). */
  resolveHost?: Resolver;
}

export interface ProcessDefaults {
  clock: Clock;
  queue: QueuePolicy;
  /** `busySeconds` for queues that requests send to; `idleSeconds` for what only a schedule sends. */
  polling: { busySeconds: number; idleSeconds: number };
  resolveHost: Resolver;
}

/** The defaults both processes share, resolved once. */
export function processDefaults(config: Config, options: ProcessOptions): ProcessDefaults {
  return {
    clock: options.clock ?? systemClock,
    queue: queuePolicy(config),
    polling: { busySeconds: options.pollingIntervalSeconds ?? 0.5, idleSeconds: options.pollingIntervalSeconds ?? 30 },
    resolveHost: options.resolveHost ?? systemResolver,
  };
}

import type { PgBoss } from 'pg-boss';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { queuePolicy, startQueue } from '../src/app/queue.ts';
import { JOBS } from '../src/jobs/queues.ts';
import { type RunningJobs, startConsumers } from '../src/jobs/worker.ts';
import { type Stack, startStack } from './helpers.ts';

/**
 * The provider feed's polls form a chain: each queues the next. When the next cannot be queued
 * (the database away, or failing over), the chain must not wait for the schedule's next minute:
 * the worker tries again every poll interval. Here the real queue refuses the next poll twice, as
 * a database that has gone away would.
 */
let stack: Stack;
let boss: PgBoss | null = null;
let workers: RunningJobs | null = null;

beforeAll(async () => {
  stack = await startStack({ worker: false, logLevel: 'warn' });
});
afterAll(async () => {
  await workers?.stop();
  await boss?.stop({ graceful: false, close: true });
  await stack?.stop();
});

describe("the provider feed's poll chain", () => {
  it('goes on within poll intervals after its next poll could not be queued, not at the next minute', async () => {
    const queue = await startQueue({ databaseUrl: stack.databaseUrl, config: stack.config, logger: stack.logger });
    boss = queue;
    let refusals = 2;
    // The real queue, except that its next two sends of a later poll fail as with the database gone.
    const failing = new Proxy(queue, {
      get(target, property) {
        if (property === 'send') {
          return async (...args: Parameters<PgBoss['send']>) => {
            const [name, , options] = args;
            if (name === JOBS.providerEvents.name && options?.startAfter !== undefined && refusals > 0) {
              refusals -= 1;
              throw new Error('Connection terminated unexpectedly');
            }
            return target.send(...args);
          };
        }
        const value: unknown = Reflect.get(target, property, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const polls: number[] = [];
    workers = await startConsumers({
      boss: failing,
      prisma: stack.db,
      policy: queuePolicy(stack.config),
      handlers: {
        providerEvents: async () => {
          polls.push(Date.now());
        },
      },
      logger: stack.logger,
      concurrency: 2,
      polling: { busySeconds: 0.5, idleSeconds: 0.5 },
      providerEventsPollSeconds: 1,
      webhooks: { concurrency: 1, endpointConcurrency: 1 },
    });
    // The first poll, then two refused successors, then the chain again: four polls well inside
    // the minute at which the schedule would have restarted it.
    await vi.waitFor(() => expect(polls.length).toBeGreaterThanOrEqual(4), { timeout: 20_000, interval: 100 });
    expect(refusals).toBe(0);
    expect((polls.at(-1) ?? 0) - (polls[0] ?? 0)).toBeLessThan(20_000);
    expect(stack.logLines.filter((line) => line.includes('could not queue the next run of a chained job; trying again'))).toHaveLength(2);
  });
});

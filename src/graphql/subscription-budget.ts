import { GraphQLError } from 'graphql';
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import type { Viewer } from '../auth.ts';
import { unauthenticated } from './errors.ts';

/**
 * Bounds what one caller can hold open on one API process, whatever number of WebSocket
 * connections they spread it over: at most `maxOpen` live subscriptions, and at most
 * `perMinute` new ones a minute. (Per connection, graphql-ws limits are in server.ts.)
 */
export interface SubscriptionBudget {
  /** Takes one subscription for the viewer, or throws; call the returned function when it ends. */
  open(viewer: Viewer): Promise<() => void>;
  /** Subscriptions held now by this viewer on this process. */
  held(viewer: Viewer): number;
}

export const SUBSCRIPTION_BUDGET = { maxOpen: 100, perMinute: 120 } as const;

const keyOf = (viewer: Viewer) => (viewer.role === 'customer' ? `customer:${viewer.customerId}` : 'operator');

const refused = (message: string) => new GraphQLError(message, { extensions: { code: 'BAD_USER_INPUT', reason: 'SUBSCRIPTION_LIMIT' } });

export function createSubscriptionBudget(limits: { maxOpen: number; perMinute: number } = SUBSCRIPTION_BUDGET): SubscriptionBudget {
  const open = new Map<string, number>();
  const rate = new RateLimiterMemory({ points: limits.perMinute, duration: 60 });
  return {
    async open(viewer) {
      const key = keyOf(viewer);
      try {
        await rate.consume(key);
      } catch (error) {
        if (!(error instanceof RateLimiterRes)) throw error;
        throw refused(`Too many new subscriptions; try again in ${Math.ceil(error.msBeforeNext / 1000)} s`);
      }
      const n = open.get(key) ?? 0;
      if (n >= limits.maxOpen) throw refused(`At most ${limits.maxOpen} live subscriptions per customer`);
      open.set(key, n + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const left = (open.get(key) ?? 1) - 1;
        if (left > 0) open.set(key, left);
        else open.delete(key);
      };
    },
    held: (viewer) => open.get(keyOf(viewer)) ?? 0,
  };
}

/** `iterable`, calling `release` once when it ends, however it ends. */
export function releasing<T>(iterable: AsyncIterable<T>, release: () => void): AsyncIterableIterator<T> {
  const inner = iterable[Symbol.asyncIterator]();
  const settle = async (step: Promise<IteratorResult<T>>) => {
    try {
      const result = await step;
      if (result.done) release();
      return result;
    } catch (error) {
      release();
      throw error;
    }
  };
  const iterator: AsyncIterableIterator<T> = {
    next: () => settle(inner.next()),
    return: async (value?: unknown) => {
      release();
      return inner.return ? inner.return(value) : { done: true, value: undefined };
    },
    throw: async (error?: unknown) => {
      release();
      if (inner.throw) return inner.throw(error);
      throw error;
    },
    [Symbol.asyncIterator]: () => iterator,
  };
  return iterator;
}

/** What `budgeted` needs of a request's context: the caller and the process's budget (not the whole Context, which names this module). */
export interface BudgetedContext {
  viewer: Viewer | null;
  subscriptionBudget: SubscriptionBudget;
}

/** A subscribe resolver that first takes one subscription from the caller's budget, and gives it back when it ends. */
export function budgeted<P, A, C extends BudgetedContext, T>(subscribe: (parent: P, args: A, ctx: C) => Promise<AsyncIterable<T>>) {
  return async (parent: P, args: A, ctx: C): Promise<AsyncIterable<T>> => {
    if (!ctx.viewer) throw unauthenticated();
    const release = await ctx.subscriptionBudget.open(ctx.viewer);
    try {
      return releasing(await subscribe(parent, args, ctx), release);
    } catch (error) {
      release();
      throw error;
    }
  };
}

import { Repeater } from '@repeaterjs/repeater';
import { GraphQLError } from 'graphql';
import type { Payment } from '../db/prisma.ts';
import type { FeedEvent } from '../events/feed.ts';
import { isSettled } from '../payments/lifecycle.ts';
import { type Context, requireViewer } from './context.ts';
import { requireEventAccount } from './events.ts';
import type { SubscriptionResolvers } from './generated/types.ts';
import { budgeted } from './subscription-budget.ts';

/**
 * Live payment updates, both on the durable event stream (events/feed.ts): the process's feed
 * reads each event's payment once and hands the same row to every subscription that wants it.
 *
 * - `paymentUpdated` sends the payment as it is, then each newer state, and completes after a
 *   terminal one. The feed keeps its position across lost connections, so a terminal state is
 *   never lost.
 * - `accountPaymentsUpdated` follows the account's events from now on and sends each payment as
 *   it is when its event is read (two quick changes may show as the newer state twice: a
 *   subscription skips a state it has just sent).
 */

const version = (p: Payment) => `${p.status}@${p.updatedAt.toISOString()}`;

/** Most payments an account subscription remembers the last sent state of. */
const REMEMBERED = 1_000;

async function paymentUpdated(ctx: Context, paymentId: string): Promise<AsyncIterable<Payment>> {
  // Not yours looks exactly like not there.
  if (!(await ctx.payments.visiblePayment(requireViewer(ctx), paymentId))) {
    throw new GraphQLError('No such payment', { extensions: { code: 'BAD_USER_INPUT' } });
  }
  return new Repeater<Payment>(async (push, stop) => {
    const arrived: FeedEvent[] = [];
    let signal: (() => void) | null = null;
    // Listen before the first read, so a change between the two is not missed.
    const unsubscribe = ctx.events.subscribe({ paymentId }, (events) => {
      arrived.push(...events);
      signal?.();
    });
    let stopped = false;
    void stop.then(() => {
      stopped = true;
      signal?.();
    });
    let lastSent: string | null = null;
    const send = async (payment: Payment) => {
      if (version(payment) !== lastSent) {
        lastSent = version(payment);
        await push(payment);
      }
      if (isSettled(payment.status)) stop();
    };
    try {
      const current = await ctx.payments.currentPayment(paymentId);
      await send(current);
      while (!stopped) {
        const event = arrived.shift();
        if (event) await send(await event.payment());
        else {
          await new Promise<void>((resolve) => {
            signal = resolve;
          });
          signal = null;
        }
      }
    } catch (error) {
      stop(error);
    } finally {
      unsubscribe();
    }
  });
}

async function accountPaymentsUpdated(ctx: Context, accountId: string): Promise<AsyncIterable<Payment>> {
  await requireEventAccount(ctx, accountId);
  const events = ctx.accountEvents.follow(accountId, null);
  return new Repeater<Payment>(async (push, stop) => {
    void stop.then(() => events.return());
    const sent = new Map<string, string>();
    try {
      for await (const event of events) {
        const payment = await event.payment();
        if (sent.get(payment.id) === version(payment)) continue;
        sent.delete(payment.id);
        sent.set(payment.id, version(payment));
        if (sent.size > REMEMBERED) sent.delete(sent.keys().next().value ?? '');
        await push(payment);
      }
    } catch (error) {
      stop(error);
    }
  });
}

// The generated type leaves `resolve`'s parent untyped: it is what `subscribe` yields.
export const subscriptionResolvers = {
  paymentUpdated: {
    subscribe: budgeted((_, args, ctx) => paymentUpdated(ctx, args.paymentId)),
    resolve: (payment: Payment) => payment,
  },
  accountPaymentsUpdated: {
    subscribe: budgeted((_, args, ctx) => accountPaymentsUpdated(ctx, args.accountId)),
    resolve: (payment: Payment) => payment,
  },
} satisfies SubscriptionResolvers;

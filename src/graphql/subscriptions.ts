import { Repeater } from '@repeaterjs/repeater';
import { GraphQLError } from 'graphql';
import type { Payment } from '../db/prisma.ts';
import type { FeedEvent } from '../events/feed.ts';
import { accountEventStream } from '../events/stream.ts';
import { isSettled } from '../payments/lifecycle.ts';
import { ownedAccountWhere, requireViewer, type Context } from './context.ts';
import { requireEventAccount } from './events.ts';
import { budgeted } from './subscription-budget.ts';
import { isUuid } from '../validation.ts';

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

async function paymentUpdated(_: unknown, args: { paymentId: string }, ctx: Context): Promise<AsyncIterable<Payment>> {
  const viewer = requireViewer(ctx);
  const where = { id: args.paymentId, account: ownedAccountWhere(viewer) };
  // Not yours looks exactly like not there.
  if (!isUuid(args.paymentId) || !(await ctx.prisma.payment.findFirst({ where, select: { id: true } }))) {
    throw new GraphQLError('No such payment', { extensions: { code: 'BAD_USER_INPUT' } });
  }
  return new Repeater<Payment>(async (push, stop) => {
    const arrived: FeedEvent[] = [];
    let signal: (() => void) | null = null;
    // Listen before the first read, so a change between the two is not missed.
    const unsubscribe = ctx.events.subscribe({ paymentId: args.paymentId }, (events) => {
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
      const current = await ctx.prisma.payment.findUniqueOrThrow({ where: { id: args.paymentId } });
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

async function accountPaymentsUpdated(_: unknown, args: { accountId: string }, ctx: Context): Promise<AsyncIterable<Payment>> {
  await requireEventAccount(ctx, args.accountId);
  const events = accountEventStream({ feed: ctx.events, prisma: ctx.prisma, accountId: args.accountId, after: null });
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

export const subscriptionResolvers = {
  paymentUpdated: { subscribe: budgeted(paymentUpdated), resolve: (payment: Payment) => payment },
  accountPaymentsUpdated: { subscribe: budgeted(accountPaymentsUpdated), resolve: (payment: Payment) => payment },
};

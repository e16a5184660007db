import { Repeater } from '@repeaterjs/repeater';
import { GraphQLError } from 'graphql';
import { z } from 'zod';
import type { Payment } from '../db/prisma.ts';
import { isTerminal } from '../payments/payment-status.ts';
import { ownedAccountWhere, requireViewer, type Context } from './context.ts';

/**
 * Live payment updates. Events from the hub carry ids only; each one makes the subscription
 * re-read the payment, so what a client sees is always committed state.
 *
 * Memory stays bounded whatever the client does: a subscription remembers at most the ids of
 * payments it still has to send (coalesced: ten changes to one payment are one re-read), and
 * `push` waits for the client before the next read.
 */

/** Most distinct payments an account subscription may have waiting before it is ended. */
export const MAX_PENDING_PER_SUBSCRIPTION = 1_000;

const notFound = (what: string) =>
  new GraphQLError(`No such ${what}`, { extensions: { code: 'BAD_USER_INPUT' } });

const isUuid = (id: string) => z.uuid().safeParse(id).success;

async function paymentUpdated(_: unknown, args: { paymentId: string }, ctx: Context): Promise<AsyncIterable<Payment>> {
  const viewer = requireViewer(ctx);
  const where = { id: args.paymentId, account: ownedAccountWhere(viewer) };
  // Not yours looks exactly like not there.
  if (!isUuid(args.paymentId) || !(await ctx.prisma.payment.findFirst({ where, select: { id: true } }))) {
    throw notFound('payment');
  }
  return new Repeater<Payment>(async (push, stop) => {
    let lastSent: string | null = null;
    let reading = false;
    let dirty = false;

    // Re-reads the payment and sends it if it changed; coalesces events that arrive meanwhile.
    const refresh = async () => {
      dirty = true;
      if (reading) return;
      reading = true;
      try {
        while (dirty) {
          dirty = false;
          const payment = await ctx.prisma.payment.findFirst({ where });
          if (!payment) return;
          const version = `${payment.status}@${payment.updatedAt.toISOString()}`;
          if (version !== lastSent) {
            lastSent = version;
            await push(payment);
          }
          if (isTerminal(payment.status)) {
            stop();
            return;
          }
        }
      } catch (error) {
        stop(error);
      } finally {
        reading = false;
      }
    };

    // Listen before the first read, so a change between the two is not missed.
    const unsubscribe = ctx.events.subscribe(
      { paymentId: args.paymentId },
      { onEvent: () => void refresh(), onResync: () => void refresh() },
    );
    await refresh();
    await stop;
    unsubscribe();
  });
}

async function accountPaymentsUpdated(_: unknown, args: { accountId: string }, ctx: Context): Promise<AsyncIterable<Payment>> {
  const viewer = requireViewer(ctx);
  const owned = isUuid(args.accountId)
    ? await ctx.prisma.account.findFirst({ where: { id: args.accountId, ...ownedAccountWhere(viewer) }, select: { id: true } })
    : null;
  if (!owned) throw notFound('account');
  return new Repeater<Payment>(async (push, stop) => {
    const pending = new Set<string>();
    let draining = false;

    const drain = async () => {
      if (draining) return;
      draining = true;
      try {
        for (const paymentId of pending) {
          pending.delete(paymentId);
          const payment = await ctx.prisma.payment.findFirst({ where: { id: paymentId, accountId: args.accountId } });
          if (payment) await push(payment);
        }
      } catch (error) {
        stop(error);
      } finally {
        draining = false;
      }
    };
    const enqueue = (paymentId: string) => {
      pending.add(paymentId);
      if (pending.size > MAX_PENDING_PER_SUBSCRIPTION) {
        stop(new GraphQLError('Too many updates waiting for this client; subscribe again', { extensions: { code: 'BAD_REQUEST' } }));
        return;
      }
      void drain();
    };

    const unsubscribe = ctx.events.subscribe(
      { accountId: args.accountId },
      {
        onEvent: (event) => enqueue(event.paymentId),
        onResync: (since) => {
          // Events were lost while LISTEN was down: send every payment changed since then.
          ctx.prisma.payment
            .findMany({
              where: { accountId: args.accountId, updatedAt: { gte: new Date(since.getTime() - 1_000) } },
              select: { id: true },
              orderBy: { updatedAt: 'asc' },
              take: MAX_PENDING_PER_SUBSCRIPTION,
            })
            .then((rows) => rows.forEach((r) => enqueue(r.id)), (error: unknown) => stop(error));
        },
      },
    );
    await stop;
    unsubscribe();
  });
}

export const subscriptionResolvers = {
  paymentUpdated: { subscribe: paymentUpdated, resolve: (payment: Payment) => payment },
  accountPaymentsUpdated: { subscribe: accountPaymentsUpdated, resolve: (payment: Payment) => payment },
};

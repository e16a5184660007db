import type { Resolvers } from './generated/types.ts';
import { RateLimiterRes } from 'rate-limiter-flexible';
import type { Account, Customer, LedgerEntry, OperatorAction, Payee, PayeeCheck, Payment, StandingOrder } from '../db/prisma.ts';
import type { Prisma } from '../generated/prisma/client.ts';
import { userError } from '../errors.ts';
import { customerAttemptDetail, customerFailureReason } from '../payments/outcomes.ts';
import type { SendPaymentResult } from '../payments/send-payment.ts';
import { ownedAccountWhere, requireCustomer, requireOperator, requireViewer, type Context } from './context.ts';
import { afterCreatedAtId, connection, decodeCursor, serialCursorKey, pageSize, paymentCursorKey } from './pagination.ts';
import { DateScalar, DateTimeScalar, MoneyScalar } from './scalars.ts';
import { eventResolvers } from './events.ts';
import { subscriptionResolvers } from './subscriptions.ts';
import { webhookResolvers } from './webhooks.ts';
import { isUuid } from '../validation.ts';


async function visibleAccount(ctx: Context, id: string): Promise<Account | null> {
  const viewer = requireViewer(ctx);
  if (!isUuid(id)) return null;
  return ctx.prisma.account.findFirst({ where: { id, ...ownedAccountWhere(viewer) } });
}

async function visiblePayment(ctx: Context, id: string): Promise<Payment | null> {
  const viewer = requireViewer(ctx);
  if (!isUuid(id)) return null;
  return ctx.prisma.payment.findFirst({ where: { id, account: ownedAccountWhere(viewer) } });
}

async function sendPaymentLimited(ctx: Context, customerId: string, input: unknown): Promise<SendPaymentResult> {
  if (ctx.sendPaymentLimiter) {
    try {
      await ctx.sendPaymentLimiter.consume(customerId);
    } catch (error) {
      if (!(error instanceof RateLimiterRes)) throw error;
      const seconds = Math.ceil(error.msBeforeNext / 1000);
      return { payment: null, errors: [userError('RATE_LIMITED', `Too many payments; try again in ${seconds} s`)] };
    }
  }
  return ctx.payments.sendPayment(customerId, input, ctx.logger);
}

/** A page of payments, newest first, of those matching `where` (an account's, a standing order's). */
async function paymentPage(ctx: Context, where: Prisma.PaymentWhereInput, args: { first?: number | null; after?: string | null }) {
  const limit = pageSize(args.first);
  const after = decodeCursor(args.after, paymentCursorKey);
  const rows = await ctx.prisma.payment.findMany({
    where: { ...where, ...afterCreatedAtId(after) },
    orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
    take: limit + 1,
  });
  return connection(rows, limit, (p) => [p.createdAt.toISOString(), p.id], args.after);
}

async function accountOf(ctx: Context, owner: { accountId: string }, what: string): Promise<Account> {
  const account = await ctx.loaders.account.load(owner.accountId);
  if (!account) throw new Error(`account ${owner.accountId} of ${what} not found`);
  return account;
}

const recipientOf = (row: { recipientName: string; recipientSortCode: string; recipientAccountNumber: string }) => ({
  name: row.recipientName,
  sortCode: row.recipientSortCode,
  accountNumber: row.recipientAccountNumber,
});

export const resolvers: Resolvers = {
  Money: MoneyScalar,
  DateTime: DateTimeScalar,
  Date: DateScalar,

  Query: {
    me: async (_, __, ctx): Promise<Customer | null> => {
      const viewer = requireViewer(ctx);
      if (viewer.role !== 'customer') return null;
      return ctx.prisma.customer.findUnique({ where: { id: viewer.customerId } });
    },
    account: (_, args, ctx) => visibleAccount(ctx, args.id),
    payment: (_, args, ctx) => visiblePayment(ctx, args.id),
    ...eventResolvers.Query,
    operatorActions: async (_, args, ctx) => {
      requireOperator(ctx);
      const limit = pageSize(args.first ?? 50);
      const after = decodeCursor(args.after, serialCursorKey);
      const rows = await ctx.prisma.operatorAction.findMany({
        where: after ? { id: { lt: BigInt(after[0]) } } : {},
        orderBy: { id: 'desc' },
        take: limit + 1,
      });
      return connection(rows, limit, (a) => [a.id.toString()], args.after);
    },
    heldPayments: async (_, args, ctx) => {
      requireOperator(ctx);
      const limit = pageSize(args.first ?? 50);
      const after = decodeCursor(args.after, paymentCursorKey);
      const rows = await ctx.prisma.payment.findMany({
        where: {
          status: 'HELD',
          ...(after
            ? { OR: [{ createdAt: { gt: new Date(after[0]) } }, { createdAt: new Date(after[0]), id: { gt: after[1] } }] }
            : {}),
        },
        orderBy: [{ createdAt: 'asc' }, { id: 'asc' }],
        take: limit + 1,
      });
      return connection(rows, limit, (p) => [p.createdAt.toISOString(), p.id]);
    },
  },

  Mutation: {
    sendPayment: async (_, args, ctx) => {
      const customerId = requireCustomer(ctx);
      const end = ctx.metrics.sendPaymentSeconds.startTimer();
      let outcome = 'error';
      try {
        const result = await sendPaymentLimited(ctx, customerId, args.input);
        outcome = result.errors[0]?.code ?? 'ok';
        // A payment was created here: this process's subscribers hear of it without waiting a poll.
        if (result.payment && !result.replayed) ctx.events.wake();
        return result;
      } finally {
        end({ outcome });
      }
    },
    createCustomer: (_, args, ctx) =>
      ctx.accounts.createCustomer(args.input, requireOperator(ctx)),
    openAccount: (_, args, ctx) => ctx.accounts.openAccount(args.input, requireOperator(ctx)),
    depositFunds: (_, args, ctx) =>
      ctx.accounts.depositFunds(args.input, requireOperator(ctx)),
    ...webhookResolvers.Mutation,
    checkPayee: (_: unknown, args: { input: unknown }, ctx: Context) => ctx.payees.checkPayee(requireCustomer(ctx), args.input),
    addPayee: (_: unknown, args: { input: unknown }, ctx: Context) => ctx.payees.addPayee(requireCustomer(ctx), args.input),
    removePayee: (_: unknown, args: { id: string }, ctx: Context) => ctx.payees.removePayee(requireCustomer(ctx), args.id),
    approvePayment: async (_: unknown, args: { paymentId: string }, ctx: Context) => {
      const payment = await ctx.holds.approvePayment(requireOperator(ctx), args.paymentId);
      ctx.events.wake();
      return payment;
    },
    rejectPayment: async (_: unknown, args: { paymentId: string; reason: string }, ctx: Context) => {
      const payment = await ctx.holds.rejectPayment(requireOperator(ctx), args.paymentId, args.reason);
      ctx.events.wake();
      return payment;
    },
    cancelPayment: async (_: unknown, args: { paymentId: string }, ctx: Context) => {
      const result = await ctx.cancellation.cancelPayment(requireCustomer(ctx), args.paymentId, ctx.logger);
      if (result.payment) ctx.events.wake();
      return result;
    },
    createStandingOrder: (_: unknown, args: { input: unknown }, ctx: Context) =>
      ctx.standingOrders.create(requireCustomer(ctx), args.input, ctx.logger),
    cancelStandingOrder: async (_: unknown, args: { id: string }, ctx: Context) => {
      const order = await ctx.standingOrders.cancel(requireCustomer(ctx), args.id, ctx.logger);
      ctx.events.wake();
      return order;
    },
  },

  Subscription: { ...subscriptionResolvers, ...eventResolvers.Subscription },

  PaymentEvent: eventResolvers.PaymentEvent,

  SendPaymentPayload: {
    replayed: (result: SendPaymentResult) => result.payment !== null && result.replayed,
  },

  Customer: {
    accounts: (customer: Customer, _: unknown, ctx: Context) =>
      ctx.prisma.account.findMany({ where: { customerId: customer.id }, orderBy: [{ createdAt: 'asc' }, { id: 'asc' }] }),
    payees: (customer: Customer, _: unknown, ctx: Context) => ctx.payees.listPayees(customer.id),
  },

  Payee: {
    // Loaded with the payee by listPayees and addPayee.
    lastCheck: (payee: Payee & { lastCheck?: PayeeCheck | null }) => payee.lastCheck ?? null,
  },

  Account: {
    payments: (account, args, ctx) =>
      paymentPage(ctx, { accountId: account.id, ...(args.status ? { status: args.status } : {}) }, args),
    standingOrders: (account: Account, _: unknown, ctx: Context) =>
      ctx.prisma.standingOrder.findMany({ where: { accountId: account.id }, orderBy: [{ createdAt: 'asc' }, { id: 'asc' }] }),
    ledger: async (account, args, ctx) => {
      const limit = pageSize(args.first);
      const after = decodeCursor(args.after, serialCursorKey);
      const rows = await ctx.prisma.ledgerEntry.findMany({
        where: { accountId: account.id, ...(after ? { id: { lt: BigInt(after[0]) } } : {}) },
        orderBy: { id: 'desc' },
        take: limit + 1,
      });
      return connection(rows, limit, (e) => [e.id.toString()], args.after);
    },
    ...webhookResolvers.Account,
  },

  WebhookEndpoint: webhookResolvers.WebhookEndpoint,

  Payment: {
    account: (payment: Payment, _: unknown, ctx: Context): Promise<Account> => accountOf(ctx, payment, `payment ${payment.id}`),
    recipient: recipientOf,
    standingOrder: (payment: Payment, _: unknown, ctx: Context) =>
      payment.standingOrderId ? ctx.prisma.standingOrder.findUnique({ where: { id: payment.standingOrderId } }) : null,
    failureReason: (payment: Payment) => customerFailureReason(payment.status, payment.failureReason),
    attempts: async (payment: Payment, _: unknown, ctx: Context) => {
      const rows = await ctx.loaders.attempts.load(payment.id);
      // Customers get the fixed text of each outcome; the raw reason is for operators only (rows
      // from before internal_detail existed kept it in detail).
      const operator = ctx.viewer?.role === 'operator';
      return rows.map((a, i) => ({
        number: i + 1,
        at: a.at,
        outcome: a.outcome,
        detail: customerAttemptDetail(a.outcome),
        internalDetail: operator ? (a.internalDetail ?? a.detail) : null,
      }));
    },
  },

  OperatorAction: {
    id: (action: OperatorAction) => action.id.toString(),
  },

  StandingOrder: {
    account: (order: StandingOrder, _: unknown, ctx: Context): Promise<Account> => accountOf(ctx, order, `standing order ${order.id}`),
    recipient: recipientOf,
    payments: (order, args, ctx) => paymentPage(ctx, { standingOrderId: order.id }, args),
  },

  LedgerEntry: {
    id: (entry: LedgerEntry) => entry.id.toString(),
    payment: (entry: LedgerEntry, _: unknown, ctx: Context) =>
      entry.paymentId ? ctx.loaders.payment.load(entry.paymentId) : null,
    // The sender of a credit was stored with it; a payment's entries show the payment's recipient.
    counterparty: async (entry: LedgerEntry, _: unknown, ctx: Context) => {
      if (entry.counterpartyName !== null && entry.counterpartySortCode !== null && entry.counterpartyAccountNumber !== null) {
        return { name: entry.counterpartyName, sortCode: entry.counterpartySortCode, accountNumber: entry.counterpartyAccountNumber };
      }
      const payment = entry.paymentId ? await ctx.loaders.payment.load(entry.paymentId) : null;
      return payment ? recipientOf(payment) : null;
    },
    reference: async (entry: LedgerEntry, _: unknown, ctx: Context) => {
      if (entry.reference !== null || entry.paymentId === null) return entry.reference;
      return (await ctx.loaders.payment.load(entry.paymentId))?.reference ?? null;
    },
  },
};

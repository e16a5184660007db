import { z } from 'zod';
import { RateLimiterRes } from 'rate-limiter-flexible';
import type { Account, Customer, LedgerEntry, OperatorAction, Payment, PaymentAttempt } from '../db/prisma.ts';
import { userError } from '../errors.ts';
import { customerAttemptDetail, customerFailureReason } from '../payments/outcomes.ts';
import type { PaymentStatus } from '../payments/payment-status.ts';
import type { SendPaymentResult } from '../payments/send-payment.ts';
import { ownedAccountWhere, requireCustomer, requireOperator, requireViewer, type Context } from './context.ts';
import { DateTimeScalar, MoneyScalar } from './scalars.ts';
import { subscriptionResolvers } from './subscriptions.ts';

const isUuid = (id: string) => z.uuid().safeParse(id).success;

interface PageArgs {
  first?: number | null;
  after?: string | null;
}

const MAX_PAGE = 100;

function pageSize(first: number | null | undefined): number {
  return Math.min(Math.max(first ?? 20, 1), MAX_PAGE);
}

// Cursors are opaque to clients: base64url of the sort key of the last row seen.
const encodeCursor = (key: unknown[]) => Buffer.from(JSON.stringify(key)).toString('base64url');
function decodeCursor(cursor: string | null | undefined): unknown[] | null {
  if (!cursor) return null;
  try {
    const key: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    return Array.isArray(key) ? key : null;
  } catch {
    return null;
  }
}

function connection<T>(rows: T[], limit: number, keyOf: (row: T) => unknown[]) {
  const page = rows.slice(0, limit);
  const edges = page.map((node) => ({ cursor: encodeCursor(keyOf(node)), node }));
  return { edges, pageInfo: { hasNextPage: rows.length > limit, endCursor: edges.at(-1)?.cursor ?? null } };
}

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

export const resolvers = {
  Money: MoneyScalar,
  DateTime: DateTimeScalar,

  Query: {
    me: async (_: unknown, __: unknown, ctx: Context): Promise<Customer | null> => {
      const viewer = requireViewer(ctx);
      if (viewer.role !== 'customer') return null;
      return ctx.prisma.customer.findUnique({ where: { id: viewer.customerId } });
    },
    account: (_: unknown, args: { id: string }, ctx: Context) => visibleAccount(ctx, args.id),
    payment: (_: unknown, args: { id: string }, ctx: Context) => visiblePayment(ctx, args.id),
    operatorActions: async (_: unknown, args: PageArgs, ctx: Context) => {
      requireOperator(ctx);
      const limit = pageSize(args.first ?? 50);
      const [afterId] = decodeCursor(args.after) ?? [];
      const rows = await ctx.prisma.operatorAction.findMany({
        where: typeof afterId === 'string' && /^\d+$/.test(afterId) ? { id: { lt: BigInt(afterId) } } : {},
        orderBy: { id: 'desc' },
        take: limit + 1,
      });
      return connection(rows, limit, (a) => [a.id.toString()]);
    },
  },

  Mutation: {
    sendPayment: async (_: unknown, args: { input: unknown }, ctx: Context) => {
      const customerId = requireCustomer(ctx);
      const end = ctx.metrics.sendPaymentSeconds.startTimer();
      let outcome = 'error';
      try {
        const result = await sendPaymentLimited(ctx, customerId, args.input);
        outcome = result.errors[0]?.code ?? 'ok';
        return result;
      } finally {
        end({ outcome });
      }
    },
    createCustomer: (_: unknown, args: { input: unknown }, ctx: Context) =>
      ctx.accounts.createCustomer(args.input, requireOperator(ctx)),
    openAccount: (_: unknown, args: { input: unknown }, ctx: Context) => ctx.accounts.openAccount(args.input, requireOperator(ctx)),
    depositFunds: (_: unknown, args: { input: unknown }, ctx: Context) =>
      ctx.accounts.depositFunds(args.input, requireOperator(ctx)),
  },

  Subscription: subscriptionResolvers,

  Customer: {
    accounts: (customer: Customer, _: unknown, ctx: Context) =>
      ctx.prisma.account.findMany({ where: { customerId: customer.id }, orderBy: [{ createdAt: 'asc' }, { id: 'asc' }] }),
  },

  Account: {
    payments: async (account: Account, args: PageArgs & { status?: PaymentStatus | null }, ctx: Context) => {
      const limit = pageSize(args.first);
      const after = decodeCursor(args.after);
      const [createdAt, id] = after ?? [];
      const rows = await ctx.prisma.payment.findMany({
        where: {
          accountId: account.id,
          ...(args.status ? { status: args.status } : {}),
          ...(typeof createdAt === 'string' && typeof id === 'string'
            ? {
                OR: [
                  { createdAt: { lt: new Date(createdAt) } },
                  { createdAt: new Date(createdAt), id: { lt: id } },
                ],
              }
            : {}),
        },
        orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
        take: limit + 1,
      });
      return connection(rows, limit, (p) => [p.createdAt.toISOString(), p.id]);
    },
    ledger: async (account: Account, args: PageArgs, ctx: Context) => {
      const limit = pageSize(args.first);
      const [afterId] = decodeCursor(args.after) ?? [];
      const rows = await ctx.prisma.ledgerEntry.findMany({
        where: {
          accountId: account.id,
          ...(typeof afterId === 'string' && /^\d+$/.test(afterId) ? { id: { lt: BigInt(afterId) } } : {}),
        },
        orderBy: { id: 'desc' },
        take: limit + 1,
      });
      return connection(rows, limit, (e) => [e.id.toString()]);
    },
  },

  Payment: {
    account: (payment: Payment, _: unknown, ctx: Context) =>
      ctx.prisma.account.findUniqueOrThrow({ where: { id: payment.accountId } }),
    recipient: (payment: Payment) => ({
      name: payment.recipientName,
      sortCode: payment.recipientSortCode,
      accountNumber: payment.recipientAccountNumber,
    }),
    failureReason: (payment: Payment) => customerFailureReason(payment.status, payment.failureReason),
    attempts: async (payment: Payment, _: unknown, ctx: Context) => {
      const rows: PaymentAttempt[] = await ctx.prisma.paymentAttempt.findMany({
        where: { paymentId: payment.id },
        orderBy: { id: 'asc' },
      });
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

  LedgerEntry: {
    id: (entry: LedgerEntry) => entry.id.toString(),
    payment: (entry: LedgerEntry, _: unknown, ctx: Context) =>
      entry.paymentId ? ctx.prisma.payment.findUnique({ where: { id: entry.paymentId } }) : null,
  },
};

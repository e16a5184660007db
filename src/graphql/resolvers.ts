import { RateLimiterRes } from 'rate-limiter-flexible';
import type { Account } from '../db/prisma.ts';
import { DomainError, userError } from '../errors.ts';
import { statementRange } from '../ledger/statements.ts';
import { customerAttemptDetail, customerFailureReason } from '../payments/failure-reasons.ts';
import type { PaymentFilter, SendPaymentResult } from '../payments/payment-service.ts';
import { spendOrThrow } from './budgets.ts';
import { type Context, requireCustomer, requireOperator, requireViewer } from './context.ts';
import { fromDomainError } from './errors.ts';
import { eventResolvers } from './events.ts';
import type { Resolvers } from './generated/types.ts';
import {
  connection,
  decodeCursor,
  fieldPageSize,
  heldCursorKey,
  pageSize,
  paymentCursorKey,
  quarantineCursorKey,
  serialCursorKey,
  statementCursorKey,
} from './pagination.ts';
import { DateScalar, DateTimeScalar, MoneyScalar } from './scalars.ts';
import { subscriptionResolvers } from './subscriptions.ts';
import { webhookResolvers } from './webhooks.ts';

/**
 * The GraphQL transport: each resolver parses its arguments, checks the caller, calls one service
 * function and maps the answer. Reads and writes live in the services; nested reads that would
 * cost a query per row go through the operation's loaders (loaders.ts).
 */

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
  return ctx.payments.sendPayment(customerId, input, () => ctx.logger);
}

/** A page of payments, newest first, of an account's or a standing order's. */
async function paymentPage(ctx: Context, filter: PaymentFilter, args: { first?: number | null; after?: string | null }) {
  const limit = pageSize(args.first);
  const rows = await ctx.payments.paymentPage(filter, { after: decodeCursor(args.after, paymentCursorKey), limit });
  return connection(rows, limit, (p) => [p.createdAt.toISOString(), p.id], args.after);
}

async function accountOf(ctx: Context, owner: { accountId: string }, what: string): Promise<Account> {
  const account = await ctx.loaders.account.load(owner.accountId);
  if (!account) throw new Error(`account ${owner.accountId} of ${what} not found`);
  return account;
}

/** The account's balances, read together (one snapshot) whichever of the three fields are asked for. */
async function balancesOf(ctx: Context, account: Account) {
  const balances = await ctx.loaders.balances.load(account.id);
  if (!balances) throw new Error(`account ${account.id} not found for its balances`);
  return balances;
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
    me: async (_, __, ctx) => {
      const viewer = requireViewer(ctx);
      if (viewer.role !== 'customer') return null;
      return ctx.accounts.findCustomer(viewer.customerId);
    },
    account: (_, args, ctx) => ctx.accounts.visibleAccount(requireViewer(ctx), args.id),
    payment: (_, args, ctx) => ctx.payments.visiblePayment(requireViewer(ctx), args.id),
    ...eventResolvers.Query,
    operatorActions: async (_, args, ctx) => {
      requireOperator(ctx);
      const limit = pageSize(args.first ?? 50);
      const rows = await ctx.accounts.operatorActions({ after: decodeCursor(args.after, serialCursorKey), limit });
      return connection(rows, limit, (a) => [a.id.toString()], args.after);
    },
    heldPayments: async (_, args, ctx) => {
      requireOperator(ctx);
      const limit = pageSize(args.first ?? 50);
      const rows = await ctx.holds.heldPayments({ after: decodeCursor(args.after, heldCursorKey), limit });
      return connection(rows, limit, (p) => [p.heldAt.toISOString(), p.id], args.after);
    },
    quarantinedProviderEvents: async (_, args, ctx) => {
      requireOperator(ctx);
      const limit = pageSize(args.first ?? 50);
      const rows = await ctx.quarantine.page({
        after: decodeCursor(args.after, quarantineCursorKey),
        limit,
        unresolvedOnly: args.unresolvedOnly ?? false,
      });
      return connection(rows, limit, (q) => [q.receivedAt.toISOString(), q.id], args.after);
    },
    reconciliationBreaks: (_, args, ctx) => {
      requireOperator(ctx);
      return ctx.reconciliation.breaks(args.date);
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
        return result;
      } finally {
        end({ outcome });
      }
    },
    createCustomer: (_, args, ctx) => ctx.accounts.createCustomer(args.input, requireOperator(ctx)),
    openAccount: (_, args, ctx) => ctx.accounts.openAccount(args.input, requireOperator(ctx)),
    depositFunds: (_, args, ctx) => ctx.accounts.depositFunds(args.input, requireOperator(ctx)),
    ...webhookResolvers.Mutation,
    checkPayee: async (_, args, ctx) => {
      const customerId = requireCustomer(ctx);
      await spendOrThrow(ctx.budgets, 'payeeChecks', customerId);
      return ctx.payees.checkPayee(customerId, args.input);
    },
    // Saving a payee checks it first: the same budget as checkPayee.
    addPayee: async (_, args, ctx) => {
      const customerId = requireCustomer(ctx);
      await spendOrThrow(ctx.budgets, 'payeeChecks', customerId);
      return ctx.payees.addPayee(customerId, args.input);
    },
    removePayee: (_, args, ctx) => ctx.payees.removePayee(requireCustomer(ctx), args.id),
    approvePayment: (_, args, ctx) => ctx.holds.approvePayment(requireOperator(ctx), args.paymentId),
    rejectPayment: (_, args, ctx) => ctx.holds.rejectPayment(requireOperator(ctx), args.paymentId, args.reason),
    resolveQuarantinedProviderEvent: (_, args, ctx) => ctx.quarantine.resolve(requireOperator(ctx), args.id, args.note),
    cancelPayment: (_, args, ctx) => ctx.cancellation.cancelPayment(requireCustomer(ctx), args.paymentId, ctx.logger),
    createStandingOrder: async (_, args, ctx) => {
      const customerId = requireCustomer(ctx);
      const refused = await ctx.budgets.spend('standingOrders', customerId);
      if (refused) return { standingOrder: null, errors: [refused] };
      return ctx.standingOrders.create(customerId, args.input, ctx.logger);
    },
    cancelStandingOrder: (_, args, ctx) => ctx.standingOrders.cancel(requireCustomer(ctx), args.id, ctx.logger),
    reconcile: (_, args, ctx) => ctx.reconciliation.reconcile(args.date, requireOperator(ctx)),
    resolveReconciliationBreak: (_, args, ctx) => ctx.reconciliation.resolve(requireOperator(ctx), args.id, args.note),
  },

  Subscription: { ...subscriptionResolvers, ...eventResolvers.Subscription },

  PaymentEvent: eventResolvers.PaymentEvent,

  SendPaymentPayload: {
    replayed: (result) => result.payment !== null && result.replayed,
  },

  Customer: {
    accounts: (customer, _, ctx) => ctx.accounts.accountsOf(customer.id),
    payees: (customer, args, ctx) => ctx.payees.listPayees(customer.id, fieldPageSize('Customer.payees', args.first)),
  },

  Account: {
    payments: (account, args, ctx) => paymentPage(ctx, { accountId: account.id, status: args.status }, args),
    standingOrders: (account, args, ctx) =>
      ctx.standingOrders.listForAccount(account.id, fieldPageSize('Account.standingOrders', args.first)),
    ledger: async (account, args, ctx) => {
      const limit = pageSize(args.first);
      const rows = await ctx.accounts.ledgerPage(account.id, { after: decodeCursor(args.after, serialCursorKey), limit });
      return connection(rows, limit, (e) => [e.id.toString()], args.after);
    },
    availableBalance: async (account, _, ctx) => (await balancesOf(ctx, account)).available,
    ledgerBalance: async (account, _, ctx) => (await balancesOf(ctx, account)).ledger,
    pendingOutgoing: async (account, _, ctx) => (await balancesOf(ctx, account)).pendingOutgoing,
    balanceAt: async (account, args, ctx) => {
      const at = new Date(args.at);
      const balances = await ctx.ledger.balanceAt(account.id, at);
      return { at, availableBalance: balances.available, ledgerBalance: balances.ledger };
    },
    statement: async (account, args, ctx) => {
      const parsed = statementRange(args.from, args.to);
      if (!parsed.ok) throw fromDomainError(new DomainError(parsed.error));
      // Clamped like every connection, so the query cost (cost.ts) counts the page it will get.
      const limit = pageSize(args.first ?? 100);
      const after = decodeCursor(args.after, statementCursorKey);
      const [summary, rows] = await Promise.all([
        ctx.ledger.statementSummary(account.id, parsed.range),
        ctx.ledger.statementEntries(account.id, parsed.range, { after, limit }),
      ]);
      return { ...summary, entries: connection(rows, limit, (e) => [e.at.toISOString(), e.id.toString()], args.after) };
    },
    ...webhookResolvers.Account,
  },

  StatementEntry: {
    payment: (entry, _, ctx) => (entry.paymentId ? ctx.loaders.payment.load(entry.paymentId) : null),
    counterparty: (entry) =>
      entry.counterpartyName !== null && entry.counterpartySortCode !== null && entry.counterpartyAccountNumber !== null
        ? { name: entry.counterpartyName, sortCode: entry.counterpartySortCode, accountNumber: entry.counterpartyAccountNumber }
        : null,
  },

  ReconciliationBreak: {
    kind: (b) => b.kind as 'MISSING_OURS' | 'MISSING_THEIRS' | 'AMOUNT_MISMATCH',
  },

  WebhookEndpoint: webhookResolvers.WebhookEndpoint,

  Payment: {
    account: (payment, _, ctx) => accountOf(ctx, payment, `payment ${payment.id}`),
    recipient: recipientOf,
    standingOrder: (payment, _, ctx) => (payment.standingOrderId ? ctx.standingOrders.findById(payment.standingOrderId) : null),
    failureReason: (payment) => customerFailureReason(payment.status, payment.failureReason),
    attempts: async (payment, args, ctx) => {
      // The loader reads at most the field's maximum per payment; this answer shows `first` of them.
      const rows = (await ctx.loaders.attempts.load(payment.id)).slice(0, fieldPageSize('Payment.attempts', args.first));
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
    id: (action) => action.id.toString(),
  },

  QuarantinedProviderEvent: {
    eventId: (q) => q.eventKey,
    type: (q) => q.rawType,
    raw: (q) => JSON.stringify(q.raw),
  },

  StandingOrder: {
    account: (order, _, ctx) => accountOf(ctx, order, `standing order ${order.id}`),
    recipient: recipientOf,
    payments: (order, args, ctx) => paymentPage(ctx, { standingOrderId: order.id }, args),
  },

  LedgerEntry: {
    id: (entry) => entry.id.toString(),
    payment: (entry, _, ctx) => (entry.paymentId ? ctx.loaders.payment.load(entry.paymentId) : null),
    // The sender of a credit was stored with it; a payment's entries show the payment's recipient.
    counterparty: async (entry, _, ctx) => {
      if (entry.counterpartyName !== null && entry.counterpartySortCode !== null && entry.counterpartyAccountNumber !== null) {
        return { name: entry.counterpartyName, sortCode: entry.counterpartySortCode, accountNumber: entry.counterpartyAccountNumber };
      }
      const payment = entry.paymentId ? await ctx.loaders.payment.load(entry.paymentId) : null;
      return payment ? recipientOf(payment) : null;
    },
    reference: async (entry, _, ctx) => {
      if (entry.reference !== null || entry.paymentId === null) return entry.reference;
      return (await ctx.loaders.payment.load(entry.paymentId))?.reference ?? null;
    },
  },
};

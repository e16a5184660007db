import type { RateLimiterAbstract } from 'rate-limiter-flexible';
import type { AccountService } from '../accounts/accounts.ts';
import type { Viewer } from '../auth.ts';
import type { PrismaClient } from '../db/prisma.ts';
import type { EventFeed } from '../events/feed.ts';
import type { AccountEvents } from '../events/stream.ts';
import type { Reconciliation } from '../ledger/reconciliation.ts';
import type { LedgerReader } from '../ledger/statements.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { PayeeService } from '../payees/payees.ts';
import type { Cancellation } from '../payments/cancel.ts';
import type { HoldService } from '../payments/holds.ts';
import type { PaymentService } from '../payments/payment-service.ts';
import type { Quarantine } from '../payments/quarantine.ts';
import type { StandingOrders } from '../payments/standing-orders.ts';
import type { WebhookService } from '../webhooks/endpoints.ts';
import type { Budgets } from './budgets.ts';
import { forbidden, unauthenticated } from './errors.ts';
import type { Loaders } from './loaders.ts';
import type { SubscriptionBudget } from './subscription-budget.ts';

/** Everything a request is served with, built once per process. */
export interface Services {
  /** For the per-operation loaders only: resolvers read through the services below. */
  prisma: PrismaClient;
  payments: PaymentService;
  cancellation: Cancellation;
  standingOrders: StandingOrders;
  accounts: AccountService;
  /** Balances at a time and statements, from the books. */
  ledger: LedgerReader;
  /** The provider's settlement report against our books, and the breaks operators resolve. */
  reconciliation: Reconciliation;
  /** Payee checks and saved payees. */
  payees: PayeeService;
  /** Held payments: operators approve or reject them. */
  holds: HoldService;
  /** Provider events the parser refused: operators list and resolve them. */
  quarantine: Quarantine;
  /** Per-customer limit on sendPayment, shared by every API process; null when SEND_PAYMENT_RATE_LIMIT_PER_MINUTE is 0. */
  sendPaymentLimiter: RateLimiterAbstract | null;
  /** Per-customer budgets of the other mutations that write or call out, shared by every API process. */
  budgets: Budgets;
  /** The durable payment event stream, followed live by this process, for subscriptions. */
  events: EventFeed;
  /** An account's events: pages of its history and live streams. */
  accountEvents: AccountEvents;
  /** Live subscriptions each caller may hold on this process. */
  subscriptionBudget: SubscriptionBudget;
  metrics: Metrics;
  /** Customers' webhook endpoints and redeliveries. */
  webhooks: WebhookService;
  /** In a request's context, a child logger carrying its request id. */
  logger: Logger;
}

/** Everything a resolver may use: the process's services (not the database), plus the caller of this request. */
export interface Context extends Omit<Services, 'prisma'> {
  viewer: Viewer | null;
  /** Batched reads for nested fields, made for this operation only. */
  loaders: Loaders;
}

/** The request's own way to make its logger, and the logger once made (symbols: no resolver reads them). */
const MAKE_LOGGER = Symbol('makeLogger');
const LOGGER = Symbol('logger');

interface RequestScope {
  [MAKE_LOGGER]: () => Logger;
  [LOGGER]: Logger | null;
}

/**
 * Makes each request's context: its own viewer and loaders on top of the process's services,
 * which it inherits rather than copies. Apollo copies a context's own properties for every
 * operation (and would run a getter while copying), so that copy is four fields. The request's
 * logger, carrying its id, is made the first time something logs; below info, most requests
 * never log. The getter that makes it is defined once per process, on a prototype every context
 * shares; a getter defined for each request cost more than all the rest of the context.
 */
export function requestContexts(services: Services): (own: { viewer: Viewer | null; loaders: Loaders; logger: () => Logger }) => Context {
  const shared: object = Object.create(services, {
    logger: {
      get(this: RequestScope): Logger {
        this[LOGGER] ??= this[MAKE_LOGGER]();
        return this[LOGGER];
      },
    },
  });
  return (own) => {
    const context: Pick<Context, 'viewer' | 'loaders'> & RequestScope = Object.create(shared);
    context.viewer = own.viewer;
    context.loaders = own.loaders;
    context[MAKE_LOGGER] = own.logger;
    context[LOGGER] = null;
    return context as Context & RequestScope;
  };
}

export function requireViewer(ctx: Context): Viewer {
  if (!ctx.viewer) throw unauthenticated();
  return ctx.viewer;
}

/** The operator's id (the token's `sub`), recorded on what they change; FORBIDDEN for anyone else. */
export function requireOperator(ctx: Context): string {
  const viewer = requireViewer(ctx);
  if (viewer.role !== 'operator') throw forbidden();
  return viewer.operatorId;
}

/** The customer id of the caller; operators may not act as customers. */
export function requireCustomer(ctx: Context): string {
  const viewer = requireViewer(ctx);
  if (viewer.role !== 'customer') throw forbidden('Only a customer may do this');
  return viewer.customerId;
}

import { GraphQLError } from 'graphql';
import type pg from 'pg';
import { RateLimiterPostgres, RateLimiterRes } from 'rate-limiter-flexible';
import type { Config } from '../config.ts';
import { type ErrorCode, type UserError, userError } from '../errors.ts';

/**
 * Per-customer budgets of the mutations that write or call out, besides sendPayment's own limit:
 * payee checks (`checkPayee` and `addPayee`, one budget: each asks the recipient's bank, so
 * unbudgeted they are a name oracle), `createStandingOrder`, webhook endpoint create and delete,
 * and `redeliverWebhookEvent`. Counted in PostgreSQL (table rate_limits, the same limiter as
 * sendPayment's), so a budget holds across every API process; a budget of 0 is off.
 *
 * A refusal is RATE_LIMITED: a UserError in a payload that has `errors`, `extensions.code` otherwise.
 */
export type BudgetName = keyof Config['budgets']['perMinute'];

const WHAT: Record<BudgetName, string> = {
  payeeChecks: 'payee checks',
  standingOrders: 'standing orders created',
  webhookEndpoints: 'webhook endpoint changes',
  webhookRedeliveries: 'webhook redeliveries',
};

/** Null when the customer may go on; otherwise the refusal, saying when to try again. */
export type Spend = (budget: BudgetName, customerId: string) => Promise<UserError | null>;

export interface Budgets {
  spend: Spend;
}

/** The budgets of `perMinute`, counted in `pool`'s database; with no pool every budget is off. */
export function createBudgets(options: { pool: Pick<pg.Pool, 'query'> | null; perMinute: Config['budgets']['perMinute'] }): Budgets {
  const limiters = new Map<BudgetName, RateLimiterPostgres>();
  for (const [name, points] of Object.entries(options.perMinute) as Array<[BudgetName, number]>) {
    if (points <= 0 || !options.pool) continue;
    limiters.set(
      name,
      new RateLimiterPostgres({
        storeClient: options.pool,
        storeType: 'pool',
        tableName: 'rate_limits',
        tableCreated: true,
        keyPrefix: `budget-${name}`,
        points,
        duration: 60,
      }),
    );
  }
  return {
    async spend(budget, customerId) {
      const limiter = limiters.get(budget);
      if (!limiter) return null;
      try {
        await limiter.consume(customerId);
        return null;
      } catch (error) {
        if (!(error instanceof RateLimiterRes)) throw error;
        const seconds = Math.ceil(error.msBeforeNext / 1000);
        return userError('RATE_LIMITED', `Too many ${WHAT[budget]}: at most ${limiter.points} a minute; try again in ${seconds} s`);
      }
    },
  };
}

/** Spends from a budget for a mutation with no payload: RATE_LIMITED in `extensions.code` when refused. */
export async function spendOrThrow(budgets: Budgets, budget: BudgetName, customerId: string): Promise<void> {
  const refused = await budgets.spend(budget, customerId);
  if (refused) throw new GraphQLError(refused.message, { extensions: { code: 'RATE_LIMITED' satisfies ErrorCode } });
}

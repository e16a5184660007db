import { GraphQLError } from 'graphql';
import { comparePositions, decodeCursor, type EventPosition } from '../events/cursor.ts';
import type { FeedEvent } from '../events/feed.ts';
import { EventsPrunedError } from '../events/store.ts';
import { type Context, requireViewer } from './context.ts';
import type { PaymentEventResolvers, QueryResolvers, SubscriptionResolvers } from './generated/types.ts';
import { edgesPage, FIELD_PAGES } from './pagination.ts';
import { budgeted } from './subscription-budget.ts';

/**
 * The durable payment events over GraphQL: the `paymentEvents` page and the `accountEvents`
 * subscription (replay, then live). Both read the same stream in the same order, so a client can
 * page with one and carry on with the other from the last id it saw.
 */

export const MAX_EVENTS_PAGE = FIELD_PAGES['Query.paymentEvents'].max;

const badInput = (message: string, field: string) => new GraphQLError(message, { extensions: { code: 'BAD_USER_INPUT', field: [field] } });

/** Throws unless the caller may read the account's events (its owner, or an operator). */
export async function requireEventAccount(ctx: Context, accountId: string): Promise<void> {
  // Not yours looks exactly like not there.
  if (!(await ctx.accounts.visibleAccount(requireViewer(ctx), accountId))) throw badInput('No such account', 'accountId');
}

const PRUNED_MESSAGE =
  'after is older than the event retention: events after it were deleted; read paymentEvents from the start and reconcile';

/** BAD_USER_INPUT naming `after` for a read that retention overtook; anything else unchanged. */
const refusingPruned = (error: unknown) => (error instanceof EventsPrunedError ? badInput(PRUNED_MESSAGE, 'after') : error);

/**
 * The position of a client's `after`, refused when it is not a cursor or retention passed it. The
 * reads themselves check retention again in the statement that reads each page: this early check
 * only refuses a subscription before it starts.
 */
async function resumePosition(ctx: Context, after: string | null | undefined): Promise<EventPosition | null> {
  if (after === null || after === undefined) return null;
  const position = decodeCursor(after);
  if (!position) throw badInput('after is not an event cursor: pass the id of an event you received', 'after');
  const pruned = await ctx.accountEvents.prunedThrough();
  if (pruned && comparePositions(position, pruned) < 0) throw badInput(PRUNED_MESSAGE, 'after');
  return position;
}

/** The stream, with a prune that overtakes its replay turned into the client's BAD_USER_INPUT. */
async function* mappingPruned(source: AsyncIterable<FeedEvent>): AsyncGenerator<FeedEvent> {
  try {
    yield* source;
  } catch (error) {
    throw refusingPruned(error);
  }
}

export const eventResolvers = {
  Query: {
    paymentEvents: async (_, args, ctx) => {
      // The generated type says non-null (the schema has a default), but a client may send null.
      const first = args.first ?? FIELD_PAGES['Query.paymentEvents'].default;
      if (!Number.isInteger(first) || first < 1 || first > MAX_EVENTS_PAGE) {
        throw badInput(`first must be between 1 and ${MAX_EVENTS_PAGE}`, 'first');
      }
      await requireEventAccount(ctx, args.accountId);
      const after = args.after === null || args.after === undefined ? null : decodeCursor(args.after);
      if (args.after !== null && args.after !== undefined && !after)
        throw badInput('after is not an event cursor: pass the id of an event you received', 'after');
      // Retention is checked in the statement that reads the page: a prune between a check and the
      // read cannot leave a silent gap.
      const rows = await ctx.accountEvents.page(args.accountId, after, first + 1).catch((error: unknown) => {
        throw refusingPruned(error);
      });
      return edgesPage(
        rows.slice(0, first).map((node) => ({ cursor: node.id, node })),
        rows.length > first,
        args.after,
      );
    },
  } satisfies QueryResolvers,
  Subscription: {
    accountEvents: {
      subscribe: budgeted(async (_, args, ctx) => {
        await requireEventAccount(ctx, args.accountId);
        return mappingPruned(ctx.accountEvents.follow(args.accountId, await resumePosition(ctx, args.after)));
      }),
      // The generated type leaves the parent untyped here: it is what `subscribe` yields.
      resolve: (event: FeedEvent) => event,
    },
  } satisfies SubscriptionResolvers,
  PaymentEvent: {
    payment: (event) => event.payment(),
  } satisfies PaymentEventResolvers,
};

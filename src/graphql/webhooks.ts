import { spendOrThrow } from './budgets.ts';
import { requireCustomer } from './context.ts';
import type { AccountResolvers, MutationResolvers, WebhookEndpointResolvers } from './generated/types.ts';
import { connection, decodeCursor, deliveryCursorKey, pageSize } from './pagination.ts';

/**
 * Webhooks over GraphQL (the contract's "Webhooks" section): customers manage their own
 * accounts' endpoints; reads go through `Account`, which is already limited to what the caller
 * may see (a customer its own accounts, an operator every account).
 */

export const webhookResolvers = {
  Mutation: {
    createWebhookEndpoint: async (_, args, ctx) => {
      const customerId = requireCustomer(ctx);
      const refused = await ctx.budgets.spend('webhookEndpoints', customerId);
      if (refused) return { endpoint: null, secret: null, errors: [refused] };
      return ctx.webhooks.createEndpoint(customerId, args.input);
    },
    deleteWebhookEndpoint: async (_, args, ctx) => {
      const customerId = requireCustomer(ctx);
      await spendOrThrow(ctx.budgets, 'webhookEndpoints', customerId);
      return ctx.webhooks.deleteEndpoint(customerId, args.id);
    },
    redeliverWebhookEvent: async (_, args, ctx) => {
      const customerId = requireCustomer(ctx);
      await spendOrThrow(ctx.budgets, 'webhookRedeliveries', customerId);
      return ctx.webhooks.redeliver(customerId, args.endpointId, args.eventId);
    },
  } satisfies MutationResolvers,
  Account: {
    webhookEndpoints: (account, _, ctx) => ctx.webhooks.listEndpoints(account.id),
  } satisfies AccountResolvers,
  WebhookEndpoint: {
    deliveries: async (endpoint, args, ctx) => {
      const limit = pageSize(args.first);
      const rows = await ctx.webhooks.deliveryPage(endpoint.id, { after: decodeCursor(args.after, deliveryCursorKey), limit });
      return connection(rows, limit, (d) => [d.createdAt.toISOString(), d.id]);
    },
  } satisfies WebhookEndpointResolvers,
};

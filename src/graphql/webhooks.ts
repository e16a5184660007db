import type { Account } from '../db/prisma.ts';
import type { WebhookDelivery, WebhookEndpoint } from '../generated/prisma/client.ts';
import { requireCustomer, type Context } from './context.ts';
import { afterCreatedAtId, connection, decodeCursor, deliveryCursorKey, pageSize } from './pagination.ts';

/**
 * Webhooks over GraphQL (the contract's "Webhooks" section): customers manage their own
 * accounts' endpoints; reads go through `Account`, which is already limited to what the caller
 * may see (a customer its own accounts, an operator every account).
 */

interface PageArgs {
  first?: number | null;
  after?: string | null;
}

export const webhookResolvers = {
  Mutation: {
    createWebhookEndpoint: (_: unknown, args: { input: unknown }, ctx: Context) =>
      ctx.webhooks.createEndpoint(requireCustomer(ctx), args.input),
    deleteWebhookEndpoint: (_: unknown, args: { id: string }, ctx: Context) => ctx.webhooks.deleteEndpoint(requireCustomer(ctx), args.id),
    redeliverWebhookEvent: (_: unknown, args: { endpointId: string; eventId: string }, ctx: Context) =>
      ctx.webhooks.redeliver(requireCustomer(ctx), args.endpointId, args.eventId),
  },
  Account: {
    webhookEndpoints: (account: Account, _: unknown, ctx: Context) =>
      ctx.prisma.webhookEndpoint.findMany({ where: { accountId: account.id, deletedAt: null }, orderBy: [{ createdAt: 'asc' }, { id: 'asc' }] }),
  },
  WebhookEndpoint: {
    deliveries: async (endpoint: WebhookEndpoint, args: PageArgs, ctx: Context) => {
      const limit = pageSize(args.first);
      const after = decodeCursor(args.after, deliveryCursorKey);
      const rows = await ctx.prisma.webhookDelivery.findMany({
        where: {
          endpointId: endpoint.id,
          ...afterCreatedAtId(after),
        },
        orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
        take: limit + 1,
      });
      return connection(rows, limit, (d: WebhookDelivery) => [d.createdAt.toISOString(), d.id]);
    },
  },
};

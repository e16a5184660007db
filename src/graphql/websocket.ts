import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import { GraphQLError, type GraphQLSchema, NoSchemaIntrospectionCustomRule, type ValidationRule } from 'graphql';
import { CloseCode, type Disposable } from 'graphql-ws';
import { useServer } from 'graphql-ws/use/ws';
import { WebSocketServer } from 'ws';
import type { Session, TokenVerifier } from '../auth.ts';
import type { Context, Services } from './context.ts';
import { createFormatError } from './errors.ts';
import { createLoaders } from './loaders.ts';
import { checkWsOperation, withCode } from './ws-operation.ts';

/** Limits that keep one WebSocket client from holding unbounded server resources. */
export const WS_LIMITS = {
  /** Active subscriptions on one connection. */
  subscriptionsPerConnection: 50,
  /** Bytes queued for a client that is not reading; past this the connection is closed. */
  maxBufferedBytes: 1_000_000,
  /** Largest message a client may send. */
  maxPayloadBytes: 64 * 1024,
  /** Ping interval; a client that misses a pong is dropped. */
  keepAliveMs: 12_000,
} as const;

/** Per-connection state graphql-ws keeps for us. */
interface ConnectionExtra extends Record<PropertyKey, unknown> {
  session: Session;
  expiry: NodeJS.Timeout;
}

/**
 * graphql-ws on `path` of `httpServer`. The token arrives in connection_init. Every error a client
 * sees goes through the same formatting as HTTP (errors.ts): in a result (onNext) or as an `error`
 * message (onError), including one thrown by a live subscription's source, which graphql-ws would
 * otherwise send with its raw message.
 */
export function serveWebSocket(options: {
  httpServer: Server;
  path: string;
  schema: GraphQLSchema;
  services: Services;
  tokens: TokenVerifier;
  validationRules: readonly ValidationRule[];
  introspection: boolean;
}): Disposable {
  const { schema, services } = options;
  const { logger } = services;
  const rules = [...options.validationRules, ...(options.introspection ? [] : [NoSchemaIntrospectionCustomRule])];
  // Errors are logged with the operation they belong to.
  const formatFor = (id: string, operationName: string | null | undefined) => {
    const format = createFormatError(logger.child({ operationId: id, subscription: operationName ?? null }), {
      hideSuggestions: !options.introspection,
    });
    return (error: GraphQLError) => {
      // graphql-ws wraps what a subscription's source throws in a GraphQLError carrying only its
      // message: judge (and log) what was thrown.
      const wrapped = error.extensions.code === undefined && error.path === undefined ? error.originalError : undefined;
      const thrown = wrapped ?? error;
      return format(thrown instanceof GraphQLError ? thrown.toJSON() : error.toJSON(), thrown);
    };
  };

  const wsServer = new WebSocketServer({ server: options.httpServer, path: options.path, maxPayload: WS_LIMITS.maxPayloadBytes });
  return useServer<Record<string, unknown>, ConnectionExtra>(
    {
      schema,
      isProd: true,
      onConnect: async (ctx) => {
        const params = ctx.connectionParams ?? {};
        const header = params.authorization ?? params.Authorization;
        const session = await options.tokens.fromHeader(header).catch(() => null);
        // false makes graphql-ws close the socket with 4403 Forbidden.
        if (!session) return false;
        ctx.extra.session = session;
        const ms = Math.max(0, session.expiresAt.getTime() - Date.now());
        ctx.extra.expiry = setTimeout(() => ctx.extra.socket.close(CloseCode.Forbidden, 'Token expired'), Math.min(ms, 2 ** 31 - 1));
        ctx.extra.expiry.unref();
        return true;
      },
      onSubscribe: (ctx, id, payload) => {
        // graphql-ws has already registered this subscription in ctx.subscriptions.
        if (Object.keys(ctx.subscriptions).length > WS_LIMITS.subscriptionsPerConnection) {
          return [
            withCode(new GraphQLError(`At most ${WS_LIMITS.subscriptionsPerConnection} subscriptions per connection`), 'BAD_REQUEST'),
          ];
        }
        const checked = checkWsOperation(schema, payload, rules);
        if ('errors' in checked) return checked.errors;
        return {
          schema,
          document: checked.document,
          variableValues: payload.variables,
          operationName: payload.operationName,
          contextValue: {
            ...services,
            logger: logger.child({ requestId: randomUUID(), operationId: id, subscription: payload.operationName ?? null }),
            viewer: ctx.extra.session?.viewer ?? null,
            loaders: createLoaders(services.prisma),
          } satisfies Context,
        };
      },
      onNext: (ctx, id, payload, _args, result) => {
        if (ctx.extra.socket.bufferedAmount > WS_LIMITS.maxBufferedBytes) {
          ctx.extra.socket.close(1013, 'Client too slow');
        }
        if (!result.errors) return undefined;
        return { ...result, errors: result.errors.map(formatFor(id, payload.operationName)) };
      },
      onError: (_ctx, id, payload, errors) => errors.map(formatFor(id, payload.operationName)),
      onClose: (ctx) => {
        if (ctx.extra.expiry) clearTimeout(ctx.extra.expiry);
      },
    },
    wsServer,
    WS_LIMITS.keepAliveMs,
  );
}

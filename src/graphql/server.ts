import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApolloServer, type ApolloServerPlugin } from '@apollo/server';
import {
  ApolloServerPluginCacheControlDisabled,
  ApolloServerPluginLandingPageDisabled,
  ApolloServerPluginSchemaReportingDisabled,
  ApolloServerPluginUsageReportingDisabled,
} from '@apollo/server/plugin/disabled';
import { ApolloServerPluginDrainHttpServer } from '@apollo/server/plugin/drainHttpServer';
import { makeExecutableSchema } from '@graphql-tools/schema';
import express, { type ErrorRequestHandler } from 'express';
import type { GraphQLSchema } from 'graphql';
import { AuthError, type TokenVerifier } from '../auth.ts';
import type { Logger } from '../logger.ts';
import { type Context, requestContexts, type Services } from './context.ts';
import { createFormatError, serviceUnavailableStatus, unauthenticated } from './errors.ts';
import { graphqlHandler, isPathOf } from './http-integration.ts';
import type { IdeDemo } from './ide/page.ts';
import { costLimitPlugin, createArmor, graphqlOverHttpStatus, QUERY_LIMITS } from './limits.ts';
import { createLoaders } from './loaders.ts';
import { resolvers } from './resolvers.ts';
import { statementCsvHandler } from './statement-csv.ts';
import { serveWebSocket } from './websocket.ts';

export const SCHEMA_FILE = new URL('../../schema.graphql', import.meta.url);

export function buildSchema(): GraphQLSchema {
  return makeExecutableSchema({ typeDefs: readFileSync(SCHEMA_FILE, 'utf8'), resolvers });
}

export interface ApiOptions {
  services: Services;
  tokens: TokenVerifier;
  port: number;
  host?: string;
  /** Serve the IDE on GET /graphql for browsers. */
  ide: boolean;
  /** A token pre-filled in the IDE's headers (the all-in-one dev start only). */
  ideDemo?: IdeDemo;
  introspection: boolean;
  /** Serve GET /metrics on this (public) port; otherwise only the ops port serves it. */
  metricsPublic: boolean;
  /** Answers GET /readyz: true when this process can serve. */
  ready: () => Promise<boolean>;
}

export { WS_LIMITS } from './websocket.ts';

export interface RunningApi {
  url: string;
  server: Server;
  close(): Promise<void>;
}

/** One log line per GraphQL operation, on the request's own logger (so it carries the request id). */
function accessLog(logger: Logger): ApolloServerPlugin<Context> {
  return {
    async requestDidStart({ contextValue }) {
      // Below info (LOG_LEVEL=warn) there is no line to write: no hooks, and the request's own
      // logger is never made (the context makes it on first use).
      if (!logger.isLevelEnabled('info')) return {};
      const started = performance.now();
      return {
        async willSendResponse({ operationName, errors, operation }) {
          contextValue.logger.info(
            {
              operation: operationName ?? null,
              type: operation?.operation ?? null,
              ms: Math.round((performance.now() - started) * 10) / 10,
              errors: errors?.map((e) => e.extensions.code ?? 'INTERNAL_SERVER_ERROR') ?? [],
            },
            'graphql request',
          );
        },
      };
    },
  };
}

/** HTTP (GraphQL, IDE, health, metrics unless `metricsPublic` is false) and WebSocket on one port. */
export async function startApi(options: ApiOptions): Promise<RunningApi> {
  const { services, tokens } = options;
  const { logger } = services;
  const schema = buildSchema();
  const app = express();
  app.disable('x-powered-by');
  // Requests are routed once GraphQL is ready to answer them (below); the drain plugin needs the server first.
  const httpServer = createServer();

  const armor = createArmor();
  // graphql-armor's types name Apollo's CommonJS typings; at run time it is the same plugin API.
  const armorPlugins = armor.plugins as unknown as ApolloServerPlugin<Context>[];
  const apollo = new ApolloServer<Context>({
    schema,
    introspection: options.introspection,
    includeStacktraceInErrorResponses: false,
    // One operation per request: a batch would multiply every limit below by its length.
    allowBatchedHttpRequests: false,
    parseOptions: { maxTokens: QUERY_LIMITS.maxTokens },
    validationRules: armor.validationRules,
    formatError: createFormatError(logger, { hideSuggestions: !options.introspection }),
    // Tokens travel in a header, never in cookies, so a request carrying Authorization cannot
    // be a cross-site forgery: such GETs are allowed without a preflight header.
    csrfPrevention: { requestHeaders: ['authorization', 'x-apollo-operation-name', 'apollo-require-preflight'] },
    plugins: [
      ...armorPlugins,
      costLimitPlugin<Context>(),
      graphqlOverHttpStatus<Context>(),
      serviceUnavailableStatus<Context>(),
      accessLog(logger),
      ApolloServerPluginDrainHttpServer({ httpServer }),
      ApolloServerPluginLandingPageDisabled(),
      // No type or field of the schema carries a cache hint, and money is never answered from a
      // cache: the plugin's hook on every resolved field only cost time.
      ApolloServerPluginCacheControlDisabled(),
      // Nothing about this API's schema or traffic is sent to Apollo's cloud.
      ApolloServerPluginUsageReportingDisabled(),
      ApolloServerPluginSchemaReportingDisabled(),
    ],
  });
  await apollo.start();

  if (options.metricsPublic) {
    app.get('/metrics', async (_req, res) => {
      res.type(services.metrics.registry.contentType).send(await services.metrics.registry.metrics());
    });
  }
  app.get('/accounts/:id/statement.csv', statementCsvHandler({ tokens, accounts: services.accounts, ledger: services.ledger, logger }));
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', async (_req, res) => {
    const ok = await options.ready().catch(() => false);
    res.status(ok ? 200 : 503).json({ status: ok ? 'ready' : 'not ready' });
  });

  if (options.ide) {
    // Loaded only when the IDE is served: GraphiQL's inlined bundle is megabytes of JavaScript that
    // a production process (GRAPHQL_IDE off) would parse at every start for nothing.
    const { readIdeAssets, renderIde } = await import('./ide/page.ts');
    const html = renderIde(options.ideDemo);
    app.get('/graphql', (req, res, next) => {
      const wantsHtml = req.accepts(['application/json', 'application/graphql-response+json', 'text/html']) === 'text/html';
      if (!wantsHtml) return next();
      res.type('html').send(html);
    });
    for (const [path, body] of Object.entries(readIdeAssets())) {
      app.get(path, (_req, res) => {
        res.type('application/javascript').send(body);
      });
    }
  }

  // Anything that fails outside Apollo (a body that is not JSON, one over the size limit, a metrics
  // scrape while the database is away) is answered in JSON, without Express's HTML stack trace.
  const failOutsideGraphql = (error: unknown, req: IncomingMessage, res: ServerResponse): void => {
    const status =
      typeof error === 'object' && error !== null && 'status' in error && typeof error.status === 'number' ? error.status : 500;
    // The path without its query string: a GET's query string carries the operation's variables.
    if (status >= 500) logger.error({ err: error, path: req.url?.split('?')[0] }, 'unexpected error outside GraphQL');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const message = status === 413 ? 'Request body too large' : status < 500 ? 'Malformed request' : 'Internal server error';
    const code = status < 500 ? 'BAD_REQUEST' : 'INTERNAL_SERVER_ERROR';
    res.statusCode = status;
    res.setHeader('content-type', 'application/json; charset=utf-8');
    res.end(JSON.stringify({ errors: [{ message, extensions: { code } }] }));
  };

  const contextOf = requestContexts(services);
  const graphql = graphqlHandler(apollo, {
    bodyLimit: '64kb',
    context: async (req, requestId): Promise<Context> => {
      try {
        const viewer = (await tokens.fromHeader(req.headers.authorization))?.viewer ?? null;
        return contextOf({ viewer, loaders: createLoaders(services.prisma), logger: () => logger.child({ requestId }) });
      } catch (error) {
        if (error instanceof AuthError) throw unauthenticated(`Unauthenticated: ${error.message}`);
        throw error;
      }
    },
    fail: failOutsideGraphql,
  });
  // GETs (and any other spelling of the path) reach it through Express, after the IDE's page.
  app.use('/graphql', graphql);
  const errorHandler: ErrorRequestHandler = (error: unknown, req, res, _next) => failOutsideGraphql(error, req, res);
  app.use(errorHandler);
  // A POST to /graphql, every operation a client sends, goes straight to GraphQL: Express's router
  // (prototype swaps, its layers) cost more per payment than anything it does for that request.
  httpServer.on('request', (req: IncomingMessage, res: ServerResponse) => {
    if (req.method === 'POST' && isPathOf('/graphql', req.url)) graphql(req, res);
    else app(req, res);
  });

  // Subscriptions: graphql-ws on the same port and path.
  const wsCleanup = serveWebSocket({
    httpServer,
    path: '/graphql',
    schema,
    services,
    tokens,
    validationRules: armor.validationRules,
    introspection: options.introspection,
  });

  await new Promise<void>((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(options.port, options.host ?? '0.0.0.0', () => resolve());
  });
  const { port } = httpServer.address() as AddressInfo;
  const url = `http://localhost:${port}/graphql`;
  logger.info({ url }, 'API listening');

  return {
    url,
    server: httpServer,
    close: async () => {
      // Close every WebSocket with 1001 Going Away (clients reconnect elsewhere), then drain HTTP.
      await wsCleanup.dispose();
      await apollo.stop();
    },
  };
}

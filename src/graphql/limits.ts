import type { ApolloServerPlugin } from '@apollo/server';
import { ApolloArmor } from '@escape.tech/graphql-armor';
import Negotiator from 'negotiator';
import { COST_LIMITS, costError } from './cost.ts';

/**
 * Query abuse limits, applied before execution to HTTP and WebSocket operations alike: the shape
 * of the document by graphql-armor during validation, its cost once its variables are known
 * (cost.ts). Generous for every operation the product needs (the IDE's walk-through, its
 * introspection query), tight for anything built to exhaust the server.
 */
export const QUERY_LIMITS = {
  maxDepth: 10,
  maxAliases: 15,
  maxTokens: 2_000,
  maxDirectives: 20,
  maxCost: COST_LIMITS.maxCost,
} as const;

export function createArmor() {
  return new ApolloArmor({
    maxDepth: { n: QUERY_LIMITS.maxDepth },
    maxAliases: { n: QUERY_LIMITS.maxAliases },
    // The token limit is graphql's own parse option (Apollo's parseOptions, ws-operation.ts):
    // armor's parses separately and turns a plain syntax error into a 500.
    maxTokens: { enabled: false },
    maxDirectives: { n: QUERY_LIMITS.maxDirectives },
    // armor's cost counts only a literal `first`; cost.ts counts variables and defaults too.
    costLimit: { enabled: false },
    // "Did you mean ...?" hints are removed by the error formatting (errors.ts), on HTTP and
    // WebSocket alike; armor's plugin sees only HTTP and misses enum hints.
    blockFieldSuggestion: { enabled: false },
  }).protect();
}

/** Refuses an HTTP operation over the cost limit, once Apollo knows its variables. */
export function costLimitPlugin<T extends object>(): ApolloServerPlugin<T> {
  return {
    async requestDidStart() {
      return {
        async didResolveOperation({ schema, document, request, operationName }) {
          const error = costError({ schema, document, operationName, variables: request.variables });
          if (error) throw error;
        },
      };
    },
  };
}

/**
 * Status codes of GraphQL over HTTP for a request that never executed (a document that does not
 * parse or validate, variables that do not fit it, an operation over the cost limit): 200 when the
 * response is `application/json` (the legacy type, where clients read errors from the body), 400
 * when it is `application/graphql-response+json`. Errors raised while executing are not touched.
 */
const GRAPHQL_RESPONSE_JSON = 'application/graphql-response+json';

/** The response type Apollo picks for an Accept header (it negotiates with the same library). */
function responseType(accept: string | undefined): string | undefined {
  if (!accept) return 'application/json';
  return new Negotiator({ headers: { accept } }).mediaType(['application/json', GRAPHQL_RESPONSE_JSON]);
}

export function graphqlOverHttpStatus<T extends object>(): ApolloServerPlugin<T> {
  const requestErrors = new Set(['GRAPHQL_PARSE_FAILED', 'GRAPHQL_VALIDATION_FAILED', 'BAD_USER_INPUT']);
  return {
    async requestDidStart() {
      return {
        async willSendResponse({ request, response }) {
          if (response.body.kind !== 'single') return;
          const { data, errors } = response.body.singleResult;
          if (data !== undefined || !errors?.length) return;
          if (!errors.every((e) => requestErrors.has(String(e.extensions?.code)))) return;
          response.http.status = responseType(request.http?.headers.get('accept')) === GRAPHQL_RESPONSE_JSON ? 400 : 200;
        },
      };
    },
  };
}

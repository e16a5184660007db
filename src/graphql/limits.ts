import type { ApolloServerPlugin } from '@apollo/server';
import { ApolloArmor } from '@escape.tech/graphql-armor';
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
    maxTokens: { n: QUERY_LIMITS.maxTokens },
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

import type { ApolloServerPlugin } from '@apollo/server';
import { ApolloArmor } from '@escape.tech/graphql-armor';
import { GraphQLError, parse, specifiedRules, validate, type DocumentNode, type GraphQLSchema, type ValidationRule } from 'graphql';
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

export function createArmor(options: { production: boolean }) {
  return new ApolloArmor({
    maxDepth: { n: QUERY_LIMITS.maxDepth },
    maxAliases: { n: QUERY_LIMITS.maxAliases },
    maxTokens: { n: QUERY_LIMITS.maxTokens },
    maxDirectives: { n: QUERY_LIMITS.maxDirectives },
    // armor's cost counts only a literal `first`; cost.ts counts variables and defaults too.
    costLimit: { enabled: false },
    // "Did you mean ...?" hints reveal the schema when introspection is off.
    blockFieldSuggestion: { enabled: options.production },
  }).protect();
}

/**
 * Parses and validates an operation that arrives over the WebSocket with the same limits as
 * HTTP: the token limit during parsing, the armor rules during validation.
 */
export function parseAndValidate(
  schema: GraphQLSchema,
  query: string,
  rules: readonly ValidationRule[],
): { document: DocumentNode } | { errors: GraphQLError[] } {
  let document: DocumentNode;
  try {
    document = parse(query, { maxTokens: QUERY_LIMITS.maxTokens });
  } catch (error) {
    return { errors: [error instanceof GraphQLError ? error : new GraphQLError('Syntax error')] };
  }
  const errors = validate(schema, document, [...specifiedRules, ...rules]);
  return errors.length > 0 ? { errors: [...errors] } : { document };
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

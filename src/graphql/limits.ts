import { ApolloArmor } from '@escape.tech/graphql-armor';
import { GraphQLError, parse, specifiedRules, validate, type DocumentNode, type GraphQLSchema, type ValidationRule } from 'graphql';

/**
 * Query abuse limits (graphql-armor), applied before execution to HTTP and WebSocket operations
 * alike. Generous for every operation the product needs (the IDE's walk-through, its
 * introspection query), tight for anything built to exhaust the server.
 */
export const QUERY_LIMITS = {
  maxDepth: 10,
  maxAliases: 15,
  maxTokens: 2_000,
  maxDirectives: 20,
  maxCost: 5_000,
} as const;

export function createArmor(options: { production: boolean }) {
  return new ApolloArmor({
    maxDepth: { n: QUERY_LIMITS.maxDepth },
    maxAliases: { n: QUERY_LIMITS.maxAliases },
    maxTokens: { n: QUERY_LIMITS.maxTokens },
    maxDirectives: { n: QUERY_LIMITS.maxDirectives },
    costLimit: { maxCost: QUERY_LIMITS.maxCost },
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

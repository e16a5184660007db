import {
  type DocumentNode,
  GraphQLError,
  type GraphQLSchema,
  getOperationAST,
  getVariableValues,
  parse,
  specifiedRules,
  type ValidationRule,
  validate,
} from 'graphql';
import type { SubscribePayload } from 'graphql-ws';
import { costError } from './cost.ts';
import { QUERY_LIMITS } from './limits.ts';

/**
 * The checks Apollo Server runs on an HTTP operation before executing it, for one that arrives over
 * the WebSocket: the token limit while parsing, the armor rules while validating, an operation to
 * run, variables that fit it, and its cost with those variables. Each refusal carries the code
 * Apollo would give it, so the WebSocket's error masking lets it through as it does on HTTP.
 */
export function checkWsOperation(
  schema: GraphQLSchema,
  payload: SubscribePayload,
  rules: readonly ValidationRule[],
): { document: DocumentNode } | { errors: GraphQLError[] } {
  let document: DocumentNode;
  try {
    document = parse(payload.query, { maxTokens: QUERY_LIMITS.maxTokens });
  } catch (error) {
    return { errors: [withCode(error instanceof GraphQLError ? error : new GraphQLError('Syntax error'), 'GRAPHQL_PARSE_FAILED')] };
  }
  const invalid = validate(schema, document, [...specifiedRules, ...rules]);
  if (invalid.length > 0) return { errors: invalid.map((e) => withCode(e, 'GRAPHQL_VALIDATION_FAILED')) };
  const operation = getOperationAST(document, payload.operationName);
  if (!operation) {
    return {
      errors: [
        withCode(new GraphQLError('Unable to identify the operation to run; name it in operationName'), 'OPERATION_RESOLUTION_FAILURE'),
      ],
    };
  }
  const { errors } = getVariableValues(schema, operation.variableDefinitions ?? [], payload.variables ?? {});
  if (errors) return { errors: errors.map((e) => withCode(e, 'BAD_USER_INPUT')) };
  const tooCostly = costError({ schema, document, operationName: payload.operationName, variables: payload.variables });
  return tooCostly ? { errors: [tooCostly] } : { document };
}

/** `error` with `extensions.code` set to `code` unless it already has one. */
export function withCode(error: GraphQLError, code: string): GraphQLError {
  if (typeof error.extensions.code === 'string') return error;
  return new GraphQLError(error.message, {
    nodes: error.nodes ?? null,
    source: error.source ?? null,
    positions: error.positions ?? null,
    path: error.path ?? null,
    originalError: error.originalError ?? null,
    extensions: { ...error.extensions, code },
  });
}

import type { ApolloServerPlugin } from '@apollo/server';
import { unwrapResolverError } from '@apollo/server/errors';
import { GraphQLError, type GraphQLFormattedError } from 'graphql';
import { isDatabaseUnavailable } from '../db/connection.ts';
import { DomainError, type ErrorCode } from '../errors.ts';
import type { Logger } from '../logger.ts';

/** The one place errors become what a client sees. */

export const unauthenticated = (message = 'Authentication required: send Authorization: Bearer <token>') =>
  new GraphQLError(message, { extensions: { code: 'UNAUTHENTICATED' satisfies ErrorCode, http: { status: 401 } } });

export const forbidden = (message = 'Only an operator may do this') =>
  new GraphQLError(message, { extensions: { code: 'FORBIDDEN' satisfies ErrorCode } });

/** A business error from an operator mutation (which has no payload to carry it). */
export const fromDomainError = (error: DomainError) =>
  new GraphQLError(error.message, {
    extensions: {
      code: 'BAD_USER_INPUT' satisfies ErrorCode,
      userErrorCode: error.userError.code,
      ...(error.userError.field ? { field: error.userError.field } : {}),
    },
  });

// Codes that GraphQL itself, Apollo Server or our resolvers raise on purpose; their messages are safe.
const CLIENT_CODES = new Set([
  'UNAUTHENTICATED',
  'FORBIDDEN',
  'BAD_USER_INPUT',
  'GRAPHQL_VALIDATION_FAILED',
  'GRAPHQL_PARSE_FAILED',
  'BAD_REQUEST',
  'OPERATION_RESOLUTION_FAILURE',
  'PERSISTED_QUERY_NOT_FOUND',
  'PERSISTED_QUERY_NOT_SUPPORTED',
]);

/** "Did you mean ...?" hints of GraphQL's messages: a map of the schema when introspection is off. */
const SUGGESTION = /\s*Did you mean [^?]*\?/g;

/**
 * Formats every error a client sees, over HTTP (Apollo's formatError) and WebSocket alike: known
 * client errors pass through (without stack traces, and without "did you mean" hints when
 * `hideSuggestions`); anything else is logged with its context and answered as a bare
 * INTERNAL_SERVER_ERROR.
 */
export function createFormatError(logger: Logger, options: { hideSuggestions: boolean }) {
  return (formatted: GraphQLFormattedError, error: unknown): GraphQLFormattedError => {
    const original = unwrapResolverError(error);
    if (original instanceof DomainError) {
      const mapped = fromDomainError(original);
      return { message: mapped.message, path: formatted.path, extensions: mapped.extensions };
    }
    const code = formatted.extensions?.code;
    if (typeof code === 'string' && CLIENT_CODES.has(code)) {
      const { stacktrace: _stacktrace, http: _http, ...extensions } = formatted.extensions ?? {};
      const message = options.hideSuggestions ? formatted.message.replace(SUGGESTION, '') : formatted.message;
      return { ...formatted, message, extensions };
    }
    // An outage, not a bug: the contract's retryable answer (HTTP 503 via `serviceUnavailableStatus`).
    if (isDatabaseUnavailable(original)) {
      logger.warn({ err: original, path: formatted.path }, 'database unavailable during a GraphQL request');
      return {
        message: 'The service is temporarily unavailable; retry (with the same idempotency key)',
        ...(formatted.path ? { path: formatted.path } : {}),
        extensions: { code: 'SERVICE_UNAVAILABLE' satisfies ErrorCode },
      };
    }
    logger.error({ err: original, path: formatted.path, code }, 'unexpected error in a GraphQL request');
    return {
      message: 'Internal server error',
      ...(formatted.path ? { path: formatted.path } : {}),
      extensions: { code: 'INTERNAL_SERVER_ERROR' satisfies ErrorCode },
    };
  };
}

/**
 * HTTP 503 with Retry-After for a response carrying SERVICE_UNAVAILABLE (the database is away), so
 * load balancers and clients treat it as retryable rather than as a failed request.
 */
export function serviceUnavailableStatus<T extends object>(): ApolloServerPlugin<T> {
  return {
    async requestDidStart() {
      return {
        async willSendResponse({ response }) {
          if (response.body.kind !== 'single') return;
          const { errors } = response.body.singleResult;
          if (!errors?.some((e) => e.extensions?.code === ('SERVICE_UNAVAILABLE' satisfies ErrorCode))) return;
          response.http.status = 503;
          response.http.headers.set('retry-after', '1');
        },
      };
    },
  };
}

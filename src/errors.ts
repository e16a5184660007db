/**
 * The closed set of errors the API speaks. `UserErrorCode` values travel in mutation payloads
 * (`errors: [UserError]`); `ErrorCode` values travel in `extensions.code` of GraphQL errors.
 * Everything else is unexpected: masked for clients, logged for operators (graphql/errors.ts).
 */
export type UserErrorCode =
  | 'INSUFFICIENT_FUNDS'
  | 'ACCOUNT_NOT_FOUND'
  | 'INVALID_INPUT'
  | 'IDEMPOTENCY_KEY_REUSED'
  | 'RATE_LIMITED'
  // Payee safety.
  | 'LIMIT_EXCEEDED'
  | 'PAYEE_NOT_CONFIRMED'
  // Cancellation.
  | 'PAYMENT_NOT_CANCELLABLE';

export type ErrorCode =
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  | 'BAD_USER_INPUT'
  | 'GRAPHQL_VALIDATION_FAILED'
  // The database is unreachable (or a bounded wait gave up): HTTP 503, retry with the same idempotency key.
  | 'SERVICE_UNAVAILABLE'
  | 'INTERNAL_SERVER_ERROR';

export interface UserError {
  code: UserErrorCode;
  message: string;
  field?: string[];
}

/** An expected business failure, thrown inside a transaction to roll it back. */
export class DomainError extends Error {
  override name = 'DomainError';
  readonly userError: UserError;
  constructor(userError: UserError) {
    super(userError.message);
    this.userError = userError;
  }
}

export const userError = (code: UserErrorCode, message: string, field?: string[]): UserError =>
  field ? { code, message, field } : { code, message };

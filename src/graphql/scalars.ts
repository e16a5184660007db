import { GraphQLError, GraphQLScalarType, Kind } from 'graphql';

/** Pence as a JSON number. Only whole numbers within the exact range of a double are accepted. */
export const MoneyScalar = new GraphQLScalarType<bigint | number, number>({
  name: 'Money',
  description: 'Integer amount in pence. Serialized as a JSON number. Negative only where a field says so.',
  serialize(value) {
    if (typeof value === 'bigint') {
      if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
        throw new GraphQLError('Money value out of range');
      }
      return Number(value);
    }
    if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
    throw new GraphQLError('Money must be a whole number of pence');
  },
  parseValue(value) {
    if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
    throw new GraphQLError('Money must be a whole number of pence (a JSON integer, not a string or a fraction)');
  },
  parseLiteral(ast) {
    if (ast.kind === Kind.INT) {
      const value = Number(ast.value);
      if (Number.isSafeInteger(value)) return value;
    }
    throw new GraphQLError('Money must be a whole number of pence (an integer literal, not a string or a fraction)');
  },
});

export const DateTimeScalar = new GraphQLScalarType<Date, string>({
  name: 'DateTime',
  description: 'ISO-8601 timestamp with time zone, e.g. 2026-11-24T10:00:00.000Z',
  serialize(value) {
    if (value instanceof Date) return value.toISOString();
    if (typeof value === 'string') return new Date(value).toISOString();
    throw new GraphQLError('DateTime must be a Date');
  },
  parseValue(value) {
    const date = typeof value === 'string' ? new Date(value) : null;
    if (!date || Number.isNaN(date.getTime())) throw new GraphQLError('DateTime must be an ISO-8601 string');
    return date;
  },
  parseLiteral(ast) {
    const date = ast.kind === Kind.STRING ? new Date(ast.value) : null;
    if (!date || Number.isNaN(date.getTime())) throw new GraphQLError('DateTime must be an ISO-8601 string');
    return date;
  },
});

/**
 * A London calendar date, `YYYY-MM-DD`. Input: any string passes the scalar, and the command that
 * takes it checks it is a real date (and not in the past), so a bad date is INVALID_INPUT naming its
 * field in the mutation's payload, with nothing written. Output: a `date` column as Prisma reads it.
 */
export const DateScalar = new GraphQLScalarType<string, string>({
  name: 'Date',
  description: 'A calendar date, YYYY-MM-DD, in Europe/London.',
  serialize(value) {
    if (value instanceof Date) return value.toISOString().slice(0, 10);
    if (typeof value === 'string') return value.slice(0, 10);
    throw new GraphQLError('Date must be a date');
  },
  parseValue(value) {
    if (typeof value === 'string') return value;
    throw new GraphQLError('Date must be a string written YYYY-MM-DD');
  },
  parseLiteral(ast) {
    if (ast.kind === Kind.STRING) return ast.value;
    throw new GraphQLError('Date must be a string written YYYY-MM-DD');
  },
});

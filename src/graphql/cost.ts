import {
  type DocumentNode,
  GraphQLError,
  type GraphQLSchema,
  getNamedType,
  getNullableType,
  getVariableValues,
  isListType,
  type OperationDefinitionNode,
  visit,
} from 'graphql';
import { type ComplexityEstimator, getComplexity } from 'graphql-query-complexity';
import type { ErrorCode } from '../errors.ts';
import { FIELD_PAGES, type FieldWithPage, fieldPageSize, pageSize } from './pagination.ts';

/**
 * What an operation may cost, computed where its variables are known (an Apollo plugin for HTTP,
 * graphql-ws's onSubscribe for WebSocket), so `first: $n` and an omitted `first` count for the page
 * they will really read. Roughly one point per row read or field resolved: a connection costs its
 * page size (`first`, the schema's default when omitted, clamped to the server's maximum) times
 * its selection (FIELD_PAGES for fields with their own default and maximum: the size their
 * resolver reads), a list without `first` an estimate of its length times its selection.
 */
export const COST_LIMITS = {
  maxCost: 10_000,
  /** Items assumed in a list without `first`: a payment's attempts, a customer's accounts. */
  listEstimate: 10,
} as const;

const estimator: ComplexityEstimator = ({ type, field, args, childComplexity }) => {
  // Introspection (development only) is bounded by the schema, not by data.
  if (type.name.startsWith('__') || getNamedType(field.type).name.startsWith('__')) return 1 + childComplexity;
  if (field.args.some((a) => a.name === 'first')) {
    const first: unknown = args.first;
    const given = typeof first === 'number' ? first : null;
    const name = `${type.name}.${field.name}`;
    const rows = name in FIELD_PAGES ? fieldPageSize(name as FieldWithPage, given) : pageSize(given);
    return 1 + rows * childComplexity;
  }
  // A connection's edges are its page, already counted on the connection field.
  if (isListType(getNullableType(field.type)) && !type.name.endsWith('Connection')) {
    return 1 + COST_LIMITS.listEstimate * childComplexity;
  }
  return 1 + childComplexity;
};

/**
 * The cost of running `document` with `variables`; null when the variables do not fit the
 * operation (execution refuses those before reading anything, with its own BAD_USER_INPUT).
 */
export function queryCost(options: {
  schema: GraphQLSchema;
  document: DocumentNode;
  operationName?: string | null | undefined;
  variables?: Record<string, unknown> | null | undefined;
}): number | null {
  const { schema, document } = options;
  const operationName = options.operationName ?? undefined;
  const variables = options.variables ?? {};
  const operation = document.definitions.find(
    (d): d is OperationDefinitionNode =>
      d.kind === 'OperationDefinition' && (operationName === undefined || d.name?.value === operationName),
  );
  if (operation && getVariableValues(schema, operation.variableDefinitions ?? [], variables).errors) return null;
  try {
    return getComplexity({ schema, query: document, variables, estimators: [estimator], ...(operationName ? { operationName } : {}) });
  } catch (error) {
    // The library's own node limit: an operation too large to even count is too costly.
    if (error instanceof GraphQLError) return Number.POSITIVE_INFINITY;
    throw error;
  }
}

/**
 * Whether the cost of `document` can depend on its variables: only a `first` argument reads them
 * (the estimator above). Most documents (a client's sendPayment, every mutation) pass none there.
 */
function costReadsVariables(document: DocumentNode): boolean {
  let reads = false;
  visit(document, {
    Argument(node) {
      if (node.name.value !== 'first') return false;
      visit(node.value, {
        Variable() {
          reads = true;
        },
      });
      return false;
    },
  });
  return reads;
}

/**
 * Operations already found within the limit whatever their variables, per parsed document (Apollo
 * hands every request of the same text the same cached DocumentNode) and schema: their cost is not
 * computed again, nor their variables coerced a second time for it (execution still checks them).
 * Only "within the limit" is kept, so a refusal and its message are always computed afresh.
 */
const withinLimit = new WeakMap<DocumentNode, WeakMap<GraphQLSchema, Set<string>>>();

/** A refusal when the operation costs more than the limit, or null. */
export function costError(options: Parameters<typeof queryCost>[0]): GraphQLError | null {
  const { schema, document } = options;
  const operation = options.operationName ?? '';
  const known = withinLimit.get(document)?.get(schema);
  if (known?.has(operation)) return null;
  const cost = queryCost(options);
  if (cost !== null && cost <= COST_LIMITS.maxCost && !costReadsVariables(document)) {
    const bySchema = withinLimit.get(document) ?? new WeakMap<GraphQLSchema, Set<string>>();
    withinLimit.set(document, bySchema);
    const operations = bySchema.get(schema) ?? new Set<string>();
    bySchema.set(schema, operations);
    operations.add(operation);
  }
  if (cost === null || cost <= COST_LIMITS.maxCost) return null;
  const shown = Number.isFinite(cost) ? ` is ${cost}` : '';
  return new GraphQLError(
    `Query cost${shown}, over the limit of ${COST_LIMITS.maxCost}: each connection costs its page size (first, ${pageSize(null)} when omitted) times its selection; ask for smaller pages or fewer nested connections`,
    { extensions: { code: 'GRAPHQL_VALIDATION_FAILED' satisfies ErrorCode, http: { status: 400 } } },
  );
}

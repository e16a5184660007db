/**
 * Keyset pages as services read them: at most `limit` rows after the sort key `after` (null: from
 * the start). Services read `limit + 1` rows, so the caller knows whether more follow; how a sort
 * key travels to clients (the opaque cursor) is the transport's business (graphql/pagination.ts).
 */
export interface KeysetPage<K> {
  after: K | null;
  limit: number;
}

/** The Prisma `where` for rows after `after` in (createdAt desc, id desc) order; empty for the first page. */
export function afterCreatedAtId(after: readonly [string, string] | null) {
  if (!after) return {};
  const createdAt = new Date(after[0]);
  return { OR: [{ createdAt: { lt: createdAt } }, { createdAt, id: { lt: after[1] } }] };
}

/** The Prisma `where` for rows after `after` in (heldAt asc, id asc) order (the review queue); empty for the first page. */
export function afterHeldAtId(after: readonly [string, string] | null) {
  if (!after) return {};
  const heldAt = new Date(after[0]);
  return { OR: [{ heldAt: { gt: heldAt } }, { heldAt, id: { gt: after[1] } }] };
}

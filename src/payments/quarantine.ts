import { z } from 'zod';
import type { KeysetPage } from '../db/keyset.ts';
import type { PrismaClient, ProviderEventQuarantine } from '../db/prisma.ts';
import { DomainError, userError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { type Operator, recordOperatorAction } from '../operator-actions.ts';
import { isUuid, parseInput } from '../validation.ts';

/**
 * Provider events the parser refused (provider-events.ts quarantines them): operators list them,
 * newest first, and resolve each once they have dealt with it (credited by hand, asked the
 * provider...), with a note. Resolving is an operator action, logged in the same transaction.
 * `npm run audit` flags every one not resolved yet.
 */

const resolveInput = z.object({ note: z.string().trim().min(1, 'note is required').max(500, 'note: at most 500 characters') });

export function createQuarantine(deps: { prisma: PrismaClient; logger: Logger }) {
  const { prisma, logger } = deps;

  /** Newest first, keyed by [receivedAt, id]. */
  function page(options: KeysetPage<[string, string]> & { unresolvedOnly: boolean }): Promise<ProviderEventQuarantine[]> {
    const after = options.after;
    const receivedAt = after ? new Date(after[0]) : null;
    return prisma.providerEventQuarantine.findMany({
      where: {
        ...(options.unresolvedOnly ? { resolvedAt: null } : {}),
        ...(after && receivedAt ? { OR: [{ receivedAt: { lt: receivedAt } }, { receivedAt, id: { lt: after[1] } }] } : {}),
      },
      orderBy: [{ receivedAt: 'desc' }, { id: 'desc' }],
      take: options.limit + 1,
    });
  }

  /** Marks it resolved (once: resolving again returns it unchanged); BAD_USER_INPUT for an unknown id or a bad note. */
  async function resolve(operator: Operator, id: string, note: unknown): Promise<ProviderEventQuarantine> {
    const parsed = parseInput(resolveInput, { note });
    if (!parsed.ok) throw new DomainError(parsed.error);
    const notFound = () => new DomainError(userError('INVALID_INPUT', 'No quarantined provider event has this id', ['id']));
    if (!isUuid(id)) throw notFound();
    return prisma.$transaction(async (tx) => {
      const resolved = await tx.providerEventQuarantine.updateManyAndReturn({
        where: { id, resolvedAt: null },
        data: { resolvedAt: new Date(), resolvedBy: operator, resolutionNote: parsed.value.note },
      });
      const row = resolved[0] ?? (await tx.providerEventQuarantine.findUnique({ where: { id } }));
      if (!row) throw notFound();
      if (resolved[0]) {
        await recordOperatorAction(tx, operator, 'resolveQuarantinedProviderEvent', id, parsed.value.note);
        logger.info({ operator, quarantineId: id, eventKey: row.eventKey }, 'quarantined provider event resolved');
      }
      return row;
    });
  }

  return { page, resolve };
}

export type Quarantine = ReturnType<typeof createQuarantine>;

import type { PgBoss } from 'pg-boss';
import type { Logger } from '../logger.ts';
import type { HoldService } from '../payments/holds.ts';
import { QUEUES } from './queues.ts';

/**
 * Held payments nobody reviewed within HOLD_MAX_HOURS are rejected, money back: every minute a
 * pg-boss schedule sends one job (whichever worker scheduled it), and one worker runs it. Two runs
 * at once are harmless: each rejection is guarded by `status = 'HELD'`.
 */
export async function startHoldExpiry(deps: {
  boss: PgBoss;
  holds: Pick<HoldService, 'expireHolds'>;
  logger: Logger;
  pollingIntervalSeconds: number;
}): Promise<void> {
  const { boss, holds, logger } = deps;
  await boss.work(QUEUES.expireHolds, { pollingIntervalSeconds: deps.pollingIntervalSeconds }, async () => {
    const expired = await holds.expireHolds();
    logger.debug({ expired: expired.length }, 'hold expiry ran');
  });
  await boss.schedule(QUEUES.expireHolds, '* * * * *');
}

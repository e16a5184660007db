import type { Clock } from '../calendar.ts';
import type { PrismaClient } from '../db/prisma.ts';
import type { UserError } from '../errors.ts';
import type { PayeeService } from '../payees/payees.ts';
import type { SendPaymentCommand } from '../validation.ts';
import { type HoldPolicy, type HoldReason, holdReason } from './holds.ts';
import { londonDay } from './limits.ts';

/**
 * Payee safety before a payment is taken: is the recipient confirmed, must the payment
 * be held, and which London day's limit does it count against. Reads only; the limit itself is
 * taken inside the payment's transaction (limits.ts).
 */

export interface SafetyPolicy extends HoldPolicy {
  checkThreshold: number;
  dailyLimit: number;
}

export type Screened =
  | { ok: true; status: 'PENDING' | 'HELD'; holdReason: HoldReason | null; limitDay: string; dailyLimit: number }
  | { ok: false; error: UserError };

export type ScreenPayment = (customerId: string, cmd: SendPaymentCommand) => Promise<Screened>;

export function createScreening(deps: {
  prisma: PrismaClient;
  payees: Pick<PayeeService, 'confirmRecipient'>;
  clock: Clock;
  policy: SafetyPolicy;
}): ScreenPayment {
  const { prisma, payees, clock, policy } = deps;
  return async (customerId, cmd) => {
    const now = clock.now();
    const confirmed = await payees.confirmRecipient(customerId, cmd, policy.checkThreshold);
    if (!confirmed.ok) return confirmed;
    const hold = await holdReason(prisma, policy, { customerId, amount: cmd.amount, recipient: cmd.recipient }, confirmed.payee, now);
    return { ok: true, status: hold ? 'HELD' : 'PENDING', holdReason: hold, limitDay: londonDay(now), dailyLimit: policy.dailyLimit };
  };
}

import type { Clock } from '../calendar.ts';
import type { UserError } from '../errors.ts';
import type { PayeeService, SavedPayee } from '../payees/payees.ts';
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
  | {
      ok: true;
      status: 'PENDING' | 'HELD';
      holdReason: HoldReason | null;
      /** When it was screened: the time it becomes HELD, or lets its payee through. */
      at: Date;
      /** The saved payee it goes to, or null. */
      payee: SavedPayee | null;
      limitDay: string;
      dailyLimit: number;
    }
  | { ok: false; error: UserError };

export type ScreenPayment = (customerId: string, cmd: SendPaymentCommand) => Promise<Screened>;

export function createScreening(deps: {
  payees: Pick<PayeeService, 'confirmRecipient'>;
  clock: Clock;
  policy: SafetyPolicy;
}): ScreenPayment {
  const { payees, clock, policy } = deps;
  return async (customerId, cmd) => {
    const now = clock.now();
    const confirmed = await payees.confirmRecipient(customerId, cmd, policy.checkThreshold);
    if (!confirmed.ok) return confirmed;
    const hold = holdReason(policy, cmd.amount, confirmed.payee, now);
    return {
      ok: true,
      status: hold ? 'HELD' : 'PENDING',
      holdReason: hold,
      at: now,
      payee: confirmed.payee,
      limitDay: londonDay(now),
      dailyLimit: policy.dailyLimit,
    };
  };
}

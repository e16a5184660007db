import type { CalendarDate } from '../calendar.ts';
import type { UserError } from '../errors.ts';
import type { PayeeService } from '../payees/payees.ts';
import type { SendPaymentCommand } from '../validation.ts';
import type { HoldPolicy } from './holds.ts';

/**
 * Payee safety before a payment is taken: is the recipient confirmed, and which London day's limit
 * does it count against. Reads only, and only when the confirmation rule could refuse: a payment at
 * or below the check threshold with no `payeeCheckId` is never refused, so it reads nothing here. The
 * hold rule needs the payee too; the statement that takes the payment reads it (transitions.ts
 * `take`), as it raises the limit (limits.ts).
 */

export interface SafetyPolicy extends HoldPolicy {
  checkThreshold: number;
  dailyLimit: number;
}

export type Screened =
  | {
      ok: true;
      /** When it was screened: the time it becomes HELD, or lets its payee through. */
      at: Date;
      limitDay: string;
      dailyLimit: number;
      hold: Pick<HoldPolicy, 'reviewThreshold' | 'newPayeeSeconds'>;
    }
  | { ok: false; error: UserError };

/** `now` is when the payment is screened and `today` its London day: the caller's one reading of the clock. */
export type ScreenPayment = (customerId: string, cmd: SendPaymentCommand, when: { now: Date; today: CalendarDate }) => Promise<Screened>;

export function createScreening(deps: { payees: Pick<PayeeService, 'confirmRecipient'>; policy: SafetyPolicy }): ScreenPayment {
  const { payees, policy } = deps;
  return async (customerId, cmd, { now, today }) => {
    if (cmd.payeeCheckId || cmd.amount > policy.checkThreshold) {
      const confirmed = await payees.confirmRecipient(customerId, cmd, policy.checkThreshold);
      if (!confirmed.ok) return confirmed;
    }
    return { ok: true, at: now, limitDay: today, dailyLimit: policy.dailyLimit, hold: policy };
  };
}

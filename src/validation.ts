import { z } from 'zod';
import { isCalendarDate } from './calendar.ts';
import { type UserError, userError } from './errors.ts';

/**
 * Input rules at the boundary, shared by every command. Each failure names its field, so a
 * client can point at it (`field: ["recipient", "sortCode"]`).
 */

/** No control or format characters (newlines, NUL, bidi overrides) in free text. */
const printable = /^[^\p{Cc}\p{Cf}\p{Zl}\p{Zp}]*$/u;

export const MAX_PAYMENT_PENCE = 100_000_000;

export const idempotencyKey = z.string().regex(/^[A-Za-z0-9._:-]{1,255}$/, 'must be 1-255 characters of A-Z a-z 0-9 . _ : -');

export const uuid = z.uuid({ message: 'must be an id issued by this API' });
/** True for a well-formed id (anything else cannot name a row: answer "not found" without a query). */
export const isUuid = (id: string) => uuid.safeParse(id).success;

export const pence = z
  .number({ message: 'must be a whole number of pence' })
  .int('must be a whole number of pence')
  .min(1, 'must be at least 1 penny')
  .max(MAX_PAYMENT_PENCE, `must be at most ${MAX_PAYMENT_PENCE} pence`);

export const personName = z
  .string()
  .trim()
  .min(1, 'must not be empty')
  .max(70, 'must be at most 70 characters')
  .regex(printable, 'must not contain control characters');

/** UK sort code: `12-34-56` or `123456`, stored as 6 digits. */
export const sortCode = z
  .string()
  .trim()
  .regex(/^(\d{6}|\d{2}-\d{2}-\d{2})$/, 'must be 6 digits, as 123456 or 12-34-56')
  .transform((s) => s.replaceAll('-', ''));

export const accountNumber = z
  .string()
  .trim()
  .regex(/^\d{8}$/, 'must be 8 digits');

/** Faster Payments references: up to 18 characters of its character set. */
export const reference = z
  .string()
  .trim()
  .max(18, 'must be at most 18 characters')
  .regex(/^[A-Za-z0-9 /?:().,'+&-]*$/, "may use only letters, digits, spaces and / ? : ( ) . , ' + & -")
  .transform((s) => (s === '' ? null : s));

/** Who a payment goes to; also the input of checkPayee and addPayee. */
export const recipientInput = z.object({ name: personName, sortCode, accountNumber });
export type RecipientCommand = z.output<typeof recipientInput>;
/** A London calendar date, `YYYY-MM-DD`. Whether it may be in the past is the service's to say (it has the clock). */
export const calendarDate = z.string().trim().refine(isCalendarDate, 'must be a real date written YYYY-MM-DD');

/** Keys of this shape name standing-order occurrences (`so:<order id>:<date>`); clients may not use them. */
export const STANDING_ORDER_KEY_PREFIX = 'so:';

const recipient = recipientInput;

export const sendPaymentInput = z.object({
  idempotencyKey: idempotencyKey.refine(
    (k) => !k.startsWith(STANDING_ORDER_KEY_PREFIX),
    'must not start with "so:" (kept for standing orders)',
  ),
  fromAccountId: uuid,
  amount: pence,
  recipient,
  reference: reference.nullish().transform((r) => r ?? null),
  /** A Confirmation of Payee check of this recipient. Not part of the fingerprint. */
  payeeCheckId: uuid.nullish(),
  executeOn: calendarDate.nullish().transform((d) => d ?? null),
});
export type SendPaymentCommand = z.output<typeof sendPaymentInput>;

export const createStandingOrderInput = z
  .object({
    idempotencyKey,
    fromAccountId: uuid,
    amount: pence,
    recipient,
    reference: reference.nullish().transform((r) => r ?? null),
    /** A Confirmation of Payee check of this recipient, as for sendPayment. Not part of the fingerprint. */
    payeeCheckId: uuid.nullish(),
    frequency: z.enum(['WEEKLY', 'MONTHLY'], { message: 'must be WEEKLY or MONTHLY' }),
    firstPaymentOn: calendarDate,
    lastPaymentOn: calendarDate.nullish().transform((d) => d ?? null),
  })
  .superRefine((order, ctx) => {
    // Dates written YYYY-MM-DD compare as strings.
    if (order.lastPaymentOn !== null && order.lastPaymentOn < order.firstPaymentOn) {
      ctx.addIssue({ code: 'custom', path: ['lastPaymentOn'], message: 'must not be before firstPaymentOn' });
    }
  });
export type CreateStandingOrderCommand = z.output<typeof createStandingOrderInput>;

export const depositFundsInput = z.object({
  accountId: uuid,
  amount: pence,
  idempotencyKey,
});
export type DepositFundsCommand = z.output<typeof depositFundsInput>;

/** Why an operator rejects a held payment: shown to operators, kept in the action log. */
export const rejectReason = z
  .string()
  .trim()
  .min(1, 'must not be empty')
  .max(500, 'must be at most 500 characters')
  .regex(printable, 'must not contain control characters');

export const createCustomerInput = z.object({ name: personName });
export const openAccountInput = z.object({ customerId: uuid, name: personName });

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: UserError };

/** Parses `input` with `schema`; on failure, an INVALID_INPUT error naming the first bad field. */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown): Parsed<z.output<S>> {
  const result = schema.safeParse(input);
  if (result.success) return { ok: true, value: result.data };
  const issue = result.error.issues[0];
  const field = (issue?.path ?? []).map(String);
  const name = field.length > 0 ? field.join('.') : 'input';
  return { ok: false, error: userError('INVALID_INPUT', `${name} ${issue?.message ?? 'is invalid'}`, field) };
}

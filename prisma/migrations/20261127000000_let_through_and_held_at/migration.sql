-- Payee safety on every path: the new-payee hold reads what is recorded on the payee, and hold
-- expiry and the review queue count from when a payment became HELD (ADR 0009).

-- When the payee was let through: an operator approved a payment to it, or a payment to it was
-- taken (or ran on its day) without being held. Set once, in the transaction that let the payment
-- through; never inferred from the statuses of payments, which change later.
ALTER TABLE "payees" ADD COLUMN "let_through_at" TIMESTAMPTZ(3);

-- Existing payees: let through at the first of the payments that the rule of the time screened and
-- let through since the payee was saved: an operator's approval (at the approval), or a payment
-- taken immediately, not held, that went to the provider (PENDING, COMPLETED, or RETURNED after it),
-- at its creation. Scheduled payments and standing-order occurrences are left out: their day never
-- applied the new-payee hold, so they say nothing about the payee. A payee with none stays
-- unrecorded, as its next payment would have been held under the rule of the time.
WITH approved AS (
    SELECT o."target_id" AS payment_id, min(o."at") AS at
    FROM "operator_actions" o
    WHERE o."action" = 'approvePayment'
    GROUP BY o."target_id"
),
let_through AS (
    SELECT a."customer_id", p."recipient_sort_code" AS sort_code, p."recipient_account_number" AS account_number,
        p."created_at" AS payment_created_at, coalesce(ap.at, p."created_at") AS at
    FROM "payments" p
    JOIN "accounts" a ON a."id" = p."account_id"
    LEFT JOIN approved ap ON ap.payment_id = p."id"
    WHERE ap.payment_id IS NOT NULL
       OR (p."status"::text IN ('PENDING', 'COMPLETED', 'RETURNED')
           AND p."standing_order_id" IS NULL
           AND (p."execute_on" IS NULL OR p."execute_on" <= (p."created_at" AT TIME ZONE 'Europe/London')::date))
)
UPDATE "payees" pe SET "let_through_at" = earliest.at
FROM (
    SELECT pe2."id", min(l.at) AS at
    FROM "payees" pe2
    JOIN let_through l ON l."customer_id" = pe2."customer_id" AND l.sort_code = pe2."sort_code"
        AND l.account_number = pe2."account_number" AND l.payment_created_at >= pe2."created_at"
    GROUP BY pe2."id"
) earliest
WHERE pe."id" = earliest."id";

-- When the payment became HELD, set by each arrow into HELD (transitions.ts). A payment HELD
-- before this column existed: the time of its event into HELD while the event stream still has it
-- (a scheduled payment was held on its day, not when it was created), else its creation.
ALTER TABLE "payments" ADD COLUMN "held_at" TIMESTAMPTZ(3);
UPDATE "payments" p SET "held_at" = coalesce(
    (SELECT max(e."occurred_at") FROM "payment_events" e WHERE e."payment_id" = p."id" AND e."status" = 'HELD'),
    p."created_at")
WHERE p."status" = 'HELD';
ALTER TABLE "payments" ADD CONSTRAINT "payments_held_at_when_held" CHECK ("status" <> 'HELD' OR "held_at" IS NOT NULL);

-- The review queue and the expiry job read held payments in (held_at, id) order.
DROP INDEX IF EXISTS "payments_held_created_at_idx";
CREATE INDEX "payments_held_at_idx" ON "payments"("held_at", "id") WHERE "status" = 'HELD';

-- Issue 15, payee safety: Confirmation of Payee checks, saved payees, a daily limit per customer
-- and risk holds (docs/decisions/0009-payee-safety.md).

-- A payment held for review: debited, with its ledger entry, but no settlement job until an
-- operator approves it. The migration runner applies each migration in one transaction, and a new
-- enum value cannot be used in the transaction that adds it: nothing below names 'HELD' as an enum
-- literal (the trigger compares status as text, and PL/pgSQL is only parsed when it first runs).
ALTER TYPE "PaymentStatus" ADD VALUE IF NOT EXISTS 'HELD' AFTER 'FAILED';

CREATE TYPE "PayeeMatch" AS ENUM ('MATCH', 'CLOSE_MATCH', 'NO_MATCH', 'UNAVAILABLE');

-- One Confirmation of Payee answer, for the customer who asked, about exactly these details. A
-- payment may refer to it (SendPaymentInput.payeeCheckId) for 24 hours.
CREATE TABLE "payee_checks" (
    "id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "customer_id" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "sort_code" CHAR(6) NOT NULL,
    "account_number" CHAR(8) NOT NULL,
    "result" "PayeeMatch" NOT NULL,
    "matched_name" TEXT,
    "checked_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "payee_checks_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "payee_checks_customer_id_fkey" FOREIGN KEY ("customer_id") REFERENCES "customers"("id") ON DELETE RESTRICT ON UPDATE CASCADE
);
CREATE INDEX "payee_checks_customer_id_checked_at_idx" ON "payee_checks"("customer_id", "checked_at" DESC);

-- A customer's saved recipients, one per sort code and account number.
CREATE TABLE "payees" (
    "id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "customer_id" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "sort_code" CHAR(6) NOT NULL,
    "account_number" CHAR(8) NOT NULL,
    "last_check_id" UUID,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "payees_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "payees_customer_id_fkey" FOREIGN KEY ("customer_id") REFERENCES "customers"("id") ON DELETE RESTRICT ON UPDATE CASCADE,
    CONSTRAINT "payees_last_check_id_fkey" FOREIGN KEY ("last_check_id") REFERENCES "payee_checks"("id") ON DELETE SET NULL ON UPDATE CASCADE
);
CREATE UNIQUE INDEX "payees_customer_id_sort_code_account_number_key" ON "payees"("customer_id", "sort_code", "account_number");

-- The London calendar day a payment counts against its customer's daily limit (null for payments
-- taken before the limit existed).
ALTER TABLE "payments" ADD COLUMN "limit_day" DATE;

-- Per customer per London day: the sum of the amounts of its PENDING, COMPLETED and HELD payments
-- of that day. sendPayment raises it with a guarded upsert (`... WHERE used + amount <= limit`) in
-- the payment's own transaction; the trigger below lowers it when a payment leaves those statuses.
CREATE TABLE "daily_payment_totals" (
    "customer_id" UUID NOT NULL,
    "day" DATE NOT NULL,
    "used" BIGINT NOT NULL,

    CONSTRAINT "daily_payment_totals_pkey" PRIMARY KEY ("customer_id", "day"),
    CONSTRAINT "daily_payment_totals_used_not_negative" CHECK ("used" >= 0),
    CONSTRAINT "daily_payment_totals_customer_id_fkey" FOREIGN KEY ("customer_id") REFERENCES "customers"("id") ON DELETE RESTRICT ON UPDATE CASCADE
);

-- Whoever moves a payment out of the counted statuses (the worker's refund, an operator's
-- rejection, the hold expiry, a customer's cancellation, a return), the day's total goes down in
-- the same transaction, exactly once (status changes are guarded, so each happens once).
CREATE FUNCTION "payments_release_daily_limit"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW."limit_day" IS NOT NULL
       AND OLD."status"::text IN ('PENDING', 'COMPLETED', 'HELD')
       AND NEW."status"::text NOT IN ('PENDING', 'COMPLETED', 'HELD') THEN
        UPDATE "daily_payment_totals" t SET "used" = t."used" - NEW."amount"
        FROM "accounts" a
        WHERE a."id" = NEW."account_id" AND t."customer_id" = a."customer_id" AND t."day" = NEW."limit_day";
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER "payments_release_daily_limit"
    AFTER UPDATE OF "status" ON "payments"
    FOR EACH ROW WHEN (OLD."status" IS DISTINCT FROM NEW."status")
    EXECUTE FUNCTION "payments_release_daily_limit"();

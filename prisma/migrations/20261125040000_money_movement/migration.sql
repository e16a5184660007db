-- Money movement (docs/decisions/0008-money-movement.md): scheduled payments, standing orders,
-- cancellation, returns and inbound credits.
--
-- The new enum values are added here but not used anywhere in this file: migrations run in one
-- transaction each (src/db/migrate.ts), and PostgreSQL refuses a value added by ALTER TYPE ... ADD
-- VALUE until that transaction has committed ("unsafe use of new value").

ALTER TYPE "PaymentStatus" ADD VALUE IF NOT EXISTS 'SCHEDULED' BEFORE 'PENDING';
ALTER TYPE "PaymentStatus" ADD VALUE IF NOT EXISTS 'RETURNED';
ALTER TYPE "LedgerEntryKind" ADD VALUE IF NOT EXISTS 'PAYMENT_RETURN';
ALTER TYPE "LedgerEntryKind" ADD VALUE IF NOT EXISTS 'INBOUND_CREDIT';

CREATE TYPE "Frequency" AS ENUM ('WEEKLY', 'MONTHLY');

-- A standing order: the customer's instruction to pay `amount` every week or month.
CREATE TABLE "standing_orders" (
    "id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "account_id" UUID NOT NULL,
    "idempotency_key" VARCHAR(255) NOT NULL,
    "fingerprint" CHAR(64) NOT NULL,
    "amount" BIGINT NOT NULL,
    "currency" CHAR(3) NOT NULL DEFAULT 'GBP',
    "recipient_name" TEXT NOT NULL,
    "recipient_sort_code" CHAR(6) NOT NULL,
    "recipient_account_number" CHAR(8) NOT NULL,
    "reference" TEXT,
    "frequency" "Frequency" NOT NULL,
    "first_payment_on" DATE NOT NULL,
    "last_payment_on" DATE,
    -- Occurrences created so far: occurrence n (from 0) falls on occurrenceDate(first, frequency, n).
    "occurrences_created" INTEGER NOT NULL DEFAULT 0,
    -- The date of occurrence `occurrences_created`, null once there is none (ended or cancelled).
    "next_payment_on" DATE,
    "active" BOOLEAN NOT NULL DEFAULT true,
    "cancelled_at" TIMESTAMPTZ(3),
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "standing_orders_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "standing_orders_amount_positive" CHECK ("amount" > 0),
    CONSTRAINT "standing_orders_dates_in_order" CHECK ("last_payment_on" IS NULL OR "last_payment_on" >= "first_payment_on"),
    CONSTRAINT "standing_orders_next_while_active" CHECK ("active" OR "next_payment_on" IS NULL),
    CONSTRAINT "standing_orders_occurrences_non_negative" CHECK ("occurrences_created" >= 0)
);

CREATE UNIQUE INDEX "standing_orders_account_id_idempotency_key_key" ON "standing_orders"("account_id", "idempotency_key");
CREATE INDEX "standing_orders_account_id_created_at_idx" ON "standing_orders"("account_id", "created_at");
-- What the scheduler looks for: active orders with an occurrence due.
CREATE INDEX "standing_orders_due_idx" ON "standing_orders"("next_payment_on") WHERE "active";
ALTER TABLE "standing_orders" ADD CONSTRAINT "standing_orders_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- Payments: the day a scheduled payment runs, the provider's return code, the standing order, and
-- when the customer asked to cancel it.
ALTER TABLE "payments" ADD COLUMN "execute_on" DATE;
ALTER TABLE "payments" ADD COLUMN "return_code" TEXT;
ALTER TABLE "payments" ADD COLUMN "standing_order_id" UUID;
-- Set (guarded on PENDING) before cancelPayment voids the payment at the provider: whoever then
-- refunds it after the void (the API, or the worker meeting the void) refunds it as the customer's
-- cancellation.
ALTER TABLE "payments" ADD COLUMN "cancel_requested_at" TIMESTAMPTZ(3);
ALTER TABLE "payments" ADD CONSTRAINT "payments_standing_order_id_fkey" FOREIGN KEY ("standing_order_id") REFERENCES "standing_orders"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
-- One payment per standing-order occurrence (the idempotency key so:<id>:<date> says the same).
CREATE UNIQUE INDEX "payments_standing_order_id_execute_on_key" ON "payments"("standing_order_id", "execute_on");

-- Ledger: who the money came from or went to, and the provider credit an INBOUND_CREDIT came from.
ALTER TABLE "ledger_entries" ADD COLUMN "counterparty_name" TEXT;
ALTER TABLE "ledger_entries" ADD COLUMN "counterparty_sort_code" CHAR(6);
ALTER TABLE "ledger_entries" ADD COLUMN "counterparty_account_number" CHAR(8);
ALTER TABLE "ledger_entries" ADD COLUMN "reference" TEXT;
ALTER TABLE "ledger_entries" ADD COLUMN "provider_credit_id" TEXT;
-- A provider credit is credited at most once, whoever processes it how many times.
CREATE UNIQUE INDEX "ledger_entries_provider_credit_id_key" ON "ledger_entries"("provider_credit_id");

-- Every credit the provider delivered: credited to an account, or being / been sent back.
CREATE TABLE "provider_credits" (
    "id" TEXT NOT NULL,
    "amount" BIGINT NOT NULL,
    "currency" CHAR(3) NOT NULL,
    "recipient_sort_code" TEXT NOT NULL,
    "recipient_account_number" TEXT NOT NULL,
    "sender_name" TEXT NOT NULL,
    "sender_sort_code" TEXT NOT NULL,
    "sender_account_number" TEXT NOT NULL,
    "reference" TEXT,
    -- CREDITED; RETURNING (no account to credit: the return to the provider is queued); RETURNED.
    "outcome" TEXT NOT NULL,
    "account_id" UUID,
    "return_reason" TEXT,
    "received_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "resolved_at" TIMESTAMPTZ(3),

    CONSTRAINT "provider_credits_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "provider_credits_outcome" CHECK ("outcome" IN ('CREDITED', 'RETURNING', 'RETURNED')),
    CONSTRAINT "provider_credits_credited_to_account" CHECK (("outcome" = 'CREDITED') = ("account_id" IS NOT NULL))
);
CREATE INDEX "provider_credits_returning_idx" ON "provider_credits"("received_at") WHERE "outcome" = 'RETURNING';
ALTER TABLE "provider_credits" ADD CONSTRAINT "provider_credits_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- How far the provider's event feed (GET /v1/events) has been applied: one row, advanced in the
-- transaction that applies each event.
CREATE TABLE "provider_event_cursor" (
    "id" BOOLEAN NOT NULL DEFAULT true,
    "cursor" TEXT,
    "events_applied" BIGINT NOT NULL DEFAULT 0,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "provider_event_cursor_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "provider_event_cursor_one_row" CHECK ("id")
);
INSERT INTO "provider_event_cursor" ("id") VALUES (true);

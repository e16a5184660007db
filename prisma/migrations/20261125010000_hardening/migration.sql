-- Issue 10, security and correctness review.

-- Who did what, for every operator mutation (createCustomer, openAccount, depositFunds), written in
-- the same transaction as the effect: money created by a deposit can be traced to a person.
CREATE TABLE "operator_actions" (
    "id" BIGSERIAL NOT NULL,
    "operator" TEXT NOT NULL,
    "action" TEXT NOT NULL,
    "target_id" UUID NOT NULL,
    "detail" TEXT,
    "at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "operator_actions_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "operator_actions_operator_not_blank" CHECK (length(btrim("operator")) > 0)
);

CREATE INDEX "operator_actions_id_idx" ON "operator_actions"("id" DESC);

-- Operator actions are an audit trail: append-only like the ledger.
CREATE TRIGGER "operator_actions_append_only"
    BEFORE UPDATE OR DELETE ON "operator_actions"
    FOR EACH ROW EXECUTE FUNCTION "ledger_entries_append_only"();

-- The row trigger above does not fire for TRUNCATE: refuse it for the whole table as well.
CREATE TRIGGER "ledger_entries_no_truncate"
    BEFORE TRUNCATE ON "ledger_entries"
    FOR EACH STATEMENT EXECUTE FUNCTION "ledger_entries_append_only"();

CREATE TRIGGER "operator_actions_no_truncate"
    BEFORE TRUNCATE ON "operator_actions"
    FOR EACH STATEMENT EXECUTE FUNCTION "ledger_entries_append_only"();

-- The sendPayment rate limiter's counters, shared by every API process (rate-limiter-flexible's
-- RateLimiterPostgres, with `tableCreated: true`: the table is ours, created here, not at run time).
CREATE TABLE "rate_limits" (
    "key" VARCHAR(255) NOT NULL,
    "points" INTEGER NOT NULL DEFAULT 0,
    "expire" BIGINT,

    CONSTRAINT "rate_limits_pkey" PRIMARY KEY ("key")
);

-- The internal reason of an attempt (network errors, provider messages) stays for operators and
-- logs; customers see `detail`, one of a fixed set of texts.
ALTER TABLE "payment_attempts" ADD COLUMN "internal_detail" TEXT;

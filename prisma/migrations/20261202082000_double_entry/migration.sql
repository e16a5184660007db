-- Double entry (docs/decisions/0012-double-entry-ledger.md): every movement of money is a transfer
-- of balanced postings (summing to zero) between ledger accounts: the customers' accounts and the
-- bank's own. Written in the same statement as the customer's ledger entry; append-only.

CREATE TABLE "postings" (
    "id" BIGSERIAL NOT NULL,
    -- The postings of one transfer share this id and sum to zero.
    "transfer_id" UUID NOT NULL,
    -- DEPOSIT, PAYMENT_DEBIT (accepted), PAYMENT_SETTLED, PAYMENT_REFUND, PAYMENT_RETURN,
    -- INBOUND_CREDIT, CREDIT_UNAPPLIED (for no account of ours), CREDIT_RETURNED.
    "kind" TEXT NOT NULL,
    -- Exactly one of: a customer's account, or one of the bank's own ledger accounts.
    "account_id" UUID,
    "bank_account" TEXT,
    -- Signed pence: what the posting adds to the ledger account's balance.
    "amount" BIGINT NOT NULL,
    "payment_id" UUID,
    "provider_credit_id" TEXT,
    -- When the money moved; a customer's leg carries its ledger entry's time to the millisecond.
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT clock_timestamp(),

    CONSTRAINT "postings_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "postings_one_account" CHECK (("account_id" IS NULL) <> ("bank_account" IS NULL)),
    CONSTRAINT "postings_bank_account" CHECK ("bank_account" IN
        ('FUNDING', 'IN_TRANSIT', 'PROVIDER_SETTLEMENT', 'INBOUND_CLEARING', 'RETURNS')),
    CONSTRAINT "postings_amount_non_zero" CHECK ("amount" <> 0)
);
-- A payment's in-transit postings at a time (balanceAt's pending outgoing, the audit).
CREATE INDEX "postings_payment_id_idx" ON "postings"("payment_id") WHERE "payment_id" IS NOT NULL;

CREATE FUNCTION "postings_append_only"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'postings is append-only (% refused)', TG_OP;
END;
$$;
CREATE TRIGGER "postings_append_only" BEFORE UPDATE OR DELETE ON "postings"
    FOR EACH ROW EXECUTE FUNCTION "postings_append_only"();
CREATE TRIGGER "postings_no_truncate" BEFORE TRUNCATE ON "postings"
    FOR EACH STATEMENT EXECUTE FUNCTION "postings_append_only"();

-- A ledger entry's time is read when it is written, after its account row is locked, so one
-- account's entries are in time order as they are in id order: balanceAt and statements are exact.
ALTER TABLE "ledger_entries" ALTER COLUMN "created_at" SET DEFAULT clock_timestamp();
-- Opening and closing balances: the last entry of an account before an instant.
CREATE INDEX "ledger_entries_account_id_created_at_idx" ON "ledger_entries"("account_id", "created_at", "id");

-- Pending outgoing: an account's payments that are debited and not yet settled or refunded.
CREATE INDEX "payments_outgoing_idx" ON "payments"("account_id") INCLUDE ("amount") WHERE "status" IN ('PENDING', 'HELD');

-- Opening postings for an existing database, derived from what it holds: one transfer per ledger
-- entry (at the entry's time), the settlement of each payment the provider executed, and each
-- credit held for return or returned.
INSERT INTO "postings" ("transfer_id", "kind", "account_id", "bank_account", "amount", "payment_id", "provider_credit_id", "created_at")
SELECT t.transfer_id, t.kind, leg.account_id, leg.bank_account, leg.amount, t.payment_id, t.provider_credit_id, t.at
FROM (
    SELECT gen_random_uuid() AS transfer_id, l."kind"::text AS kind, l."account_id", l."amount", l."payment_id",
        l."provider_credit_id", l."created_at" AS at,
        CASE l."kind"::text WHEN 'DEPOSIT' THEN 'FUNDING' WHEN 'PAYMENT_DEBIT' THEN 'IN_TRANSIT'
            WHEN 'PAYMENT_REFUND' THEN 'IN_TRANSIT' ELSE 'PROVIDER_SETTLEMENT' END AS bank
    FROM "ledger_entries" l
) t
CROSS JOIN LATERAL (VALUES (t.account_id, NULL::text, t.amount), (NULL::uuid, t.bank, -t.amount)) leg(account_id, bank_account, amount);

INSERT INTO "postings" ("transfer_id", "kind", "account_id", "bank_account", "amount", "payment_id", "created_at")
SELECT t.transfer_id, 'PAYMENT_SETTLED', NULL, leg.bank_account, leg.amount, t.id, t.at
FROM (
    SELECT gen_random_uuid() AS transfer_id, p."id", p."amount", p."updated_at" AS at
    FROM "payments" p
    WHERE p."status"::text IN ('COMPLETED', 'RETURNED')
        AND EXISTS (SELECT 1 FROM "ledger_entries" l WHERE l."payment_id" = p."id" AND l."kind" = 'PAYMENT_DEBIT')
) t
CROSS JOIN LATERAL (VALUES ('IN_TRANSIT', -t.amount), ('PROVIDER_SETTLEMENT', t.amount)) leg(bank_account, amount);

INSERT INTO "postings" ("transfer_id", "kind", "bank_account", "amount", "provider_credit_id", "created_at")
SELECT t.transfer_id, t.kind, leg.bank_account, leg.amount, t.id, t.at
FROM (
    SELECT gen_random_uuid() AS transfer_id, 'CREDIT_UNAPPLIED' AS kind, c."id", c."amount", c."received_at" AS at,
        'PROVIDER_SETTLEMENT' AS source, 'INBOUND_CLEARING' AS target
    FROM "provider_credits" c WHERE c."outcome" IN ('RETURNING', 'RETURNED')
    UNION ALL
    SELECT gen_random_uuid(), 'CREDIT_RETURNED', c."id", c."amount", coalesce(c."resolved_at", c."received_at"),
        'INBOUND_CLEARING', 'RETURNS'
    FROM "provider_credits" c WHERE c."outcome" = 'RETURNED'
) t
CROSS JOIN LATERAL (VALUES (t.source, -t.amount), (t.target, t.amount)) leg(bank_account, amount);

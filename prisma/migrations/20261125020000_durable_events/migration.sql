-- Durable payment events (docs/decisions/0006-durable-events-by-transaction-id.md).
--
-- Every status change of a payment, its creation included, appends one row here from a trigger,
-- in the transaction that makes the change: the event exists if and only if the change committed,
-- whoever made it. Readers order events by (xid, seq) and read only below the visibility horizon
-- pg_snapshot_xmin(pg_current_snapshot()), so an event that commits late can never sort before
-- one a reader has already passed.

-- Live updates no longer ride on NOTIFY from inside the money transaction.
DROP TRIGGER IF EXISTS "payments_notify_insert" ON "payments";
DROP TRIGGER IF EXISTS "payments_notify_status" ON "payments";
DROP FUNCTION IF EXISTS "payments_notify_change"();

CREATE TABLE "payment_events" (
    "seq" BIGINT GENERATED ALWAYS AS IDENTITY,
    -- The writing transaction's id: the first part of the commit-order cursor.
    "xid" XID8 NOT NULL DEFAULT pg_current_xact_id(),
    "payment_id" UUID NOT NULL,
    "account_id" UUID NOT NULL,
    "previous_status" "PaymentStatus",
    "status" "PaymentStatus" NOT NULL,
    "amount" BIGINT NOT NULL,
    "occurred_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "payment_events_pkey" PRIMARY KEY ("seq")
);

-- The tail every API process follows, and one account's stream.
CREATE INDEX "payment_events_xid_seq_idx" ON "payment_events"("xid", "seq");
CREATE INDEX "payment_events_account_id_xid_seq_idx" ON "payment_events"("account_id", "xid", "seq");
CREATE INDEX "payment_events_occurred_at_idx" ON "payment_events"("occurred_at");

ALTER TABLE "payment_events" ADD CONSTRAINT "payment_events_payment_id_fkey" FOREIGN KEY ("payment_id") REFERENCES "payments"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- How far retention has pruned: a cursor at or before this position may have lost events.
CREATE TABLE "payment_event_retention" (
    "id" BOOLEAN PRIMARY KEY DEFAULT true CHECK ("id"),
    "pruned_xid" XID8 NOT NULL,
    "pruned_seq" BIGINT NOT NULL,
    "pruned_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE FUNCTION "payments_record_event"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO "payment_events" ("payment_id", "account_id", "previous_status", "status", "amount")
    VALUES (
        NEW."id",
        NEW."account_id",
        CASE WHEN TG_OP = 'UPDATE' THEN OLD."status" END,
        NEW."status",
        NEW."amount"
    );
    RETURN NULL;
END;
$$;

CREATE TRIGGER "payments_event_insert"
    AFTER INSERT ON "payments"
    FOR EACH ROW EXECUTE FUNCTION "payments_record_event"();

CREATE TRIGGER "payments_event_status"
    AFTER UPDATE OF "status" ON "payments"
    FOR EACH ROW WHEN (OLD."status" IS DISTINCT FROM NEW."status")
    EXECUTE FUNCTION "payments_record_event"();

-- Events are history: never rewritten. Only retention removes them, oldest first, by DELETE.
CREATE FUNCTION "payment_events_append_only"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'payment_events is append-only (% refused)', TG_OP;
END;
$$;

CREATE TRIGGER "payment_events_append_only"
    BEFORE UPDATE ON "payment_events"
    FOR EACH ROW EXECUTE FUNCTION "payment_events_append_only"();

CREATE TRIGGER "payment_events_no_truncate"
    BEFORE TRUNCATE ON "payment_events"
    FOR EACH STATEMENT EXECUTE FUNCTION "payment_events_append_only"();

-- Payments made before this migration get their creation and current status as events, so
-- every payment has a history that starts with its creation.
INSERT INTO "payment_events" ("payment_id", "account_id", "previous_status", "status", "amount", "occurred_at")
SELECT "id", "account_id", NULL, 'PENDING', "amount", "created_at" FROM "payments" ORDER BY "created_at", "id";
INSERT INTO "payment_events" ("payment_id", "account_id", "previous_status", "status", "amount", "occurred_at")
SELECT "id", "account_id", 'PENDING', "status", "amount", "updated_at" FROM "payments" WHERE "status" <> 'PENDING' ORDER BY "updated_at", "id";

-- The settlement queue no longer NOTIFYs on send (pg-boss would do it inside the payment's
-- transaction). New databases create it that way; this turns it off where it already exists.
DO $$
BEGIN
    IF to_regclass('pgboss.queue') IS NOT NULL THEN
        UPDATE pgboss.queue SET notify = false WHERE name = 'payment.settle';
    END IF;
END;
$$;

-- The payment lifecycle's second guard: the database refuses any change of `payments.status` that
-- is not an arrow of the lifecycle (TRANSITIONS in src/payments/lifecycle.ts, whose one function
-- per arrow in transitions.ts makes every status change). test/lifecycle.test.ts checks that the
-- rows below are exactly that table, so the two cannot drift.

-- Text, not the enum: a migration that adds a status can insert its arrows in the same transaction
-- (PostgreSQL refuses to use an enum value in the transaction that added it); the test compares
-- every row with the table, so a misspelt status cannot hide here.
CREATE TABLE "payment_transitions" (
    "from_status" TEXT NOT NULL,
    "to_status" TEXT NOT NULL,

    CONSTRAINT "payment_transitions_pkey" PRIMARY KEY ("from_status", "to_status"),
    CONSTRAINT "payment_transitions_changes_status" CHECK ("from_status" <> "to_status")
);

INSERT INTO "payment_transitions" ("from_status", "to_status") VALUES
    ('SCHEDULED', 'PENDING'),
    ('SCHEDULED', 'HELD'),
    ('SCHEDULED', 'FAILED'),
    ('SCHEDULED', 'CANCELLED'),
    ('PENDING', 'COMPLETED'),
    ('PENDING', 'CANCELLED'),
    ('PENDING', 'FAILED'),
    ('COMPLETED', 'RETURNED'),
    ('HELD', 'PENDING'),
    ('HELD', 'CANCELLED');

-- Runs before the row is written (and before the events and daily-limit triggers), only when the
-- status really changes: writing the same status again is no change. Existing payments are left as
-- they are: only a later change of status is checked.
CREATE FUNCTION "payments_guard_transition"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM "payment_transitions" t WHERE t."from_status" = OLD."status"::text AND t."to_status" = NEW."status"::text
    ) THEN
        RAISE EXCEPTION 'payment % may not change from % to %: not an arrow of the payment lifecycle', OLD."id", OLD."status", NEW."status"
            USING ERRCODE = 'check_violation',
                  HINT = 'The allowed changes are the rows of payment_transitions (TRANSITIONS in src/payments/lifecycle.ts).';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER "payments_guard_transition"
    BEFORE UPDATE OF "status" ON "payments"
    FOR EACH ROW WHEN (OLD."status" IS DISTINCT FROM NEW."status")
    EXECUTE FUNCTION "payments_guard_transition"();

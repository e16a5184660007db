-- Reconciliation with the provider's daily settlement report (docs/decisions/0012-double-entry-ledger.md):
-- each difference between the report of a London day and our books is a break, recorded once,
-- listed to operators until one resolves it (a logged operator action).
CREATE TABLE "reconciliation_breaks" (
    "id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "date" DATE NOT NULL,
    -- MISSING_OURS: on the provider's report, not in our books; MISSING_THEIRS: in our books, not on
    -- the report; AMOUNT_MISMATCH: on both with different amounts.
    "kind" TEXT NOT NULL,
    -- payment, return or credit: what the report item (or our record) is.
    "item_type" TEXT NOT NULL,
    "provider_reference" TEXT NOT NULL,
    "payment_id" UUID,
    "ours" BIGINT,
    "theirs" BIGINT,
    "found_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "resolved_at" TIMESTAMPTZ(3),
    "resolved_by" TEXT,
    "resolution_note" TEXT,

    CONSTRAINT "reconciliation_breaks_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "reconciliation_breaks_kind" CHECK ("kind" IN ('MISSING_OURS', 'MISSING_THEIRS', 'AMOUNT_MISMATCH')),
    CONSTRAINT "reconciliation_breaks_item_type" CHECK ("item_type" IN ('payment', 'return', 'credit')),
    CONSTRAINT "reconciliation_breaks_resolved" CHECK (("resolved_at" IS NULL) = ("resolved_by" IS NULL))
);
-- A break is recorded once however often its day is reconciled.
CREATE UNIQUE INDEX "reconciliation_breaks_date_kind_item_key" ON "reconciliation_breaks"("date", "kind", "item_type", "provider_reference");

-- Each reconciliation of a day: who ran it (an operator, or the daily job as system:reconcile) and
-- what it found; the operator action log names the run.
CREATE TABLE "reconciliation_runs" (
    "id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "date" DATE NOT NULL,
    "run_by" TEXT NOT NULL,
    "report_items" INTEGER NOT NULL,
    "breaks_found" INTEGER NOT NULL,
    "breaks_new" INTEGER NOT NULL,
    "at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "reconciliation_runs_pkey" PRIMARY KEY ("id")
);
CREATE INDEX "reconciliation_runs_date_idx" ON "reconciliation_runs"("date", "at");

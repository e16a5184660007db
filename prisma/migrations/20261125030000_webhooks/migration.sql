-- Webhooks (docs/decisions/0007-webhooks.md): endpoints per account, one delivery row per
-- (endpoint, event), and the dispatcher's durable position in the payment event stream.

CREATE TYPE "WebhookDeliveryStatus" AS ENUM ('PENDING', 'SUCCEEDED', 'FAILED');

CREATE TABLE "webhook_endpoints" (
    "id" UUID NOT NULL,
    "account_id" UUID NOT NULL,
    "url" TEXT NOT NULL,
    -- AES-256-GCM under WEBHOOK_SECRET_KEY (never in the database), the endpoint id as AAD.
    "secret_ciphertext" BYTEA NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    -- Deleted endpoints are kept (their deliveries stay readable) but get no new events.
    "deleted_at" TIMESTAMPTZ(3),

    CONSTRAINT "webhook_endpoints_pkey" PRIMARY KEY ("id")
);

CREATE INDEX "webhook_endpoints_account_id_idx" ON "webhook_endpoints"("account_id");

ALTER TABLE "webhook_endpoints" ADD CONSTRAINT "webhook_endpoints_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

CREATE TABLE "webhook_deliveries" (
    "id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "endpoint_id" UUID NOT NULL,
    -- The event: its row (payment_events.seq, no foreign key: retention deletes events) and its id.
    "event_seq" BIGINT NOT NULL,
    "event_id" CHAR(32) NOT NULL,
    "event_occurred_at" TIMESTAMPTZ(3) NOT NULL,
    "status" "WebhookDeliveryStatus" NOT NULL DEFAULT 'PENDING',
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "last_response_status" INTEGER,
    "last_error" TEXT,
    "last_attempt_at" TIMESTAMPTZ(3),
    "next_attempt_at" TIMESTAMPTZ(3),
    -- Set by the first failed attempt of a round (creation or redelivery): FAILED after this.
    "retry_until" TIMESTAMPTZ(3),
    -- The one pg-boss job allowed to attempt this delivery; any other job of it is stale.
    "job_id" UUID,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "webhook_deliveries_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "webhook_deliveries_attempts_check" CHECK ("attempts" >= 0)
);

-- Fan-out is idempotent: one delivery per endpoint and event.
CREATE UNIQUE INDEX "webhook_deliveries_endpoint_id_event_seq_key" ON "webhook_deliveries"("endpoint_id", "event_seq");
CREATE INDEX "webhook_deliveries_endpoint_id_created_at_id_idx" ON "webhook_deliveries"("endpoint_id", "created_at" DESC, "id" DESC);
-- The oldest undelivered event (metrics) and deliveries past their window (audit).
CREATE INDEX "webhook_deliveries_pending_idx" ON "webhook_deliveries"("event_occurred_at") WHERE "status" = 'PENDING';

ALTER TABLE "webhook_deliveries" ADD CONSTRAINT "webhook_deliveries_endpoint_id_fkey" FOREIGN KEY ("endpoint_id") REFERENCES "webhook_endpoints"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- How far the dispatcher has fanned the event stream out (one row), and where it started.
CREATE TABLE "webhook_dispatch_cursor" (
    "id" BOOLEAN PRIMARY KEY DEFAULT true CHECK ("id"),
    "xid" XID8 NOT NULL,
    "seq" BIGINT NOT NULL,
    "started_xid" XID8 NOT NULL,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- From the horizon now: no endpoint exists yet, so no earlier event has anywhere to go, and
-- every event that becomes readable later sorts after (horizon, 0).
INSERT INTO "webhook_dispatch_cursor" ("xid", "seq", "started_xid")
VALUES (pg_snapshot_xmin(pg_current_snapshot()), 0, pg_snapshot_xmin(pg_current_snapshot()));

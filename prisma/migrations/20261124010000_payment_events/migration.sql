-- Publish every new payment and every status change on the "payment_events" channel, from inside
-- the transaction that makes it: the event is delivered if and only if the change commits, whoever
-- made it (API, worker, or an operator at a psql prompt). The payload carries ids only.
CREATE FUNCTION "payments_notify_change"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'payment_events',
        json_build_object('paymentId', NEW."id", 'accountId', NEW."account_id")::text
    );
    RETURN NULL;
END;
$$;

CREATE TRIGGER "payments_notify_insert"
    AFTER INSERT ON "payments"
    FOR EACH ROW EXECUTE FUNCTION "payments_notify_change"();

CREATE TRIGGER "payments_notify_status"
    AFTER UPDATE OF "status" ON "payments"
    FOR EACH ROW WHEN (OLD."status" IS DISTINCT FROM NEW."status")
    EXECUTE FUNCTION "payments_notify_change"();

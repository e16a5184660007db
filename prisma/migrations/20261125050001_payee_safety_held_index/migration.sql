-- Held payments, oldest first: the operators' review queue (heldPayments) and the expiry job.
-- Its own migration because it names 'HELD', which 20261125050000_payee_safety adds: a new enum
-- value cannot be used in the transaction that adds it, and each migration is one transaction.
CREATE INDEX "payments_held_created_at_idx" ON "payments"("created_at", "id") WHERE "status" = 'HELD';

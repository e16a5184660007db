-- Provider events the parser refused (a type we do not handle, or an event not in its type's
-- shape: a bad credit): kept whole for operators instead of being dropped, and never blocking the
-- events behind them. event_key is the event's own id, or sha256:<hex> of its JSON when it has no
-- usable id, so a page read twice quarantines each event once.
CREATE TABLE provider_event_quarantine (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  event_key text NOT NULL UNIQUE,
  raw_type text,
  problem text NOT NULL,
  raw jsonb NOT NULL,
  received_at timestamptz(3) NOT NULL DEFAULT now(),
  resolved_at timestamptz(3),
  resolved_by text,
  resolution_note text,
  CHECK ((resolved_at IS NULL) = (resolved_by IS NULL))
);
CREATE INDEX provider_event_quarantine_received_idx ON provider_event_quarantine (received_at DESC, id DESC);

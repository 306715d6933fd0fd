-- Every webhook a provider sends us, once: the unique key is the provider's own event identity
-- (Stripe's evt_ id; VAPI's call id + message type (+ status)), so a re-sent or duplicated delivery
-- is recognised and never processed twice.
CREATE TABLE webhook_events (
    id bigserial PRIMARY KEY,
    provider text NOT NULL,
    event_key text NOT NULL,
    event_type text NOT NULL,
    organization_id uuid REFERENCES organizations (id) ON DELETE SET NULL,
    payload jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    UNIQUE (provider, event_key)
);
CREATE INDEX webhook_events_received ON webhook_events (provider, received_at DESC);

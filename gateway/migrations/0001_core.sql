-- Core tables: tenants, users, sessions, one-time tokens, outbox, embed tokens, rate counters.
-- Every tenant-owned table carries organization_id so it can later be distributed by tenant.

CREATE TABLE organizations (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    plan text,                                   -- a tier of plans.yaml, or NULL: no paid plan yet
    status text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'SUSPENDED', 'CANCELLED')),
    minutes_used numeric(12, 2) NOT NULL DEFAULT 0 CHECK (minutes_used >= 0),
    minutes_limit integer,                       -- admin override; NULL: the plan's included minutes
    billing_anchor_day smallint NOT NULL CHECK (billing_anchor_day BETWEEN 1 AND 31),
    current_cycle_start timestamptz NOT NULL,
    current_cycle_end timestamptz NOT NULL,
    phone_number text,
    business_type text,
    business_description text,
    website_url text,
    business_hours jsonb,
    timezone text,
    business_address jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (current_cycle_end > current_cycle_start)
);
CREATE INDEX organizations_cycle_end ON organizations (current_cycle_end);

CREATE TABLE users (
    id uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email text NOT NULL,                          -- normalised: NFKC, case-folded
    name text NOT NULL,
    password_hash text NOT NULL,
    role text NOT NULL DEFAULT 'OWNER' CHECK (role IN ('OWNER', 'ADMIN', 'MEMBER')),
    must_change_password boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email ON users (email);
CREATE INDEX users_org ON users (organization_id);

-- Only a SHA-256 of the cookie value is stored: a database leak does not leak live sessions.
CREATE TABLE sessions (
    token_hash bytea PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- Password-reset and magic-link tokens: random, hashed, single use, expiring.
CREATE TABLE auth_tokens (
    token_hash bytea PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('password_reset', 'magic_link')),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);
CREATE INDEX auth_tokens_user ON auth_tokens (user_id);

-- Mail is written here in the same transaction as the change that causes it; a worker delivers it.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    organization_id uuid REFERENCES organizations (id) ON DELETE CASCADE,
    kind text NOT NULL,
    to_address text NOT NULL,
    subject text NOT NULL,
    body_text text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    sent_at timestamptz
);
CREATE INDEX outbox_pending ON outbox (next_attempt_at) WHERE sent_at IS NULL;

CREATE TABLE embed_tokens (
    id uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    token_hash bytea NOT NULL UNIQUE,
    token_prefix text NOT NULL,
    label text,
    allowed_domains text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX embed_tokens_org ON embed_tokens (organization_id, created_at DESC);

-- Fixed-window counters shared by every process. UNLOGGED: a crash may forget a minute of
-- counts, which is acceptable for throttling and makes each increment cheap (no WAL).
CREATE UNLOGGED TABLE rate_counters (
    key text NOT NULL,
    window_start timestamptz NOT NULL,
    count integer NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (key, window_start)
);
CREATE INDEX rate_counters_expires ON rate_counters (expires_at);

-- One row per organization per cycle; the unique key makes a cycle reset happen once.
CREATE TABLE billing_cycles (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    cycle_start timestamptz NOT NULL,
    cycle_end timestamptz NOT NULL,
    minutes_used numeric(12, 2) NOT NULL,
    closed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, cycle_start)
);

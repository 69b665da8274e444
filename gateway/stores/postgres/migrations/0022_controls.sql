-- Live security controls (gateway.stores.postgres.controls): the SQLite store's tables.
-- Times are Unix seconds (double precision), as the store's interface hands them out.
-- Every change of a set calls live_bump('controls') in its own transaction.
CREATE TABLE controls_consent_revocations (
    cid        text PRIMARY KEY,
    revoked_at double precision NOT NULL,
    revoked_by text NOT NULL,
    via        text NOT NULL
);
CREATE TABLE controls_suspensions (
    agency       text PRIMARY KEY,
    suspended_at double precision NOT NULL,
    suspended_by text NOT NULL,
    reason       text NOT NULL
);
CREATE TABLE controls_reinstatements (
    agency       text PRIMARY KEY REFERENCES controls_suspensions (agency) ON DELETE CASCADE,
    requested_at double precision NOT NULL,
    requested_by text NOT NULL,
    reason       text NOT NULL
);
CREATE TABLE controls_certificate_revocations (
    kind       text NOT NULL CHECK (kind IN ('serial', 'thumbprint')),
    value      text NOT NULL,
    revoked_at double precision NOT NULL,
    revoked_by text NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE TABLE controls_consent_uses (
    cid        text PRIMARY KEY,
    uses       integer NOT NULL CHECK (uses >= 0),
    max_uses   integer CHECK (max_uses IS NULL OR max_uses > 0),
    expires_at bigint,
    first_used double precision NOT NULL,
    last_used  double precision NOT NULL,
    CHECK (max_uses IS NULL OR uses <= max_uses)
);

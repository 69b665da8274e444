-- The consent archive (gateway.stores.postgres.consents; Decree 631 Art. 18): every
-- consent a query used, its signed token encrypted (AES-256-GCM, the consent id as
-- associated data) under a key derived from the pseudonym key every host shares. The
-- subject appears only as its keyed pseudonym. Times are Unix seconds.
CREATE TABLE consent_archive (
    consent_id   text PRIMARY KEY,
    agency       text NOT NULL,
    subject      text NOT NULL,
    expires_at   bigint NOT NULL,
    archived_at  bigint NOT NULL,
    retain_until bigint NOT NULL,
    nonce        bytea NOT NULL CHECK (length(nonce) = 12),
    sealed       bytea NOT NULL
);
CREATE INDEX consent_archive_by_retention ON consent_archive (retain_until);

-- A check value of the archive's key (HMAC-SHA256 under it of a fixed text), written by
-- the first process that opens the archive: a host configured with another pseudonym
-- key is refused at start instead of archiving what no other host can read.
CREATE TABLE consent_archive_key (
    one   integer PRIMARY KEY CHECK (one = 1),
    check_value bytea NOT NULL
);

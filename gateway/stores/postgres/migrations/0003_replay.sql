-- The jti store behind replay protection (gateway/stores/postgres/replay.py), shared
-- by every gateway process: (issuer, jti) -> the SHA-256 of the first token string
-- that used it, until expires_at (Unix seconds: the token's exp plus the leeway).
CREATE TABLE replay_jti (
    issuer       text NOT NULL,
    jti          text NOT NULL,
    token_sha256 bytea NOT NULL,
    expires_at   double precision NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX replay_jti_expiry ON replay_jti (expires_at);

-- The row count, kept by triggers (exact, read in O(1)) for the max_entries bound.
-- Its one row is written by every new jti: claims serialize on it, which is cheap at
-- their rate (about one per agency per token lifetime).
CREATE TABLE replay_jti_count (
    one integer PRIMARY KEY CHECK (one = 1),
    n   bigint NOT NULL
);
INSERT INTO replay_jti_count (one, n) VALUES (1, 0);

CREATE FUNCTION replay_jti_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE replay_jti_count SET n = n + (SELECT count(*) FROM changed) WHERE one = 1;
    ELSE
        UPDATE replay_jti_count SET n = n - (SELECT count(*) FROM changed) WHERE one = 1;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER replay_jti_added AFTER INSERT ON replay_jti
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION replay_jti_counted();
CREATE TRIGGER replay_jti_removed AFTER DELETE ON replay_jti
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION replay_jti_counted();

-- Live propagation (ARCHITECTURE.md "Live propagation"): one version per live store.
-- A writer calls live_bump(store) inside its own transaction: the version moves and a
-- NOTIFY on channel credit_gateway_live ("store:version") is queued, both delivered only
-- if that transaction commits. Listeners re-read this table on every (re)connect and
-- poll it as the backstop, so a lost notification delays a change, never loses it.
CREATE TABLE live_versions (
    name    text PRIMARY KEY CHECK (name IN ('policy', 'controls')),
    version bigint NOT NULL DEFAULT 0 CHECK (version >= 0)
);
INSERT INTO live_versions (name) VALUES ('policy'), ('controls');

CREATE FUNCTION live_bump(store text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v bigint;
BEGIN
    UPDATE live_versions SET version = version + 1 WHERE name = store RETURNING version INTO v;
    IF v IS NULL THEN
        RAISE EXCEPTION 'unknown live store %', store;
    END IF;
    PERFORM pg_notify('credit_gateway_live', store || ':' || v);
    RETURN v;
END
$$;

-- Policy versions (gateway.stores.postgres.policy_versions): the same rules as the
-- SQLite store's triggers, so that a hand-written UPDATE in psql cannot rewrite history
-- either. Refusals use SQLSTATE 23000 (integrity_constraint_violation).
CREATE TABLE policy_versions (
    number       integer PRIMARY KEY CHECK (number > 0),
    content_hash text NOT NULL,
    author       text NOT NULL CHECK (author <> ''),
    reason       text NOT NULL CHECK (reason <> ''),
    created_at   timestamptz NOT NULL,
    parent       integer REFERENCES policy_versions (number),
    files        text NOT NULL
);
CREATE TABLE policy_approvals (
    version integer PRIMARY KEY REFERENCES policy_versions (number),
    officer text NOT NULL CHECK (officer <> ''),
    reason  text NOT NULL,
    at      timestamptz NOT NULL
);
CREATE TABLE policy_checks (
    seq      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version  integer NOT NULL REFERENCES policy_versions (number),
    kind     text NOT NULL CHECK (kind IN ('validate', 'test')),
    problems text NOT NULL,
    at       timestamptz NOT NULL
);
CREATE INDEX policy_checks_by_version ON policy_checks (version, kind, seq);
CREATE TABLE policy_activations (
    seq     integer PRIMARY KEY CHECK (seq > 0),
    version integer NOT NULL REFERENCES policy_versions (number),
    officer text NOT NULL CHECK (officer <> ''),
    reason  text NOT NULL,
    action  text NOT NULL CHECK (action IN ('bootstrap', 'activate', 'rollback')),
    at      timestamptz NOT NULL
);

CREATE FUNCTION policy_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;
CREATE TRIGGER policy_versions_immutable BEFORE UPDATE OR DELETE ON policy_versions
    FOR EACH ROW EXECUTE FUNCTION policy_immutable();
CREATE TRIGGER policy_approvals_immutable BEFORE UPDATE OR DELETE ON policy_approvals
    FOR EACH ROW EXECUTE FUNCTION policy_immutable();
CREATE TRIGGER policy_checks_immutable BEFORE UPDATE OR DELETE ON policy_checks
    FOR EACH ROW EXECUTE FUNCTION policy_immutable();
CREATE TRIGGER policy_activations_immutable BEFORE UPDATE OR DELETE ON policy_activations
    FOR EACH ROW EXECUTE FUNCTION policy_immutable();
-- TRUNCATE bypasses row triggers: refuse it too.
CREATE TRIGGER policy_versions_no_truncate BEFORE TRUNCATE ON policy_versions
    FOR EACH STATEMENT EXECUTE FUNCTION policy_immutable();
CREATE TRIGGER policy_approvals_no_truncate BEFORE TRUNCATE ON policy_approvals
    FOR EACH STATEMENT EXECUTE FUNCTION policy_immutable();
CREATE TRIGGER policy_checks_no_truncate BEFORE TRUNCATE ON policy_checks
    FOR EACH STATEMENT EXECUTE FUNCTION policy_immutable();
CREATE TRIGGER policy_activations_no_truncate BEFORE TRUNCATE ON policy_activations
    FOR EACH STATEMENT EXECUTE FUNCTION policy_immutable();

CREATE FUNCTION policy_four_eyes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.officer = (SELECT author FROM policy_versions WHERE number = NEW.version) THEN
        RAISE EXCEPTION 'four eyes: the author cannot approve their own version'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER policy_approvals_four_eyes BEFORE INSERT ON policy_approvals
    FOR EACH ROW EXECUTE FUNCTION policy_four_eyes();

CREATE FUNCTION policy_activation_rules() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.action = 'bootstrap' THEN
        IF EXISTS (SELECT 1 FROM policy_activations) THEN
            RAISE EXCEPTION 'only the first activation is a bootstrap'
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    ELSIF NOT EXISTS (SELECT 1 FROM policy_approvals WHERE version = NEW.version)
          AND NOT EXISTS (SELECT 1 FROM policy_activations
                          WHERE version = NEW.version AND action = 'bootstrap') THEN
        RAISE EXCEPTION 'only an approved version can be activated'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER policy_activations_rules BEFORE INSERT ON policy_activations
    FOR EACH ROW EXECUTE FUNCTION policy_activation_rules();

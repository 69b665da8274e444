-- The signed audit log shared by every gateway process (gateway/stores/postgres/audit.py).
-- One origin, one key, many writers: an entry's index is assigned in the statement that
-- inserts it, from the one head row (a sequence would leave gaps on rollback); one
-- integrator at a time extends the tree and signs checkpoints.

CREATE TABLE audit_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- The next index to hand out. Its row lock, taken by the appending statement, is held
-- until that statement commits, so indices follow commit order and stay dense.
CREATE TABLE audit_head (
    id         smallint PRIMARY KEY CHECK (id = 1),
    next_index bigint NOT NULL CHECK (next_index >= 0)
);
INSERT INTO audit_head (id, next_index) VALUES (1, 0);

-- append_id: 16 random bytes per append, chosen by the writer, so that a batch whose
-- COMMIT was lost with its connection is looked up, never numbered twice.
CREATE TABLE audit_entries (
    idx       bigint PRIMARY KEY CHECK (idx >= 0),
    leaf      bytea NOT NULL,
    leaf_hash bytea NOT NULL CHECK (length(leaf_hash) = 32),
    append_id bytea NOT NULL UNIQUE CHECK (length(append_id) = 16)
);

-- The integrated tree: size and RFC 6962 root of the prefix the latest checkpoint
-- signs, and who integrated it last (host:pid, for operators).
CREATE TABLE audit_tree (
    id         smallint PRIMARY KEY CHECK (id = 1),
    size       bigint NOT NULL CHECK (size >= 0),
    root       bytea NOT NULL CHECK (length(root) = 32),
    integrator text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO audit_tree (id, size, root)
    VALUES (1, 0, '\xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');

-- Checkpoint history, oldest first (seq orders only: its gaps mean nothing).
CREATE TABLE audit_checkpoints (
    seq       bigserial PRIMARY KEY,
    size      bigint NOT NULL CHECK (size >= 0),
    root      bytea NOT NULL CHECK (length(root) = 32),
    note      text NOT NULL,
    signed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_checkpoints_size ON audit_checkpoints (size);

-- Append-only by construction. This stops mistakes, not a superuser (who can drop
-- triggers): that is what the signed checkpoints are for.
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit % are append-only', TG_TABLE_NAME USING ERRCODE = 'raise_exception';
END $$;
CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- A log must never sign two inconsistent views: refuse a checkpoint for a smaller size
-- than one already stored, or a second root for a size (the same root again, signed by
-- a new key after a rotation, is allowed). The tree row's lock serialises the check.
CREATE FUNCTION audit_checkpoint_history() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    top bigint;
BEGIN
    PERFORM 1 FROM audit_tree WHERE id = 1 FOR UPDATE;
    SELECT max(size) INTO top FROM audit_checkpoints;
    IF top IS NOT NULL AND NEW.size < top THEN
        RAISE EXCEPTION 'audit checkpoint for size % after one for size %', NEW.size, top
            USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM audit_checkpoints WHERE size = NEW.size AND root <> NEW.root) THEN
        RAISE EXCEPTION 'a second root for audit tree size %', NEW.size
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_checkpoints_history BEFORE INSERT ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoint_history();

-- The integrated tree only grows, and never past what is stored.
CREATE FUNCTION audit_tree_grows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.size < OLD.size OR (NEW.size = OLD.size AND NEW.root <> OLD.root) THEN
        RAISE EXCEPTION 'the audit tree cannot shrink or change (% -> %)', OLD.size, NEW.size
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.size > (SELECT next_index FROM audit_head WHERE id = 1) THEN
        RAISE EXCEPTION 'the audit tree cannot pass the stored entries'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_tree_grows BEFORE UPDATE ON audit_tree
    FOR EACH ROW EXECUTE FUNCTION audit_tree_grows();
CREATE TRIGGER audit_tree_no_delete BEFORE DELETE OR TRUNCATE ON audit_tree
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

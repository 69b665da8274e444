-- The shared audit log's tree hashes above the leaves (gateway/stores/postgres/audit.py),
-- in the layout of C2SP tlog-tiles (https://c2sp.org/tlog-tiles, tiles of height 8):
-- hash idx of level L >= 1 is the RFC 6962 root of leaves [idx * 256^L, (idx + 1) * 256^L).
-- Level 0 is audit_entries.leaf_hash. The integrator writes them in the transaction that
-- moves audit_tree past them, so every process answers proofs by reading tiles (a few
-- hundred hashes) instead of holding the whole tree in memory. A log written before this
-- migration gets them filled in by the first process that opens it (gateway.audit.log
-- fill_tiles: derived data, idempotent).
CREATE TABLE audit_tiles (
    level smallint NOT NULL CHECK (level >= 1),
    idx   bigint NOT NULL CHECK (idx >= 0),
    hash  bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

-- Append-only, as the entries.
CREATE TRIGGER audit_tiles_append_only BEFORE UPDATE OR DELETE ON audit_tiles
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_tiles_no_truncate BEFORE TRUNCATE ON audit_tiles
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

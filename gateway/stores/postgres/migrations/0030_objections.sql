-- Objections and credit-repair applications (gateway.stores.postgres.objections), shared
-- by every gateway process on every host: the SQLite store's table (gateway/objections/
-- store.py). Times are Unix seconds (double precision), dates ISO YYYY-MM-DD (Beijing).
-- Every change a query shows (a filing, an answer, a statement) calls
-- live_bump('objections') in its own transaction and stamps the row with the new version
-- (``changed``), so each process's listener reloads only the records that changed.
ALTER TABLE live_versions DROP CONSTRAINT live_versions_name_check;
ALTER TABLE live_versions ADD CONSTRAINT live_versions_name_check
    CHECK (name IN ('policy', 'controls', 'objections'));
INSERT INTO live_versions (name) VALUES ('objections');

CREATE TABLE objections (
    objection_id        text PRIMARY KEY,
    request_key         text NOT NULL UNIQUE,
    kind                text NOT NULL CHECK (kind IN ('objection', 'repair')),
    subject_key         text NOT NULL,
    subject_type        text NOT NULL,
    subject_id          text NOT NULL,
    department          text NOT NULL,
    dataset             text NOT NULL,
    record_id           text NOT NULL,
    grounds             text NOT NULL,
    evidence_sha256     text NOT NULL,
    consent_id          text NOT NULL,
    filed_by            text NOT NULL,
    filed_at            double precision NOT NULL,
    filed_on            text NOT NULL,
    due_on              text NOT NULL,
    routed_at           double precision,
    outcome             text NOT NULL,
    answered_on         text NOT NULL DEFAULT '',
    note                text NOT NULL DEFAULT '',
    statement           text NOT NULL DEFAULT '',
    severity            text NOT NULL DEFAULT '',
    repair_allowed_from text NOT NULL DEFAULT '',
    overdue_noted       boolean NOT NULL DEFAULT false,
    changed             bigint NOT NULL DEFAULT 0,
    -- Data minimisation: the raw identifier is kept only until the department has it.
    CHECK (routed_at IS NULL OR subject_id = '')
);
-- One open objection (and one open repair) per record and subject, across every host.
CREATE UNIQUE INDEX objections_one_open
    ON objections (kind, department, dataset, record_id, subject_key) WHERE outcome = 'pending';
CREATE INDEX objections_by_subject ON objections (subject_key, filed_at);
CREATE INDEX objections_by_filer ON objections (filed_by, filed_at);
CREATE INDEX objections_by_record ON objections (department, dataset, record_id);
CREATE INDEX objections_changed ON objections (changed);
CREATE INDEX objections_unfinished
    ON objections (filed_at) WHERE outcome = 'pending' OR routed_at IS NULL;

-- The subject index (gateway.stores.postgres.subject_index): subject pseudonym -> the
-- answered queries about it, derived from the shared audit log and rebuildable from it.
-- One row of state holds the watermark (one more than the highest log index read) and the
-- log's origin; every write compares and moves it in the transaction that adds the rows,
-- so two writers can never add the same range twice or move the watermark back.
CREATE TABLE subject_index_state (
    one        integer PRIMARY KEY CHECK (one = 1),
    scanned_to bigint NOT NULL CHECK (scanned_to >= 0),
    origin     text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO subject_index_state (one, scanned_to, origin) VALUES (1, 0, '');

CREATE TABLE subject_queries (
    subject            bytea NOT NULL,
    log_index          bigint NOT NULL CHECK (log_index >= 0),
    time               text NOT NULL,
    agency             text NOT NULL,
    purpose            text NOT NULL,
    mode               text NOT NULL,
    charge_fen         bigint NOT NULL,
    datasets           text NOT NULL,
    legal_basis        text NOT NULL,
    case_reference     text NOT NULL,
    confidential_until text NOT NULL,
    PRIMARY KEY (subject, log_index)
);
CREATE INDEX subject_queries_by_basis ON subject_queries (legal_basis, log_index)
    WHERE legal_basis <> '';

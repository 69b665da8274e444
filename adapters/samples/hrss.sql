-- 人力资源和社会保障局: sample database.
CREATE TABLE wage_blacklist (
    id         INTEGER PRIMARY KEY,
    subject_id TEXT NOT NULL,               -- USCC, or the responsible person's id number
    workers    INTEGER NOT NULL,
    amount_fen INTEGER NOT NULL,
    facts      TEXT NOT NULL,
    listed_on  TEXT NOT NULL,
    removed_on TEXT,
    authority  TEXT NOT NULL,
    disputed   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX wage_blacklist_by_subject ON wage_blacklist (subject_id);

CREATE TABLE ss_arrears (
    id         INTEGER PRIMARY KEY,
    uscc       TEXT NOT NULL,
    months     INTEGER NOT NULL,
    amount_fen INTEGER NOT NULL,
    since      TEXT NOT NULL,
    settled_on TEXT,
    disputed   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX ss_arrears_by_uscc ON ss_arrears (uscc);

CREATE TABLE insured (
    id_number     TEXT PRIMARY KEY,
    employer      TEXT NOT NULL,
    insured_since TEXT NOT NULL,
    base_fen      INTEGER NOT NULL,
    months_paid   INTEGER NOT NULL,
    status        TEXT NOT NULL,
    diagnoses     TEXT                      -- from hospitals via medical insurance: Art. 14 prohibited
) WITHOUT ROWID;

CREATE TABLE wage_income (
    id_number       TEXT NOT NULL,
    year            INTEGER NOT NULL,
    employer        TEXT NOT NULL,
    annual_wage_fen INTEGER NOT NULL,
    PRIMARY KEY (id_number, year)
) WITHOUT ROWID;

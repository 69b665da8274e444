-- 税务局: sample database.
CREATE TABLE a_list (
    uscc         TEXT NOT NULL,
    rating_year  INTEGER NOT NULL,
    published_on TEXT NOT NULL,
    PRIMARY KEY (uscc, rating_year)
) WITHOUT ROWID;

CREATE TABLE credit_rating (
    uscc        TEXT NOT NULL,
    rating_year INTEGER NOT NULL,
    rating      TEXT NOT NULL CHECK (rating IN ('A', 'B', 'M', 'C', 'D')),
    score       INTEGER NOT NULL,
    PRIMARY KEY (uscc, rating_year)
) WITHOUT ROWID;

CREATE TABLE major_case (
    id                INTEGER PRIMARY KEY,
    uscc              TEXT NOT NULL,
    case_no           TEXT NOT NULL,
    nature            TEXT NOT NULL,
    amount_fen        INTEGER NOT NULL,
    facts             TEXT NOT NULL,
    decided_on        TEXT NOT NULL,
    authority         TEXT NOT NULL,
    concluded_on      TEXT,                 -- taxes, fines and late fees paid
    objection_pending INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX major_case_by_uscc ON major_case (uscc);

CREATE TABLE arrears (
    id                INTEGER PRIMARY KEY,
    uscc              TEXT NOT NULL,
    tax_type          TEXT NOT NULL,
    amount_fen        INTEGER NOT NULL,
    since             TEXT NOT NULL,
    settled_on        TEXT,                 -- NULL while still owed
    objection_pending INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX arrears_by_uscc ON arrears (uscc);

CREATE TABLE tax_paid (
    uscc       TEXT NOT NULL,
    tax_year   INTEGER NOT NULL,
    amount_fen INTEGER NOT NULL,
    PRIMARY KEY (uscc, tax_year)
) WITHOUT ROWID;

-- 人民法院: sample database. Parties are enterprises (USCC) or persons
-- (resident identity number) in the same tables.
CREATE TABLE dishonest (
    id           INTEGER PRIMARY KEY,
    party_id     TEXT NOT NULL,
    case_no      TEXT NOT NULL,
    court        TEXT NOT NULL,
    basis_doc    TEXT NOT NULL,
    obligation   TEXT NOT NULL,
    performance  TEXT NOT NULL,
    behaviour    TEXT NOT NULL,
    published_on TEXT NOT NULL,
    removed_on   TEXT,                      -- NULL while on the list
    disputed     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX dishonest_by_party ON dishonest (party_id);

CREATE TABLE enforcement (
    id                  INTEGER PRIMARY KEY,
    party_id            TEXT NOT NULL,
    case_no             TEXT NOT NULL,
    court               TEXT NOT NULL,
    filed_on            TEXT NOT NULL,
    amount_fen          INTEGER NOT NULL,
    status              TEXT NOT NULL,
    closed_on           TEXT,
    secret_particulars  TEXT,               -- state secret: never asked for by the gateway
    disputed            INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX enforcement_by_party ON enforcement (party_id);

-- 市场监督管理局: sample database, shaped like the department's own system
-- (its column names, not the catalog's; the mapping file translates).
CREATE TABLE enterprise (
    uscc            TEXT PRIMARY KEY,
    ent_name        TEXT NOT NULL,
    legal_rep       TEXT NOT NULL,
    reg_capital_fen INTEGER NOT NULL,       -- integer fen, never a float
    established_on  TEXT NOT NULL,          -- YYYY-MM-DD
    ent_status      TEXT NOT NULL,
    address         TEXT NOT NULL,
    business_scope  TEXT NOT NULL,
    reg_authority   TEXT NOT NULL,
    under_objection INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE penalty (
    id              INTEGER PRIMARY KEY,
    uscc            TEXT NOT NULL,
    decision_no     TEXT NOT NULL,
    violation       TEXT NOT NULL,
    penalty         TEXT NOT NULL,
    fine_fen        INTEGER,
    decided_on      TEXT NOT NULL,
    authority       TEXT NOT NULL,
    performed_on    TEXT,                   -- penalty carried out: the event ended
    under_objection INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX penalty_by_uscc ON penalty (uscc);

CREATE TABLE abnormal_list (
    id                INTEGER PRIMARY KEY,
    uscc              TEXT NOT NULL,
    reason            TEXT NOT NULL,
    listed_on         TEXT NOT NULL,
    listing_authority TEXT NOT NULL,
    removed_on        TEXT,                 -- NULL while still listed
    removal_reason    TEXT,
    under_objection   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX abnormal_by_uscc ON abnormal_list (uscc);

CREATE TABLE annual_report (
    uscc                  TEXT NOT NULL,
    report_year           INTEGER NOT NULL,
    employees             INTEGER,
    total_assets_fen      INTEGER,
    total_liabilities_fen INTEGER,
    revenue_fen           INTEGER,
    net_profit_fen        INTEGER,
    PRIMARY KEY (uscc, report_year)
) WITHOUT ROWID;

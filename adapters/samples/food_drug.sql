-- 食品药品监督管理局: sample database.
CREATE TABLE licence (
    id           INTEGER PRIMARY KEY,
    uscc         TEXT NOT NULL,
    licence_no   TEXT NOT NULL,
    licence_type TEXT NOT NULL,
    issued_on    TEXT NOT NULL,
    valid_until  TEXT NOT NULL,
    status       TEXT NOT NULL
);
CREATE INDEX licence_by_uscc ON licence (uscc);

CREATE TABLE penalty (
    id           INTEGER PRIMARY KEY,
    uscc         TEXT NOT NULL,
    decision_no  TEXT NOT NULL,
    violation    TEXT NOT NULL,
    penalty      TEXT NOT NULL,
    fine_fen     INTEGER,
    decided_on   TEXT NOT NULL,
    corrected_on TEXT,                      -- rectified and penalty carried out
    disputed     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX penalty_by_uscc ON penalty (uscc);

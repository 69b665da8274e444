-- 人民银行征信中心: sample database.
CREATE TABLE ent_loan (
    id             INTEGER PRIMARY KEY,
    uscc           TEXT NOT NULL,
    lender         TEXT NOT NULL,
    loan_type      TEXT NOT NULL,
    principal_fen  INTEGER NOT NULL,
    balance_fen    INTEGER NOT NULL,
    issued_on      TEXT NOT NULL,
    due_on         TEXT NOT NULL,
    classification TEXT NOT NULL            -- 五级分类: 正常/关注/次级/可疑/损失
);
CREATE INDEX ent_loan_by_uscc ON ent_loan (uscc);

CREATE TABLE guarantee (
    id         INTEGER PRIMARY KEY,
    uscc       TEXT NOT NULL,               -- the guarantor
    debtor     TEXT NOT NULL,
    creditor   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    amount_fen INTEGER NOT NULL,
    start_on   TEXT NOT NULL,
    end_on     TEXT NOT NULL
);
CREATE INDEX guarantee_by_uscc ON guarantee (uscc);

CREATE TABLE person_loan (
    id            INTEGER PRIMARY KEY,
    id_number     TEXT NOT NULL,
    lender        TEXT NOT NULL,
    loan_type     TEXT NOT NULL,
    principal_fen INTEGER NOT NULL,
    balance_fen   INTEGER NOT NULL,
    issued_on     TEXT NOT NULL,
    due_on        TEXT NOT NULL,
    status        TEXT NOT NULL
);
CREATE INDEX person_loan_by_id_number ON person_loan (id_number);

CREATE TABLE overdue (
    id         INTEGER PRIMARY KEY,
    loan_id    INTEGER NOT NULL REFERENCES person_loan (id),
    since      TEXT NOT NULL,
    max_months INTEGER NOT NULL,
    amount_fen INTEGER NOT NULL,
    repaid_on  TEXT,                        -- NULL while still overdue
    disputed   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX overdue_by_loan ON overdue (loan_id);

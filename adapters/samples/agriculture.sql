-- 农业农村局: sample database of rural household credit ratings.
CREATE TABLE village (
    code           TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    credit_village INTEGER NOT NULL         -- 信用村: 0 or 1
) WITHOUT ROWID;

CREATE TABLE household (
    id_number       TEXT PRIMARY KEY,       -- the head of the household
    village_code    TEXT NOT NULL REFERENCES village (code),
    rating          TEXT NOT NULL,
    rated_on        TEXT NOT NULL,
    valid_until     TEXT NOT NULL,
    credit_line_fen INTEGER NOT NULL
) WITHOUT ROWID;

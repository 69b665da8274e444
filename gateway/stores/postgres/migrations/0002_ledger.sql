-- The ledger (gateway/stores/postgres/ledger.py): accounts, append-only entries,
-- metered requests keyed by a unique request id, quota counters and the unaudited
-- marks. In their own schema, so the portable SQL's short table names cannot clash
-- with another store's; amounts are bigint fen, times timestamptz (UTC).
CREATE SCHEMA ledger;

CREATE TABLE ledger.accounts (
    account_id       text PRIMARY KEY,
    balance_fen      bigint NOT NULL DEFAULT 0,
    held_fen         bigint NOT NULL DEFAULT 0 CHECK (held_fen >= 0),
    credit_limit_fen bigint NOT NULL DEFAULT 0 CHECK (credit_limit_fen >= 0),
    created_at       timestamptz NOT NULL,
    -- What new reservations may take never goes below zero, whichever process writes.
    CONSTRAINT accounts_available_not_negative
        CHECK (balance_fen - held_fen + credit_limit_fen >= 0)
);

CREATE TABLE ledger.entries (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  text NOT NULL REFERENCES ledger.accounts (account_id),
    kind        text NOT NULL
        CHECK (kind IN ('reserve', 'charge', 'release', 'top_up', 'adjustment')),
    amount_fen  bigint NOT NULL,
    request_id  text NOT NULL DEFAULT '',
    reference   text NOT NULL DEFAULT '',
    department  text NOT NULL DEFAULT '',
    dataset     text NOT NULL DEFAULT '',
    balance_fen bigint NOT NULL,
    held_fen    bigint NOT NULL,
    at          timestamptz NOT NULL,
    actor       text NOT NULL DEFAULT '',
    note        text NOT NULL DEFAULT '',
    CHECK (kind = 'adjustment' OR amount_fen > 0)
);
-- A top-up or adjustment reference is booked once: the idempotency key.
CREATE UNIQUE INDEX entries_reference ON ledger.entries (kind, reference) WHERE reference <> '';
CREATE INDEX entries_account_at ON ledger.entries (account_id, at);
CREATE INDEX entries_request ON ledger.entries (request_id) WHERE request_id <> '';

CREATE FUNCTION ledger.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only';
END
$$;
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON ledger.entries
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON ledger.entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();

-- One row per request id: the unique key is the only arbiter of "charged once".
CREATE TABLE ledger.requests (
    request_id     text PRIMARY KEY,
    account_id     text NOT NULL,
    basis          text NOT NULL CHECK (basis IN ('paid', 'free_quota', 'self_allowance')),
    state          text NOT NULL CHECK (state IN ('reserved', 'settled', 'released')),
    digest         text NOT NULL,
    quota_key      text NOT NULL DEFAULT '',
    period         text NOT NULL DEFAULT '',
    quota_limit    integer NOT NULL DEFAULT 0,
    quota_units    integer NOT NULL DEFAULT 0,
    lines          text NOT NULL,
    delivered      text NOT NULL DEFAULT '[]',
    reserved_fen   bigint NOT NULL,
    charged_fen    bigint NOT NULL DEFAULT 0,
    balance_fen    bigint NOT NULL DEFAULT 0,
    free_remaining integer NOT NULL DEFAULT 0,
    attempts       integer NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX requests_quota ON ledger.requests (basis, quota_key, period) WHERE quota_units > 0;
CREATE INDEX requests_open ON ledger.requests (updated_at) WHERE state = 'reserved';

-- Quota use per (basis, key, period), kept by triggers in the same transaction as
-- the request rows (reading it is one lookup; counting the day's requests grew).
CREATE TABLE ledger.quota_usage (
    basis     text NOT NULL,
    quota_key text NOT NULL,
    period    text NOT NULL,
    used      integer NOT NULL,
    PRIMARY KEY (basis, quota_key, period)
);

CREATE FUNCTION ledger.count_quota() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.quota_units > 0 THEN
        UPDATE ledger.quota_usage SET used = used - 1
            WHERE basis = OLD.basis AND quota_key = OLD.quota_key AND period = OLD.period;
    END IF;
    IF NEW.quota_units > 0 THEN
        INSERT INTO ledger.quota_usage (basis, quota_key, period, used)
            VALUES (NEW.basis, NEW.quota_key, NEW.period, 1)
            ON CONFLICT (basis, quota_key, period) DO UPDATE SET used = ledger.quota_usage.used + 1;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER requests_quota_insert AFTER INSERT ON ledger.requests
    FOR EACH ROW WHEN (NEW.quota_units > 0) EXECUTE FUNCTION ledger.count_quota();
CREATE TRIGGER requests_quota_update AFTER UPDATE ON ledger.requests
    FOR EACH ROW WHEN ((OLD.quota_units > 0) IS DISTINCT FROM (NEW.quota_units > 0)
        OR OLD.basis IS DISTINCT FROM NEW.basis OR OLD.quota_key IS DISTINCT FROM NEW.quota_key
        OR OLD.period IS DISTINCT FROM NEW.period)
    EXECUTE FUNCTION ledger.count_quota();

-- Bookings whose movements may not be on the audit log yet: set in the movement's
-- transaction, cleared once its audit record is durable (start-up recovery reads it).
CREATE TABLE ledger.unaudited (
    kind  text NOT NULL CHECK (kind IN ('request', 'top_up')),
    ref   text NOT NULL,
    since timestamptz NOT NULL,
    PRIMARY KEY (kind, ref)
);

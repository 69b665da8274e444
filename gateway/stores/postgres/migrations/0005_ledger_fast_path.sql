-- The ledger's two hot transactions as one statement each (gateway/stores/postgres/ledger.py):
-- a reservation and a settlement cost one round trip instead of about nine. They do what
-- gateway/billing/ledger/_engine.py does on the common path only, with the same row locks
-- in the same order (request row, then the free-unit counter, then the account), and raise
-- SQLSTATE CGL01 for everything else (a request id seen before, a quota used up, a balance
-- too low, nothing delivered, an unknown or moved request): the statement is then rolled
-- back whole and the portable transaction decides, with its exact refusals. Amounts are
-- bigint fen; lines are stored as the portable code writes them ([[dept, dataset, fen]]).

CREATE FUNCTION ledger.reserve_fast(
    p_request_id text, p_account_id text, p_basis text, p_digest text,
    p_quota_key text, p_period text, p_quota_limit integer,
    p_departments text[], p_datasets text[], p_amounts bigint[],
    p_lines text, p_free_lines text, p_at timestamptz,
    OUT o_request ledger.requests, OUT o_has_account boolean, OUT o_balance_fen bigint,
    OUT o_held_fen bigint, OUT o_credit_limit_fen bigint, OUT o_free_remaining integer
) LANGUAGE plpgsql AS $$
DECLARE
    v_used integer;
    v_units integer := 0;
    v_total bigint := 0;
    v_lines text := p_lines;
    v_balance bigint;
    v_held bigint;
    v_credit bigint;
    i integer;
BEGIN
    -- Claim the id: a concurrent reservation of the same id waits here for this one.
    INSERT INTO ledger.requests (request_id, account_id, basis, state, digest, lines,
                                 reserved_fen, created_at, updated_at)
        VALUES (p_request_id, p_account_id, p_basis, 'reserved', p_digest, '[]', 0, p_at, p_at)
        ON CONFLICT (request_id) DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'request id seen before' USING ERRCODE = 'CGL01';
    END IF;
    o_free_remaining := 0;
    IF p_basis IN ('free_quota', 'self_allowance') THEN
        INSERT INTO ledger.quota_usage (basis, quota_key, period, used)
            VALUES (p_basis, p_quota_key, p_period, 0)
            ON CONFLICT (basis, quota_key, period) DO NOTHING;
        SELECT used INTO v_used FROM ledger.quota_usage
            WHERE basis = p_basis AND quota_key = p_quota_key AND period = p_period FOR UPDATE;
        IF v_used >= p_quota_limit THEN
            RAISE EXCEPTION 'no free unit left' USING ERRCODE = 'CGL01';
        END IF;
        v_units := 1;
        o_free_remaining := p_quota_limit - v_used - 1;
        v_lines := p_free_lines;
    ELSE
        SELECT coalesce(sum(a), 0) INTO v_total FROM unnest(p_amounts) AS a;
    END IF;

    IF v_total > 0 THEN
        SELECT balance_fen, held_fen, credit_limit_fen INTO v_balance, v_held, v_credit
            FROM ledger.accounts WHERE account_id = p_account_id FOR UPDATE;
        IF NOT FOUND OR v_total > v_balance - v_held + v_credit THEN
            RAISE EXCEPTION 'balance too low' USING ERRCODE = 'CGL01';
        END IF;
        FOR i IN 1 .. coalesce(array_length(p_amounts, 1), 0) LOOP
            CONTINUE WHEN p_amounts[i] = 0;
            v_held := v_held + p_amounts[i];
            INSERT INTO ledger.entries (account_id, kind, amount_fen, request_id, department,
                                        dataset, balance_fen, held_fen, at)
                VALUES (p_account_id, 'reserve', p_amounts[i], p_request_id, p_departments[i],
                        p_datasets[i], v_balance, v_held, p_at);
        END LOOP;
        UPDATE ledger.accounts SET held_fen = v_held WHERE account_id = p_account_id;
    ELSE
        SELECT balance_fen, held_fen, credit_limit_fen INTO v_balance, v_held, v_credit
            FROM ledger.accounts WHERE account_id = p_account_id;
    END IF;
    o_has_account := v_balance IS NOT NULL;

    INSERT INTO ledger.unaudited (kind, ref, since) VALUES ('request', p_request_id, p_at)
        ON CONFLICT (kind, ref) DO NOTHING;
    UPDATE ledger.requests SET quota_key = p_quota_key, period = p_period,
            quota_limit = p_quota_limit, quota_units = v_units, lines = v_lines,
            reserved_fen = v_total, balance_fen = coalesce(v_balance, 0),
            free_remaining = o_free_remaining
        WHERE request_id = p_request_id
        RETURNING * INTO o_request;
    o_balance_fen := coalesce(v_balance, 0);
    o_held_fen := coalesce(v_held, 0);
    o_credit_limit_fen := coalesce(v_credit, 0);
END
$$;

CREATE FUNCTION ledger.settle_fast(
    p_request_id text, p_departments text[], p_datasets text[], p_attempt integer,
    p_at timestamptz, OUT o_request ledger.requests
) LANGUAGE plpgsql AS $$
DECLARE
    v_rec ledger.requests;
    v_balance bigint;
    v_held bigint;
    v_charged bigint := 0;
    v_delivered text;
    v_free integer := 0;
    v_line record;
BEGIN
    SELECT * INTO v_rec FROM ledger.requests WHERE request_id = p_request_id FOR UPDATE;
    IF NOT FOUND OR v_rec.state <> 'reserved'
            OR (p_attempt IS NOT NULL AND v_rec.attempts <> p_attempt) THEN
        RAISE EXCEPTION 'not an open reservation' USING ERRCODE = 'CGL01';
    END IF;
    -- The reserved lines delivered, in their reserved order, as the portable code writes them.
    SELECT '[' || string_agg(format('[%s,%s,%s]', to_json(l ->> 0), to_json(l ->> 1), l ->> 2),
                             ',' ORDER BY n) || ']',
           coalesce(sum((l ->> 2)::bigint), 0)
        INTO v_delivered, v_charged
        FROM jsonb_array_elements(v_rec.lines::jsonb) WITH ORDINALITY AS t (l, n)
        WHERE (l ->> 0, l ->> 1) IN (SELECT * FROM unnest(p_departments, p_datasets));
    IF v_delivered IS NULL THEN
        RAISE EXCEPTION 'nothing delivered' USING ERRCODE = 'CGL01';  -- a release
    END IF;

    INSERT INTO ledger.unaudited (kind, ref, since) VALUES ('request', p_request_id, p_at)
        ON CONFLICT (kind, ref) DO NOTHING;
    IF v_rec.reserved_fen > 0 THEN
        SELECT balance_fen, held_fen INTO v_balance, v_held
            FROM ledger.accounts WHERE account_id = v_rec.account_id FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account gone' USING ERRCODE = 'CGL01';
        END IF;
        FOR v_line IN
            SELECT l ->> 0 AS dept, l ->> 1 AS ds, (l ->> 2)::bigint AS fen,
                   (l ->> 0, l ->> 1) IN (SELECT * FROM unnest(p_departments, p_datasets)) AS hit
                FROM jsonb_array_elements(v_rec.lines::jsonb) WITH ORDINALITY AS t (l, n)
                ORDER BY n
        LOOP
            CONTINUE WHEN v_line.fen = 0;
            v_held := v_held - v_line.fen;
            IF v_line.hit THEN
                v_balance := v_balance - v_line.fen;
            END IF;
            INSERT INTO ledger.entries (account_id, kind, amount_fen, request_id, department,
                                        dataset, balance_fen, held_fen, at)
                VALUES (v_rec.account_id, CASE WHEN v_line.hit THEN 'charge' ELSE 'release' END,
                        v_line.fen, p_request_id, v_line.dept, v_line.ds, v_balance, v_held,
                        p_at);
        END LOOP;
        IF v_held < 0 THEN
            RAISE EXCEPTION 'held amount would go negative' USING ERRCODE = 'CGL01';
        END IF;
        UPDATE ledger.accounts SET balance_fen = v_balance, held_fen = v_held
            WHERE account_id = v_rec.account_id;
    ELSE
        SELECT balance_fen INTO v_balance FROM ledger.accounts
            WHERE account_id = v_rec.account_id;
    END IF;
    IF v_rec.basis IN ('free_quota', 'self_allowance') THEN
        SELECT greatest(v_rec.quota_limit - coalesce(max(used), 0), 0) INTO v_free
            FROM ledger.quota_usage
            WHERE basis = v_rec.basis AND quota_key = v_rec.quota_key AND period = v_rec.period;
    END IF;
    UPDATE ledger.requests SET state = 'settled', delivered = v_delivered,
            charged_fen = v_charged, balance_fen = coalesce(v_balance, 0),
            free_remaining = v_free, updated_at = p_at
        WHERE request_id = p_request_id
        RETURNING * INTO o_request;
END
$$;

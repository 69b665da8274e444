-- Rate limits shared by every gateway process (gateway/stores/postgres/limits.py):
-- one token bucket per agency and one daily counter per (agency, purpose, local day).
-- Processes lease tokens and daily units in chunks through rate_lease(), one statement
-- per lease; the bucket is timed by the server's clock, the same for every host.
CREATE TABLE rate_buckets (
    agency text PRIMARY KEY,
    tokens double precision NOT NULL,
    stamp  double precision NOT NULL  -- server time of the last refill, Unix seconds
);

CREATE TABLE rate_daily (
    agency  text NOT NULL,
    purpose text NOT NULL,
    day     text NOT NULL,  -- YYYY-MM-DD in the limits' time zone
    used    integer NOT NULL CHECK (used >= 0),
    PRIMARY KEY (agency, purpose, day)
);

-- Take up to p_tokens tokens from the agency's bucket (rate p_rate per second, at most
-- p_burst) and up to p_daily units of the day's ceiling p_ceiling; returns what was
-- granted and, when no token was, the seconds until one is there. Rows are locked for
-- the statement's transaction only: two processes leasing at once take turns.
CREATE FUNCTION rate_lease(
    p_agency text, p_purpose text, p_day text,
    p_rate double precision, p_burst integer, p_tokens integer,
    p_ceiling integer, p_daily integer,
    OUT granted integer, OUT wait_s double precision, OUT granted_daily integer
) LANGUAGE plpgsql AS $$
DECLARE
    now_s double precision := extract(epoch FROM clock_timestamp());
    have double precision;
    used_now integer;
    fresh integer;
BEGIN
    granted := 0;
    wait_s := 0;
    granted_daily := 0;
    IF p_tokens > 0 THEN
        INSERT INTO rate_buckets (agency, tokens, stamp) VALUES (p_agency, p_burst, now_s)
            ON CONFLICT (agency) DO NOTHING;
        SELECT least(p_burst::double precision, b.tokens + greatest(now_s - b.stamp, 0) * p_rate)
            INTO have FROM rate_buckets b WHERE b.agency = p_agency FOR UPDATE;
        -- A billionth of a token of slack: a caller told to wait must find it there.
        granted := greatest(least(p_tokens, floor(have + 1e-9)), 0)::integer;
        UPDATE rate_buckets b SET tokens = have - granted, stamp = greatest(b.stamp, now_s)
            WHERE b.agency = p_agency;
        IF granted = 0 THEN
            wait_s := (1 - have) / p_rate;
        END IF;
    END IF;
    IF p_daily > 0 THEN
        INSERT INTO rate_daily (agency, purpose, day, used) VALUES (p_agency, p_purpose, p_day, 0)
            ON CONFLICT (agency, purpose, day) DO NOTHING;
        GET DIAGNOSTICS fresh = ROW_COUNT;
        IF fresh > 0 THEN  -- a new day: earlier days' rows are done with
            DELETE FROM rate_daily d
                WHERE d.agency = p_agency AND d.purpose = p_purpose AND d.day < p_day;
        END IF;
        SELECT d.used INTO used_now FROM rate_daily d
            WHERE d.agency = p_agency AND d.purpose = p_purpose AND d.day = p_day FOR UPDATE;
        granted_daily := greatest(least(p_daily, p_ceiling - used_now), 0);
        IF granted_daily > 0 THEN
            UPDATE rate_daily d SET used = d.used + granted_daily
                WHERE d.agency = p_agency AND d.purpose = p_purpose AND d.day = p_day;
        END IF;
    END IF;
END
$$;

-- Releasing slots, and extending a lease. (Hot path: see 80_hot_path.sql.)

-- Give back a lease's slots and serve the queue. False when the lease is not held (already
-- released, or reclaimed) or is another role's (only managers release any lease; a lease
-- without a session is the role's that took it), and then nothing changes.
CREATE FUNCTION pggcl.release(lease_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at timestamptz := clock_timestamp();
    freed_limits bigint[];
    freed_slots integer[];
    held_since timestamptz;  -- when it was granted: the same on each of its rows
    held_for double precision;
    bucket integer;
    lim pggcl.limit_state;
BEGIN
    -- The lease rows go first; everyone who deletes lease rows under a limit lock skips rows
    -- that are locked, so taking the limit locks afterwards cannot deadlock.
    WITH gone AS (
        DELETE FROM pggcl.leases x
        WHERE x.id = release.lease_id AND pggcl._may_act_on(x.session_id, x.owner_role)
        RETURNING x.limit_id, x.occupy, x.acquired_at
    )
    -- (min, not array_agg: one more array here measured 4 % of a take+release cycle's server
    -- time, SQL loop of 2,000 cycles, 20 alternating rounds.)
    SELECT array_agg(gone.limit_id), array_agg(gone.occupy), min(gone.acquired_at)
      INTO freed_limits, freed_slots, held_since FROM gone;
    IF freed_limits IS NULL THEN
        RETURN false;
    ELSIF cardinality(freed_limits) = 1 THEN
        -- The usual case: one limit. Its slots go straight to the head of its queue; the hold
        -- is counted in the same UPDATE (as _give_back does).
        -- (The bucket in a variable: 2 % of the cycle's server time less than _bucket in the
        -- UPDATE twice, measured as above.)
        held_for := pggcl._seconds(held_since, at);
        bucket := pggcl._bucket(held_for);
        UPDATE pggcl.limit_state
        SET held = held - freed_slots[1], hold_seconds_sum = hold_seconds_sum + held_for,
            hold_buckets[bucket] = hold_buckets[bucket] + 1
        WHERE id = freed_limits[1]
        RETURNING * INTO lim;
        IF lim.queued > 0 THEN
            PERFORM pggcl._serve(lim, at);
        END IF;
    ELSE
        PERFORM pggcl._lock(freed_limits);
        PERFORM pggcl._give_back(freed_limits, freed_slots, array_fill(held_since, ARRAY[cardinality(freed_limits)]),
                                 at, false);
        PERFORM pggcl._grant(freed_limits, at);
    END IF;
    RETURN true;
END
$$;

-- Extend a lease to end ttl_seconds from now. False when the lease is not held, or is another
-- role's (as release).
CREATE FUNCTION pggcl.renew(lease_id uuid, ttl_seconds double precision) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF renew.ttl_seconds IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'ttl_seconds',
            MESSAGE = 'invalid ttl_seconds: it is required';
    END IF;
    PERFORM pggcl._check_seconds('ttl_seconds', renew.ttl_seconds);
    UPDATE pggcl.leases x SET expires_at = clock_timestamp() + make_interval(secs => renew.ttl_seconds)
    WHERE x.id = renew.lease_id AND pggcl._may_act_on(x.session_id, x.owner_role);
    RETURN FOUND;
END
$$;

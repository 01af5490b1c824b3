-- Acquiring slots: the public take, acquire and try_acquire, and the pieces of acquire.
--
-- The public functions here and in the next two files run for every acquire and release, so
-- they pin planner settings, set in one place: 80_hot_path.sql.

-- The usual acquire, shared by pggcl.acquire and pggcl.take: one name, concurrency mode, room
-- and nobody queued. One conditional UPDATE locks the limit row and re-checks the condition on
-- its latest version; then the lease row. False (and nothing changed) when it does not apply.
CREATE FUNCTION pggcl._take_one(name text, occupy integer, session_id integer, holder text,
                                lease_id uuid, ttl_seconds double precision, at timestamptz)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    taken_id bigint;
BEGIN
    UPDATE pggcl.limit_state s SET held = s.held + occupy, grants = s.grants + 1
    WHERE s.name = _take_one.name AND s.active AND s.queued = 0
      AND s.held + occupy <= s."limit" + 1e-9 - pggcl._decayed(s.level, s.slot_decay_per_second, s.level_at, at)
    RETURNING s.id INTO taken_id;
    IF taken_id IS NULL THEN
        RETURN false;
    END IF;
    INSERT INTO pggcl.leases (id, limit_id, occupy, session_id, holder, acquired_at, expires_at, owner_role)
    SELECT lease_id, taken_id, occupy, session_id, holder, at, at + make_interval(secs => ttl_seconds),
           CASE WHEN session_id IS NULL THEN session_user END
    WHERE session_id IS NULL
       OR EXISTS (SELECT FROM pggcl.sessions x WHERE x.id = _take_one.session_id AND NOT x.reclaimed
                  AND coalesce(x.owner_role = session_user, true));
    IF NOT FOUND THEN
        PERFORM pggcl._require_session(session_id);  -- raises: the UPDATE is undone
    END IF;
    RETURN true;
END
$$;

-- The usual rate-limit acquire: one name, an active limit with decay, room and nobody queued.
-- One conditional UPDATE locks the row, re-checks the condition on its latest version and
-- raises the bucket. False (and nothing changed) when it does not apply.
CREATE FUNCTION pggcl._take_one_rate(name text, occupy integer, at timestamptz) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE pggcl.limit_state s
    SET level = pggcl._decayed(s.level, s.slot_decay_per_second, s.level_at, at) + occupy, level_at = at,
        grants = s.grants + 1
    WHERE s.name = _take_one_rate.name AND s.active AND s.queued = 0 AND s.slot_decay_per_second > 0
      AND pggcl._fits(true, s."limit", s.held, s.level, s.slot_decay_per_second, s.level_at, occupy, at);
    RETURN FOUND;
END
$$;

-- Whether a request at `key` (_serve_key) fits now on the locked limits: room on every active
-- one, and nobody queued ahead of it there (a grant never jumps the queue).
CREATE FUNCTION pggcl._fits_now(ids bigint[], occupy integer, at timestamptz, key double precision)
RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN NOT EXISTS (
        SELECT FROM pggcl.limit_state l
        WHERE l.id = ANY(ids) AND l.active
          AND ((l.queued > 0 AND NOT pggcl._nobody_ahead(l.id, key))
               OR NOT pggcl._fits(true, l."limit", l.held, l.level, l.slot_decay_per_second,
                                  l.level_at, occupy, at)));
END
$$;

-- The uncontended acquire alone, for clients: take `occupy` slots on the limit `name` for the
-- lease `request_id` of `session_id` when that needs nothing else (the limit exists, is
-- active, has room, and nobody queues there). Otherwise nothing changes and the answer is
-- false: call pggcl.acquire, which handles every case (and says what is wrong with bad input).
-- Its call is kept small on purpose (five arguments in, one value out): it costs less than
-- acquire's when nothing else is needed.
CREATE FUNCTION pggcl.take(name text, occupy integer, session_id integer, holder text, request_id uuid)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF occupy IS NULL OR occupy < 1 OR occupy > 1000000000 OR session_id IS NULL OR request_id IS NULL
       OR length(holder) > 1000 THEN  -- (the holder bound: _holder_bound)
        RETURN false;
    END IF;
    RETURN pggcl._take_one(name, occupy, session_id, holder, request_id, NULL, clock_timestamp());
END
$$;

-- Take `occupy` slots on every limit in `names` now, or queue the request (when `wait`) and
-- return its waiter_id: the session is notified on its channel when it is granted (see the
-- protocol in 30_sessions.sql). When granted at once, waiter_id is NULL. lease_id is the lease
-- the request holds or will hold (concurrency mode). created_limits names the limits created
-- inactive. `request_id`, a fresh UUID of the caller's choosing, becomes that lease id: a
-- caller who lost the answer (interrupted, disconnected) can still cancel(NULL, request_id).
-- All names or none. `priority` is a head start in seconds (-86400 to 86400; GC003 otherwise):
-- the request is served as if it had come that much earlier (see _serve_key), and granted at
-- once only when there is room and nobody queued on its limits is ahead of it in that order.
-- pggcl.try_acquire is this without waiting.
CREATE FUNCTION pggcl.acquire(names text[], occupy integer DEFAULT 1, mode text DEFAULT 'concurrency',
                              strict boolean DEFAULT false, ttl_seconds double precision DEFAULT NULL,
                              holder text DEFAULT NULL, session_id integer DEFAULT NULL,
                              wait boolean DEFAULT true, request_id uuid DEFAULT NULL,
                              priority double precision DEFAULT 0,
                              OUT granted boolean, OUT lease_id uuid, OUT waiter_id bigint,
                              OUT retry_after double precision, OUT created_limits text[])
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at timestamptz := clock_timestamp();
    wanted text[];
    locked pggcl.limit_state[];
    lim pggcl.limit_state;
    ids bigint[] := '{}';
    active_ids bigint[] := '{}';
    fits boolean := true;
    behind_others boolean := true;
    next_at timestamptz;
    key double precision;
    ahead_of_all boolean;
BEGIN
    -- 1. Input (GC003 names the parameter that is wrong).
    wanted := pggcl._checked_request(names, occupy, mode, ttl_seconds);
    IF length(holder) > 1000 THEN  -- (the holder bound: _holder_bound)
        PERFORM pggcl._check_holder(holder);
    END IF;
    IF priority IS NULL OR NOT (priority >= -86400 AND priority <= 86400) THEN  -- (NaN fails too)
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'priority', MESSAGE = format(
            'invalid priority: %s; it must be a head start in seconds from -86400 to 86400 (one day)',
            coalesce(priority::text, 'NULL'));
    END IF;
    granted := cardinality(wanted) = 0;
    IF granted THEN
        RETURN;
    END IF;

    -- 2. Whose request this is. A concurrency lease without a TTL, and any waiter, must belong
    -- to a session; plain SQL callers get this connection's session.
    IF session_id IS NULL AND (wait OR (mode = 'concurrency' AND ttl_seconds IS NULL)) THEN
        session_id := (SELECT s.session_id FROM pggcl.open_session() s);
    END IF;

    -- 3. The usual case, one name with room and nobody queued: one conditional UPDATE (and, in
    -- concurrency mode, the lease row).
    IF cardinality(wanted) = 1 THEN
        IF mode = 'concurrency' THEN
            lease_id := coalesce(request_id, gen_random_uuid());
            granted := pggcl._take_one(wanted[1], occupy, session_id, holder, lease_id, ttl_seconds, at);
        ELSE
            granted := pggcl._take_one_rate(wanted[1], occupy, at);
        END IF;
        IF granted THEN
            RETURN;
        END IF;
        lease_id := NULL;
    END IF;

    IF session_id IS NOT NULL THEN
        PERFORM pggcl._require_session(session_id);
    END IF;

    -- 4. Lock the limits, in id order. Missing ones are created inactive (they never block),
    -- unless strict. Created rows have higher ids than the rows already locked, so locking
    -- them next keeps the id order.
    locked := pggcl._lock_named(wanted);
    IF cardinality(locked) < cardinality(wanted) THEN
        created_limits := pggcl._create_missing(wanted, locked, strict);
        locked := pggcl._lock_named(wanted);
        IF cardinality(locked) <> cardinality(wanted) THEN
            RAISE EXCEPTION USING ERRCODE = 'GC001', MESSAGE = format(
                'a limit among %s was deleted while acquiring it; try again', array_to_string(wanted, ', '));
        END IF;
    END IF;

    -- 5. Refuse what can never be granted; see whether there is room now, and nobody queued
    -- ahead (with a priority, a request may come before some who queued: see _serve_key).
    key := pggcl._serve_key(at, priority);
    FOREACH lim IN ARRAY locked LOOP
        ids := ids || lim.id;
        CONTINUE WHEN NOT lim.active;
        active_ids := active_ids || lim.id;
        IF occupy > lim."limit" THEN
            RAISE EXCEPTION USING ERRCODE = 'GC004', MESSAGE = format(
                'cannot occupy %s slots on limit %L: its limit is %s', occupy, lim.name, lim."limit");
        ELSIF mode = 'rate_limit' AND lim.slot_decay_per_second = 0 THEN
            RAISE EXCEPTION USING ERRCODE = 'GC005', MESSAGE = format(
                'cannot rate limit on %L: its slot_decay_per_second is 0', lim.name);
        END IF;
        ahead_of_all := lim.queued = 0 OR pggcl._nobody_ahead(lim.id, key);
        fits := fits AND ahead_of_all AND pggcl._has_room(lim, occupy, at);
        behind_others := behind_others AND NOT ahead_of_all;
    END LOOP;

    -- 6. No room: reclaim what died here, serve those queued ahead of us, and look again. A
    -- request that will queue behind others on every limit skips this: it cannot pass them,
    -- and they keep the queue moving (each release grants; their heartbeats reclaim). This
    -- keeps the limit rows locked for a few statements while many workers queue and release.
    IF NOT fits AND NOT (wait AND behind_others) THEN
        next_at := pggcl._reap(ids, at);
        PERFORM pggcl._grant(ids, at);
        fits := pggcl._fits_now(ids, occupy, at, key);
    END IF;

    -- 7. Room on every active limit and nobody queued there: take it.
    IF fits THEN
        granted := true;
        lease_id := CASE WHEN mode = 'concurrency' THEN coalesce(request_id, gen_random_uuid()) END;
        PERFORM pggcl._take(ids, active_ids, occupy, mode, lease_id, session_id, holder, ttl_seconds, at);
        RETURN;
    END IF;

    -- 8. Refused: say when to look again, and queue when asked to (counted in `enqueued`), or
    -- count the refusal (`denied`) on the limits that stood in the way: full, or queued on.
    -- (A rate-limit waiter has no lease; its row keeps the request id, so that cancel can find
    -- it by that.)
    IF wait THEN
        lease_id := CASE WHEN mode = 'concurrency' THEN coalesce(request_id, gen_random_uuid()) END;
        waiter_id := pggcl._enqueue(ids, occupy, mode, coalesce(lease_id, request_id, gen_random_uuid()),
                                    session_id, holder, ttl_seconds, at, priority, key);
        retry_after := pggcl._retry_after(ids, occupy, waiter_id, at, next_at);
    ELSE
        retry_after := pggcl._retry_after(ids, occupy, NULL, at, next_at);
        UPDATE pggcl.limit_state l SET denied = l.denied + 1
        WHERE l.id = ANY(active_ids)
          AND (l.queued > 0 OR NOT pggcl._fits(true, l."limit", l.held, l.level, l.slot_decay_per_second,
                                               l.level_at, occupy, at));
    END IF;
END
$$;

-- Take `occupy` slots on every limit in `names` now, or be told when to try again. Never waits.
--   concurrency mode: on success `lease_id`; the slots are held until pggcl.release(lease_id),
--     until the owning session's connection is lost (past its grace), or until ttl_seconds pass.
--     Without a session and a TTL, the lease belongs to this connection's session.
--   rate_limit mode: no lease; the slots decay away at slot_decay_per_second. When refused,
--     retry_after is exactly the seconds until they will fit (NULL: it depends on a release).
-- Missing names are created inactive unless `strict` (GC006). Errors: GC003 bad input, GC004
-- occupy above an active limit, GC005 rate_limit on a limit without decay.
CREATE FUNCTION pggcl.try_acquire(names text[], occupy integer DEFAULT 1, mode text DEFAULT 'concurrency',
                                  strict boolean DEFAULT false, ttl_seconds double precision DEFAULT NULL,
                                  holder text DEFAULT NULL, session_id integer DEFAULT NULL,
                                  priority double precision DEFAULT 0,
                                  OUT granted boolean, OUT lease_id uuid, OUT retry_after double precision)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    answer record;
BEGIN
    -- A plain assignment, not SELECT ... FROM: it skips the set-returning function machinery.
    answer := pggcl.acquire(names, occupy, mode, strict, ttl_seconds, holder, session_id, false,
                            NULL, priority);
    granted := answer.granted;
    lease_id := answer.lease_id;
    retry_after := answer.retry_after;
END
$$;

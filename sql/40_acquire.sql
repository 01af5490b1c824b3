-- Acquiring and releasing slots.
--
-- These functions run for every acquire and release, so they pin planner settings: generic
-- plans (planned once per connection, never re-planned per call), no sequential scans (the
-- first plan is made while the tables are small, and must stay right as they grow), and no JIT
-- (a plan costed high by the seqscan penalty must not trigger a compile).

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
    UPDATE pggcl.limit_state s SET held = s.held + occupy
    WHERE s.name = _take_one.name AND s.active AND s.queued = 0
      AND s.held + occupy <= s."limit" + 1e-9 - pggcl._decayed(s.level, s.slot_decay_per_second, s.level_at, at)
    RETURNING s.id INTO taken_id;
    IF taken_id IS NULL THEN
        RETURN false;
    END IF;
    INSERT INTO pggcl.leases (id, limit_id, occupy, session_id, holder, acquired_at, expires_at)
    SELECT lease_id, taken_id, occupy, session_id, holder, at, at + make_interval(secs => ttl_seconds)
    WHERE session_id IS NULL
       OR EXISTS (SELECT FROM pggcl.sessions x WHERE x.id = _take_one.session_id AND NOT x.reclaimed);
    IF NOT FOUND THEN
        PERFORM pggcl._require_session(session_id);  -- raises: the UPDATE is undone
    END IF;
    RETURN true;
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
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
BEGIN
    IF occupy IS NULL OR occupy < 1 OR session_id IS NULL OR request_id IS NULL THEN
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
-- All names or none. pggcl.try_acquire is this without waiting.
CREATE FUNCTION pggcl.acquire(names text[], occupy integer DEFAULT 1, mode text DEFAULT 'concurrency',
                              strict boolean DEFAULT false, ttl_seconds double precision DEFAULT NULL,
                              holder text DEFAULT NULL, session_id integer DEFAULT NULL,
                              wait boolean DEFAULT true, request_id uuid DEFAULT NULL,
                              OUT granted boolean, OUT lease_id uuid, OUT waiter_id bigint,
                              OUT retry_after double precision, OUT created_limits text[])
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
DECLARE
    at timestamptz := clock_timestamp();
    wanted text[];
    locked pggcl.limit_state[];
    lim pggcl.limit_state;
    ids bigint[] := '{}';
    active_ids bigint[] := '{}';
    fits boolean := true;
    behind_others boolean := true;
    fast_id bigint;
    next_at timestamptz;
    n text;
BEGIN
    -- 1. Input.
    IF occupy IS NULL OR occupy < 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', MESSAGE = format(
            'invalid occupy: %s; it must be a whole number of slots, 1 or more', coalesce(occupy::text, 'NULL'));
    END IF;
    IF mode IS NULL OR mode NOT IN ('concurrency', 'rate_limit') THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', MESSAGE = format(
            'invalid mode: %s; it must be ''concurrency'' or ''rate_limit''', coalesce(quote_literal(mode), 'NULL'));
    END IF;
    IF NOT pggcl._valid_seconds(ttl_seconds) THEN
        PERFORM pggcl._check_seconds('ttl_seconds', ttl_seconds);
    END IF;
    IF names IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', MESSAGE = 'invalid names: an array of limit names is required';
    END IF;
    -- (Conditions without subqueries are evaluated without starting the executor: the usual
    -- path is written so that only its real work runs queries.)
    IF cardinality(names) = 1 THEN
        wanted := names;
    ELSE
        wanted := array(SELECT DISTINCT x FROM unnest(names) x ORDER BY x);
    END IF;
    FOREACH n IN ARRAY wanted LOOP
        IF NOT pggcl._valid_name(n) THEN
            PERFORM pggcl._check_name(n);
        END IF;
    END LOOP;
    granted := cardinality(wanted) = 0;
    IF granted THEN
        RETURN;
    END IF;

    -- 2. Whose request this is. A concurrency lease without a TTL, and any waiter, must belong
    -- to a session; plain SQL callers get this connection's session.
    IF session_id IS NULL AND (wait OR (mode = 'concurrency' AND ttl_seconds IS NULL)) THEN
        session_id := (SELECT s.session_id FROM pggcl.open_session() s);
    END IF;

    -- 3. The usual case, one name with room and nobody queued: one conditional UPDATE (it
    -- locks the row and re-checks the condition on its latest version), and the lease row.
    IF cardinality(wanted) = 1 THEN
        IF mode = 'concurrency' THEN
            lease_id := coalesce(request_id, gen_random_uuid());
            IF pggcl._take_one(wanted[1], occupy, session_id, holder, lease_id, ttl_seconds, at) THEN
                granted := true;
                RETURN;
            END IF;
            lease_id := NULL;
        ELSE
            UPDATE pggcl.limit_state s
            SET level = pggcl._decayed(s.level, s.slot_decay_per_second, s.level_at, at) + occupy, level_at = at
            WHERE s.name = wanted[1] AND s.active AND s.queued = 0 AND s.slot_decay_per_second > 0
              AND pggcl._fits(true, s."limit", s.held, s.level, s.slot_decay_per_second, s.level_at, occupy, at)
            RETURNING s.id INTO fast_id;
            IF fast_id IS NOT NULL THEN
                granted := true;
                RETURN;
            END IF;
        END IF;
    END IF;

    IF session_id IS NOT NULL THEN
        PERFORM pggcl._require_session(session_id);
    END IF;

    -- 4. Lock the limits, in id order. Missing ones are created inactive (they never block),
    -- unless strict. Created rows have higher ids than the rows already locked, so locking
    -- them next keeps the id order.
    IF cardinality(wanted) = 1 THEN
        SELECT * INTO lim FROM pggcl.limit_state s WHERE s.name = wanted[1] FOR NO KEY UPDATE;
        locked := CASE WHEN FOUND THEN ARRAY[lim] ELSE '{}' END;
    ELSE
        locked := array(SELECT s FROM pggcl.limit_state s WHERE s.name = ANY(wanted) ORDER BY s.id
                        FOR NO KEY UPDATE);
    END IF;
    IF cardinality(locked) < cardinality(wanted) THEN
        created_limits := array(SELECT x FROM unnest(wanted) x
                                WHERE x <> ALL(array(SELECT (s).name FROM unnest(locked) s)));
        IF strict THEN
            RAISE EXCEPTION USING ERRCODE = 'GC006', MESSAGE = format('no such limit: %s',
                array_to_string(array(SELECT quote_literal(x) FROM unnest(created_limits) x), ', '));
        END IF;
        INSERT INTO pggcl.limit_state (name, "limit", active)
        SELECT x, 1, false FROM unnest(created_limits) x
        ON CONFLICT ON CONSTRAINT limit_state_name_key DO NOTHING;
        locked := array(SELECT s FROM pggcl.limit_state s WHERE s.name = ANY(wanted) ORDER BY s.id
                        FOR NO KEY UPDATE);
        IF cardinality(locked) <> cardinality(wanted) THEN
            RAISE EXCEPTION USING ERRCODE = 'GC001', MESSAGE = format(
                'a limit among %s was deleted while acquiring it; try again', array_to_string(wanted, ', '));
        END IF;
    END IF;

    -- 5. Refuse what can never be granted; see whether there is room now.
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
        fits := fits AND lim.queued = 0 AND pggcl._has_room(lim, occupy, at);
        behind_others := behind_others AND lim.queued > 0;
    END LOOP;

    -- 6. Room on every active limit and nobody queued there: take it.
    IF fits THEN
        granted := true;
        lease_id := CASE WHEN mode = 'concurrency' THEN coalesce(request_id, gen_random_uuid()) END;
        PERFORM pggcl._take(ids, active_ids, occupy, mode, lease_id, session_id, holder, ttl_seconds, at);
        RETURN;
    END IF;

    -- 7. Reclaim what died here, serve those queued ahead of us, and look again. A request
    -- that will queue behind others on every limit skips this: it cannot pass them, and they
    -- keep the queue moving (each release grants; their heartbeats reclaim). This keeps the
    -- limit rows locked for a few statements while many workers queue and release.
    IF NOT (wait AND behind_others) THEN
        next_at := pggcl._reap(ids, at);
        PERFORM pggcl._grant(ids, at);
        IF pggcl._fits_now(ids, occupy, at) THEN
            granted := true;
            lease_id := CASE WHEN mode = 'concurrency' THEN coalesce(request_id, gen_random_uuid()) END;
            PERFORM pggcl._take(ids, active_ids, occupy, mode, lease_id, session_id, holder, ttl_seconds, at);
            RETURN;
        END IF;
    END IF;

    -- 8. Refused: say when to look again, and queue when asked to.
    retry_after := pggcl._retry_after(ids, occupy, NULL, at, next_at);
    IF wait THEN
        waiter_id := nextval('pggcl.waiter_id_seq');
        lease_id := CASE WHEN mode = 'concurrency' THEN coalesce(request_id, gen_random_uuid()) END;
        INSERT INTO pggcl.waiters (id, limit_id, limit_ids, session_id, lease_id, occupy, mode, holder,
                                   ttl_seconds, enqueued_at)
        SELECT waiter_id, x, ids, session_id, coalesce(lease_id, request_id, gen_random_uuid()), occupy, mode, holder,
               ttl_seconds, at
        FROM unnest(ids) x;
        UPDATE pggcl.limit_state SET queued = queued + 1 WHERE id = ANY(ids);
    END IF;
END
$$;

-- Whether a request fits now on the locked limits: room on every active one, and nobody queued
-- on it (a grant never jumps the queue).
CREATE FUNCTION pggcl._fits_now(ids bigint[], occupy integer, at timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN NOT EXISTS (
        SELECT FROM pggcl.limit_state l
        WHERE l.id = ANY(ids) AND l.active
          AND (l.queued > 0 OR NOT pggcl._fits(true, l."limit", l.held, l.level, l.slot_decay_per_second,
                                               l.level_at, occupy, at)));
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
                                  OUT granted boolean, OUT lease_id uuid, OUT retry_after double precision)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
DECLARE
    answer record;
BEGIN
    -- A plain assignment, not SELECT ... FROM: it skips the set-returning function machinery.
    answer := pggcl.acquire(names, occupy, mode, strict, ttl_seconds, holder, session_id, false);
    granted := answer.granted;
    lease_id := answer.lease_id;
    retry_after := answer.retry_after;
END
$$;

-- Where a waiter stands: 'granted', 'queued', 'rejected' (can never be granted) or 'gone'
-- (cancelled, reclaimed, or a rate-limit grant already delivered). Also serves whoever can be
-- served on its limits, so it is what a client calls on an 'r:' notification or at retry_after.
CREATE FUNCTION pggcl.recheck(waiter_id bigint, lease_id uuid DEFAULT NULL)
RETURNS TABLE (status text, retry_after double precision)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
DECLARE
    at timestamptz := clock_timestamp();
    w pggcl.waiters;
    ids bigint[];
    next_at timestamptz;
BEGIN
    ids := pggcl._lock(array(SELECT limit_id FROM pggcl.waiters x WHERE x.id = recheck.waiter_id));
    SELECT * INTO w FROM pggcl.waiters x WHERE x.id = recheck.waiter_id LIMIT 1;
    IF FOUND THEN
        next_at := pggcl._reap(ids, at);
        IF recheck.waiter_id = ANY(pggcl._grant(ids, at)) THEN
            RETURN QUERY SELECT 'granted'::text, NULL::double precision;
            RETURN;
        ELSIF EXISTS (SELECT FROM pggcl.waiters x WHERE x.id = recheck.waiter_id) THEN
            RETURN QUERY SELECT 'queued'::text, pggcl._retry_after(ids, w.occupy, w.id, at, next_at);
            RETURN;
        ELSIF pggcl._impossible(ids, w.occupy, w.mode) IS NOT NULL THEN
            RETURN QUERY SELECT 'rejected'::text, NULL::double precision;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY SELECT CASE WHEN EXISTS (SELECT FROM pggcl.leases x WHERE x.id = recheck.lease_id)
                             THEN 'granted' ELSE 'gone' END, NULL::double precision;
END
$$;

-- Stop waiting. 'cancelled' when the request was still queued (whoever it blocked is served);
-- otherwise what recheck would say ('granted': the caller now holds lease_id and must release it).
-- With waiter_id NULL, the waiter is found by the request id given to acquire (as lease_id).
CREATE FUNCTION pggcl.cancel(waiter_id bigint, lease_id uuid DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
DECLARE
    at timestamptz := clock_timestamp();
    ids bigint[];
    dequeued bigint[];
BEGIN
    IF cancel.waiter_id IS NULL THEN  -- the caller knows only the request id it chose
        waiter_id := (SELECT x.id FROM pggcl.waiters x WHERE x.lease_id = cancel.lease_id LIMIT 1);
    END IF;
    ids := pggcl._lock(array(SELECT limit_id FROM pggcl.waiters x WHERE x.id = cancel.waiter_id));
    WITH gone AS (DELETE FROM pggcl.waiters x WHERE x.id = cancel.waiter_id RETURNING x.limit_id)
    SELECT array_agg(limit_id) INTO dequeued FROM gone;
    IF dequeued IS NOT NULL THEN
        PERFORM pggcl._dequeued(dequeued);
        PERFORM pggcl._grant(ids, at);
        RETURN 'cancelled';
    END IF;
    RETURN CASE WHEN EXISTS (SELECT FROM pggcl.leases x WHERE x.id = cancel.lease_id) THEN 'granted' ELSE 'gone' END;
END
$$;

-- Give back a lease's slots and serve the queue. False when the lease is not held (already
-- released, or reclaimed), and then nothing changes.
CREATE FUNCTION pggcl.release(lease_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
DECLARE
    at timestamptz := clock_timestamp();
    freed_limits bigint[];
    freed_slots integer[];
    lim pggcl.limit_state;
BEGIN
    -- The lease rows go first; everyone who deletes lease rows under a limit lock skips rows
    -- that are locked, so taking the limit locks afterwards cannot deadlock.
    WITH gone AS (
        DELETE FROM pggcl.leases x WHERE x.id = release.lease_id RETURNING x.limit_id, x.occupy
    )
    SELECT array_agg(gone.limit_id), array_agg(gone.occupy) INTO freed_limits, freed_slots FROM gone;
    IF freed_limits IS NULL THEN
        RETURN false;
    ELSIF cardinality(freed_limits) = 1 THEN
        -- The usual case: one limit. Its slots go straight to the head of its queue.
        UPDATE pggcl.limit_state SET held = held - freed_slots[1] WHERE id = freed_limits[1]
        RETURNING * INTO lim;
        IF lim.queued > 0 THEN
            PERFORM pggcl._serve(lim, at);
        END IF;
    ELSE
        PERFORM pggcl._lock(freed_limits);
        PERFORM pggcl._give_back(freed_limits, freed_slots);
        PERFORM pggcl._grant(freed_limits, at);
    END IF;
    RETURN true;
END
$$;

-- Extend a lease to end ttl_seconds from now. False when the lease is not held.
CREATE FUNCTION pggcl.renew(lease_id uuid, ttl_seconds double precision) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
BEGIN
    IF renew.ttl_seconds IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', MESSAGE = 'invalid ttl_seconds: it is required';
    END IF;
    PERFORM pggcl._check_seconds('ttl_seconds', renew.ttl_seconds);
    UPDATE pggcl.leases x SET expires_at = clock_timestamp() + make_interval(secs => renew.ttl_seconds)
    WHERE x.id = renew.lease_id;
    RETURN FOUND;
END
$$;

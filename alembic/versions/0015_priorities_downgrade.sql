-- Revision 0015, downgrade to 0014: no priorities. Waiters keep their arrival order (by id);
-- each queue's reading starts at or before its first waiter again. Frozen once released.
DROP VIEW pggcl.queue;
DROP FUNCTION pggcl.try_acquire(text[], integer, text, boolean, double precision, text, integer, double precision);
DROP FUNCTION pggcl.acquire(text[], integer, text, boolean, double precision, text, integer, boolean, uuid, double precision);
DROP FUNCTION pggcl._fits_now(bigint[], integer, timestamptz, double precision);
DROP FUNCTION pggcl._enqueue(bigint[], integer, text, uuid, integer, text, double precision, timestamptz, double precision, double precision);
DROP FUNCTION pggcl._nobody_ahead(bigint, double precision);
DROP FUNCTION pggcl._serve_key(timestamptz, double precision);

CREATE FUNCTION pggcl._enqueue(ids bigint[], occupy integer, mode text, lease_id uuid,
                               session_id integer, holder text, ttl_seconds double precision,
                               at timestamptz) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    waiter_id bigint := nextval('pggcl.waiter_id_seq');
BEGIN
    INSERT INTO pggcl.waiters (id, limit_id, limit_ids, session_id, lease_id, occupy, mode, holder,
                               ttl_seconds, enqueued_at)
    SELECT waiter_id, x, ids, session_id, lease_id, occupy, mode, holder, ttl_seconds, at
    FROM unnest(ids) x;
    UPDATE pggcl.limit_state SET queued = queued + 1, enqueued = enqueued + 1 WHERE id = ANY(ids);
    RETURN waiter_id;
END
$$;

CREATE OR REPLACE FUNCTION pggcl._serve(lim pggcl.limit_state, at timestamptz) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    w pggcl.waiters;
    notified boolean;
    granted bigint[] := '{}';
    dropped boolean := false;
    passed boolean := false;  -- a waiter was passed over: queue_from must stay below it
    general boolean := NOT lim.active;
    waited double precision;
    bucket integer;
BEGIN
    IF lim.active THEN
        -- (No LIMIT: dead waiters are skipped; the loop ends when the head does not fit.)
        FOR w IN SELECT * FROM pggcl.waiters x WHERE x.limit_id = lim.id AND x.id > lim.queue_from
                 ORDER BY x.id LOOP
            IF cardinality(w.limit_ids) > 1 OR w.occupy > lim."limit"
               OR (w.mode = 'rate_limit' AND lim.slot_decay_per_second = 0) THEN
                general := true;
                EXIT;
            END IF;
            EXIT WHEN NOT pggcl._has_room(lim, w.occupy, at);
            IF NOT pggcl._session_alive(w.session_id) THEN
                IF pggcl._dead_past_grace(w.session_id, at) THEN
                    DELETE FROM pggcl.waiters x WHERE x.limit_id = lim.id AND x.id = w.id;
                    lim.queued := lim.queued - 1;
                    lim.gave_up := lim.gave_up + 1;
                    IF NOT passed THEN
                        lim.queue_from := w.id;
                    END IF;
                    dropped := true;
                ELSE
                    passed := true;
                END IF;
                CONTINUE;
            END IF;
            WITH gone AS (
                DELETE FROM pggcl.waiters x WHERE x.limit_id = lim.id AND x.id = w.id RETURNING x.id
            ), taken AS (
                INSERT INTO pggcl.leases (id, limit_id, occupy, session_id, holder, acquired_at, expires_at)
                SELECT w.lease_id, lim.id, w.occupy, w.session_id, w.holder, at,
                       at + make_interval(secs => w.ttl_seconds)
                FROM gone WHERE w.mode = 'concurrency'
            )
            SELECT pggcl._notify(w.session_id, 'g', w.id) IS NULL INTO notified FROM gone;
            IF w.mode = 'concurrency' THEN
                lim.held := lim.held + w.occupy;
            ELSE
                lim.level := pggcl._level(lim, at) + w.occupy;
                lim.level_at := at;
                PERFORM pggcl._record_rate_grant(w.id, w.session_id, at);
            END IF;
            lim.queued := lim.queued - 1;
            lim.grants := lim.grants + 1;
            waited := pggcl._seconds(w.enqueued_at, at);
            bucket := pggcl._bucket(waited);
            lim.wait_seconds_sum := lim.wait_seconds_sum + waited;
            lim.wait_buckets[bucket] := lim.wait_buckets[bucket] + 1;
            IF NOT passed THEN
                lim.queue_from := w.id;  -- it was the head: every waiter before it here is gone
            END IF;
            granted := granted || w.id;
        END LOOP;
        IF cardinality(granted) > 0 OR dropped THEN
            UPDATE pggcl.limit_state
            SET held = lim.held, queued = lim.queued, level = lim.level, level_at = lim.level_at,
                queue_from = lim.queue_from, grants = lim.grants, gave_up = lim.gave_up,
                wait_seconds_sum = lim.wait_seconds_sum, wait_buckets = lim.wait_buckets
            WHERE id = lim.id;
        END IF;
    END IF;
    IF general THEN
        granted := granted || pggcl._grant_general(ARRAY[lim.id], at);
    END IF;
    RETURN granted;
END
$$;

CREATE OR REPLACE FUNCTION pggcl._grant_general(ids bigint[], at timestamptz) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    w pggcl.waiters;
    active_ids bigint[];
    blocked bigint[] := '{}';
    previous bigint := 0;
    granted bigint[] := '{}';
    why text;
BEGIN
    IF NOT EXISTS (SELECT FROM pggcl.limit_state WHERE id = ANY(ids) AND queued > 0) THEN
        RETURN granted;
    END IF;
    active_ids := array(SELECT id FROM pggcl.limit_state WHERE id = ANY(ids) AND active);

    FOR w IN SELECT * FROM pggcl.waiters WHERE limit_id = ANY(ids) ORDER BY id LOOP
        CONTINUE WHEN w.id = previous;
        previous := w.id;
        IF w.limit_ids && blocked THEN
            blocked := blocked || pggcl._intersect(w.limit_ids, active_ids);
        ELSIF NOT w.limit_ids <@ ids THEN
            PERFORM pggcl._notify(w.session_id, 'r', w.id);
            -- It blocks those after it on its active limits here only: an inactive (or just
            -- deleted) limit gates nobody.
            blocked := blocked || pggcl._intersect(w.limit_ids, active_ids);
        ELSE
            why := pggcl._impossible(w.limit_ids, w.occupy, w.mode);
            IF why IS NOT NULL THEN
                PERFORM pggcl._dequeue_waiter(w.id, 'rejected', at);
                PERFORM pggcl._notify(w.session_id, 'e', w.id, why);
            ELSIF (SELECT bool_and(pggcl._fits(l.active, l."limit", l.held, l.level, l.slot_decay_per_second,
                                               l.level_at, w.occupy, at))
                   FROM pggcl.limit_state l WHERE l.id = ANY(w.limit_ids)) THEN
                IF NOT pggcl._session_alive(w.session_id) THEN  -- never served (see _serve)
                    IF pggcl._dead_past_grace(w.session_id, at) THEN
                        PERFORM pggcl._dequeue_waiter(w.id, 'gave_up', at);
                    END IF;
                    CONTINUE;
                END IF;
                PERFORM pggcl._take(w.limit_ids, pggcl._intersect(w.limit_ids, active_ids), w.occupy,
                                    w.mode, w.lease_id, w.session_id, w.holder, w.ttl_seconds, at);
                PERFORM pggcl._dequeue_waiter(w.id, 'granted', at);
                IF w.mode = 'rate_limit' THEN
                    PERFORM pggcl._record_rate_grant(w.id, w.session_id, at);
                END IF;
                PERFORM pggcl._notify(w.session_id, 'g', w.id);
                granted := granted || w.id;
            ELSE
                blocked := blocked || pggcl._intersect(w.limit_ids, active_ids);
            END IF;
        END IF;
        EXIT WHEN cardinality(active_ids) > 0 AND active_ids <@ blocked;
    END LOOP;
    RETURN granted;
END
$$;

CREATE OR REPLACE FUNCTION pggcl._retry_after(ids bigint[], occupy integer, before bigint, at timestamptz,
                                   next_at timestamptz)
RETURNS double precision
LANGUAGE plpgsql STABLE AS $$
DECLARE
    l pggcl.limit_state;
    ahead bigint;  -- slots queued ahead: a sum of many requests may pass 2^31 - 1
    unknown boolean;
    free double precision;
    wait double precision := 0;
BEGIN
    FOR l IN SELECT * FROM pggcl.limit_state WHERE id = ANY(ids) AND active LOOP
        -- Slots held by leases must be released first: no need to read the (maybe long) queue.
        IF l.held + occupy > l."limit" THEN
            RETURN pggcl._seconds_until(next_at, at);
        END IF;
        SELECT coalesce(sum(q.occupy), 0), coalesce(bool_or(q.mode <> 'rate_limit'), false)
          INTO ahead, unknown
          FROM pggcl.waiters q
         WHERE q.limit_id = l.id AND q.id > l.queue_from AND (before IS NULL OR q.id < before);
        -- The bucket must drain until holders, those ahead (who drain with it) and we fit.
        free := l."limit" - l.held - ahead - occupy;
        IF unknown OR (l.slot_decay_per_second = 0 AND pggcl._level(l, at) > free) THEN
            RETURN pggcl._seconds_until(next_at, at);
        ELSIF pggcl._level(l, at) > free THEN
            wait := greatest(wait, (pggcl._level(l, at) - free) / l.slot_decay_per_second);
        END IF;
    END LOOP;
    RETURN wait;
END
$$;

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

CREATE FUNCTION pggcl.acquire(names text[], occupy integer DEFAULT 1, mode text DEFAULT 'concurrency',
                              strict boolean DEFAULT false, ttl_seconds double precision DEFAULT NULL,
                              holder text DEFAULT NULL, session_id integer DEFAULT NULL,
                              wait boolean DEFAULT true, request_id uuid DEFAULT NULL,
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
BEGIN
    -- 1. Input (GC003 names the parameter that is wrong).
    wanted := pggcl._checked_request(names, occupy, mode, ttl_seconds);
    IF length(holder) > 1000 THEN  -- (the holder bound: _holder_bound)
        PERFORM pggcl._check_holder(holder);
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

    -- 6. No room: reclaim what died here, serve those queued ahead of us, and look again. A
    -- request that will queue behind others on every limit skips this: it cannot pass them,
    -- and they keep the queue moving (each release grants; their heartbeats reclaim). This
    -- keeps the limit rows locked for a few statements while many workers queue and release.
    IF NOT fits AND NOT (wait AND behind_others) THEN
        next_at := pggcl._reap(ids, at);
        PERFORM pggcl._grant(ids, at);
        fits := pggcl._fits_now(ids, occupy, at);
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
    retry_after := pggcl._retry_after(ids, occupy, NULL, at, next_at);
    IF wait THEN
        lease_id := CASE WHEN mode = 'concurrency' THEN coalesce(request_id, gen_random_uuid()) END;
        waiter_id := pggcl._enqueue(ids, occupy, mode, coalesce(lease_id, request_id, gen_random_uuid()),
                                    session_id, holder, ttl_seconds, at);
    ELSE
        UPDATE pggcl.limit_state l SET denied = l.denied + 1
        WHERE l.id = ANY(active_ids)
          AND (l.queued > 0 OR NOT pggcl._fits(true, l."limit", l.held, l.level, l.slot_decay_per_second,
                                               l.level_at, occupy, at));
    END IF;
END
$$;

CREATE FUNCTION pggcl.try_acquire(names text[], occupy integer DEFAULT 1, mode text DEFAULT 'concurrency',
                                  strict boolean DEFAULT false, ttl_seconds double precision DEFAULT NULL,
                                  holder text DEFAULT NULL, session_id integer DEFAULT NULL,
                                  OUT granted boolean, OUT lease_id uuid, OUT retry_after double precision)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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

CREATE OR REPLACE FUNCTION pggcl.explain(waiter_id bigint, max_holders integer DEFAULT NULL)
RETURNS TABLE (name text, blocking boolean, "position" integer, occupy integer,
               mode text, "limit" integer, active boolean, held_slots integer,
               active_slots double precision, leases integer, holders jsonb,
               seconds_until_room double precision, since timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    at timestamptz := clock_timestamp();
    wanted bigint := explain.waiter_id;
    shown integer := explain.max_holders;
BEGIN
    IF shown < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'max_holders', MESSAGE = format(
            'invalid max_holders: %s; it must be 0 or more (NULL: every holder)', shown);
    END IF;
    RETURN QUERY
    -- The sessions whose connection is gone, read once (pg_locks, as the views read it).
    WITH dead AS MATERIALIZED (SELECT d.id, d.expired FROM pggcl._sessions_seen d WHERE NOT d.alive)
    SELECT l.name,
           l.active AND (a.ahead > 0 OR NOT pggcl._fits(l.active, l."limit", h.held, l.level,
                                                       l.slot_decay_per_second, l.level_at,
                                                       w.occupy, at)),
           a.ahead + 1, w.occupy, w.mode, l."limit", l.active, h.held,
           h.held + pggcl._decayed(l.level, l.slot_decay_per_second, l.level_at, at),
           h.leases, h.holders,
           CASE WHEN w.mode = 'rate_limit'
                THEN pggcl._retry_after(ARRAY[l.id], w.occupy, w.id, at, NULL) END,
           w.enqueued_at
    FROM pggcl.waiters w
         JOIN pggcl.limit_state l ON l.id = w.limit_id,
         -- Live requests queued ahead of it here (those pggcl.queue shows): a dead session's
         -- waiter is never served, and blocks nobody.
         LATERAL (SELECT count(*)::integer AS ahead
                  FROM pggcl.waiters q
                  WHERE q.limit_id = l.id AND q.id > l.queue_from AND q.id < w.id
                    AND q.session_id NOT IN (SELECT d.id FROM dead d)) a,
         -- Who holds slots here (those pggcl.holders shows: not the leases of sessions dead
         -- past their grace), oldest first; `holders` lists at most max_holders of them.
         LATERAL (SELECT coalesce(sum(x.occupy), 0)::integer AS held,
                         (count(*) FILTER (WHERE x.occupy > 0))::integer AS leases,
                         coalesce(jsonb_agg(jsonb_build_object(
                                      'holder', x.holder, 'slots', x.occupy,
                                      'since', x.acquired_at, 'expires', x.expires_at)
                                  ORDER BY x.n)
                                  FILTER (WHERE x.occupy > 0 AND (shown IS NULL OR x.n <= shown)),
                                  '[]'::jsonb) AS holders
                  FROM (SELECT le.occupy, le.holder, le.acquired_at, le.expires_at,
                               row_number() OVER (ORDER BY le.occupy = 0, le.acquired_at, le.id) AS n
                        FROM pggcl.leases le
                        WHERE le.limit_id = l.id
                          AND (le.session_id IS NULL
                               OR (le.session_id NOT IN (SELECT d.id FROM dead d WHERE d.expired)
                                   AND le.session_id IN (SELECT x.id FROM pggcl.sessions x)))) x) h
    WHERE w.id = wanted
    ORDER BY l.name;
END
$$;

UPDATE pggcl.limit_state l
SET queue_from = least(l.queue_from, (SELECT min(w.id) - 1 FROM pggcl.waiters w WHERE w.limit_id = l.id))
WHERE EXISTS (SELECT FROM pggcl.waiters w WHERE w.limit_id = l.id);
DROP INDEX pggcl.waiters_serve_idx;
ALTER TABLE pggcl.waiters DROP COLUMN serve_key;
ALTER TABLE pggcl.waiters DROP COLUMN priority;
ALTER TABLE pggcl.limit_state DROP COLUMN queue_from_key;

CREATE VIEW pggcl.queue AS
SELECT w.id AS waiter_id, l.name,
       row_number() OVER (PARTITION BY w.limit_id ORDER BY w.id)::integer AS position,
       w.occupy, w.mode, w.holder, w.session_id, w.enqueued_at AS since
FROM pggcl.waiters w JOIN pggcl.limit_state l ON l.id = w.limit_id
     JOIN pggcl._sessions_seen v ON v.id = w.session_id AND v.alive;
COMMENT ON VIEW pggcl.queue IS 'Queued requests per limit, in the order they will be served';

DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'pggcl.take(text, integer, integer, text, uuid)',
        'pggcl.acquire(text[], integer, text, boolean, double precision, text, integer, boolean, uuid)',
        'pggcl.try_acquire(text[], integer, text, boolean, double precision, text, integer)',
        'pggcl.recheck(bigint, uuid)',
        'pggcl.cancel(bigint, uuid)',
        'pggcl.release(uuid)',
        'pggcl.renew(uuid, double precision)'
    ]::regprocedure[] LOOP
        EXECUTE format('ALTER FUNCTION %s SET plan_cache_mode = force_generic_plan '
                       'SET enable_seqscan = off SET jit = off', f);
    END LOOP;
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pggcl FROM PUBLIC;
GRANT SELECT ON pggcl.queue TO pggcl_user;
GRANT EXECUTE ON FUNCTION
    pggcl.try_acquire(text[], integer, text, boolean, double precision, text, integer),
    pggcl.acquire(text[], integer, text, boolean, double precision, text, integer, boolean, uuid)
TO pggcl_user;

DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure
        FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
        WHERE p.pronamespace = 'pggcl'::regnamespace AND l.lanname = 'plpgsql'
          AND NOT coalesce(p.proconfig, '{}') @> ARRAY['search_path=pg_catalog, pg_temp']
        ORDER BY 1
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END
$$;

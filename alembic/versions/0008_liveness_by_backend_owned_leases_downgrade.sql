-- Revision 0008, downgrade to 0007: the functions and views of 0007, without the columns,
-- the table and the helpers 0008 added. (TTL leases lose their owner, sessions their
-- backend_start; first sightings by readers are forgotten.)

-- Whether each session is alive now, read without a probe (private: the views below read it
-- as their owner). A session is alive while its backend holds its session-level advisory lock
-- (1885824867, id): pg_locks shows that to every role, and reading it takes no lock (a probe,
-- pg_try_advisory_xact_lock, would hold the dead session's lock until the reader's transaction
-- ended). `expired`: dead and past its grace (as far as is known: a death not yet seen by a
-- reclaim has no dead_since, and counts as expired only when its grace is 0), or reclaimed.
CREATE OR REPLACE VIEW pggcl._sessions_seen AS
SELECT s.id,
       a.alive,
       s.reclaimed OR (NOT a.alive AND (s.grace_seconds = 0
           OR coalesce(s.dead_since + make_interval(secs => s.grace_seconds) <= clock_timestamp(), false)))
           AS expired
FROM pggcl.sessions s,
     LATERAL (SELECT NOT s.reclaimed AND (s.id::oid, s.backend_pid) IN (
                  SELECT k.objid, k.pid FROM pg_catalog.pg_locks k
                  WHERE k.locktype = 'advisory' AND k.classid = 1885824867::oid AND k.objsubid = 2
                    AND k.granted
                    AND k.database = (SELECT d.oid FROM pg_catalog.pg_database d
                                      WHERE d.datname = pg_catalog.current_database())) AS alive) a;

-- Whether a session found dead (its connection gone: _session_alive said so) is past its grace
-- and may lose what it waits for. The first time it is seen dead its grace starts (dead_since),
-- so a client cut off by a restart has the whole grace to come back, counted from when the
-- server could see it gone.
CREATE OR REPLACE FUNCTION pggcl._dead_past_grace(session_id integer, at timestamptz) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    s pggcl.sessions;
BEGIN
    SELECT * INTO s FROM pggcl.sessions x WHERE x.id = session_id;
    IF NOT FOUND OR s.reclaimed THEN
        RETURN true;
    ELSIF s.dead_since IS NULL THEN
        UPDATE pggcl.sessions x SET dead_since = at WHERE x.id = s.id;
        RETURN s.grace_seconds <= 0;
    END IF;
    RETURN s.dead_since + make_interval(secs => s.grace_seconds) <= at;
END
$$;

-- Give slots to a request: the lease rows (concurrency mode) or the bucket level (rate-limit
-- mode). Slots are taken on the active limits only. The caller has checked room and holds the
-- locks.
CREATE OR REPLACE FUNCTION pggcl._take(ids bigint[], active_ids bigint[], occupy integer, mode text,
                            lease_id uuid, session_id integer, holder text,
                            ttl_seconds double precision, at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF mode = 'concurrency' THEN
        INSERT INTO pggcl.leases (id, limit_id, occupy, session_id, holder, acquired_at, expires_at)
        SELECT lease_id, x, CASE WHEN x = ANY(active_ids) THEN occupy ELSE 0 END, session_id, holder,
               at, at + make_interval(secs => ttl_seconds)
        FROM unnest(ids) x;
        IF cardinality(active_ids) > 0 THEN
            UPDATE pggcl.limit_state SET held = held + occupy WHERE id = ANY(active_ids);
        END IF;
    ELSIF cardinality(active_ids) > 0 THEN
        UPDATE pggcl.limit_state l
        SET level = pggcl._decayed(l.level, l.slot_decay_per_second, l.level_at, at) + occupy, level_at = at
        WHERE l.id = ANY(active_ids);
    END IF;
END
$$;

-- Drop what a session holds and waits for on the locked limits `ids` (a dead, reclaimed or
-- orphaned session, or one being closed), and forget a reclaimed session once nothing of it
-- is left. Its claims on other limits go when those limits are reaped in turn.
CREATE OR REPLACE FUNCTION pggcl._drop_session_claims(dead_session integer, ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    dequeued bigint[];
BEGIN
    PERFORM pggcl._drop_leases(ids, dead_session, NULL);

    WITH gone AS (
        DELETE FROM pggcl.waiters WHERE session_id = dead_session AND limit_id = ANY(ids)
        RETURNING limit_id
    )
    SELECT array_agg(limit_id) INTO dequeued FROM gone;
    PERFORM pggcl._dequeued(dequeued);

    DELETE FROM pggcl.sessions s
    WHERE s.id = dead_session AND s.reclaimed
      AND NOT EXISTS (SELECT FROM pggcl.leases WHERE session_id = dead_session)
      AND NOT EXISTS (SELECT FROM pggcl.waiters WHERE session_id = dead_session);
END
$$;

-- Reclaim what is dead on the locked limits `ids`: leases whose TTL passed, and the leases and
-- waiters of sessions whose connection has been gone for longer than their grace period.
-- Returns the next moment something here may expire (a TTL, the end of a grace), or NULL.
CREATE OR REPLACE FUNCTION pggcl._reap(ids bigint[], at timestamptz) RETURNS timestamptz
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    next_at timestamptz;
    owner record;
    alive boolean;
    s pggcl.sessions;
    dead_since timestamptz;
BEGIN
    PERFORM pggcl._drop_leases(ids, NULL, at);

    SELECT min(expires_at) INTO next_at FROM pggcl.leases WHERE limit_id = ANY(ids);

    FOR owner IN SELECT c.session_id FROM pggcl._claimants(ids) c LOOP
        -- Probe first: a live session costs no write. A dead one's advisory lock is now ours
        -- until commit, so resume_session cannot take it meanwhile: a session is either resumed
        -- or reclaimed, never both.
        alive := pggcl._session_alive(owner.session_id);
        SELECT * INTO s FROM pggcl.sessions WHERE id = owner.session_id;
        IF NOT FOUND OR s.reclaimed THEN
            PERFORM pggcl._drop_session_claims(owner.session_id, ids);
        ELSIF alive THEN
            IF s.dead_since IS NOT NULL THEN
                UPDATE pggcl.sessions SET dead_since = NULL WHERE id = s.id;
            END IF;
        ELSE
            dead_since := coalesce(s.dead_since, at);
            IF s.dead_since IS NULL THEN
                UPDATE pggcl.sessions SET dead_since = at WHERE id = s.id;
            END IF;
            IF dead_since + make_interval(secs => s.grace_seconds) <= at THEN
                UPDATE pggcl.sessions SET reclaimed = true WHERE id = s.id;
                PERFORM pggcl._drop_session_claims(s.id, ids);
            ELSE
                next_at := least(next_at, dead_since + make_interval(secs => s.grace_seconds));
            END IF;
        END IF;
    END LOOP;
    RETURN next_at;
END
$$;

-- Register this connection as a session (or return the one it already has). The connection
-- holds the session's advisory lock from now until it closes; `grace_seconds` is how long its
-- leases survive a lost connection, to let a client reconnect and resume_session: 0 to
-- 315360000 seconds (10 years), else GC003.
CREATE OR REPLACE FUNCTION pggcl.open_session(grace_seconds double precision DEFAULT 5)
RETURNS TABLE (session_id integer, token uuid, channel text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s pggcl.sessions;
BEGIN
    IF NOT (open_session.grace_seconds >= 0 AND open_session.grace_seconds < 'Infinity') THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'grace_seconds', MESSAGE = format(
            'invalid grace_seconds: %s; it must be a finite number of seconds, 0 or more', open_session.grace_seconds);
    ELSIF open_session.grace_seconds > 315360000 THEN  -- the bound of every duration (10_internals.sql)
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'grace_seconds', MESSAGE = format(
            'invalid grace_seconds: %s; it must be at most 315360000 seconds (10 years)', open_session.grace_seconds);
    END IF;
    SELECT * INTO s FROM pggcl.sessions x WHERE x.id = pggcl._connection_session() AND NOT x.reclaimed;
    IF NOT FOUND THEN
        INSERT INTO pggcl.sessions (backend_pid, grace_seconds, owner_role)
        VALUES (pg_backend_pid(), open_session.grace_seconds, session_user) RETURNING * INTO s;
        -- The channel's name is a secret: 'pggcl_<id>_<32 hex digits>' (at most 49 bytes).
        s.channel := 'pggcl_' || s.id || '_' || replace(gen_random_uuid()::text, '-', '');
        UPDATE pggcl.sessions x SET channel = s.channel WHERE x.id = s.id;
        IF NOT pg_try_advisory_lock(pggcl._lock_space(), s.id) THEN
            RAISE EXCEPTION USING ERRCODE = 'GC008', MESSAGE = format(
                'session id %s is locked by another connection; try again', s.id);
        END IF;
        PERFORM set_config('pggcl.session_id', s.id::text, false);
        PERFORM set_config('pggcl.session_key', s.token::text, false);
        -- Forget a few sessions that died holding nothing: no reclaim would ever visit them.
        DELETE FROM pggcl.sessions x
        WHERE x.id IN (SELECT y.id FROM pggcl.sessions y
                       WHERE y.id <> s.id
                         AND NOT EXISTS (SELECT FROM pggcl.leases l WHERE l.session_id = y.id)
                         AND NOT EXISTS (SELECT FROM pggcl.waiters w WHERE w.session_id = y.id)
                       ORDER BY y.created LIMIT 10)
          AND NOT pggcl._session_alive(x.id);
    END IF;
    RETURN QUERY SELECT s.id, s.token, coalesce(s.channel, 'pggcl_' || s.id);
END
$$;

-- Take a session back on a new connection after the old one was lost. True when it is yours
-- again with everything it held; false when it was already reclaimed (its leases are gone).
-- Raises GC008 while the old connection still holds it (try again shortly), GC007 on a wrong token.
CREATE OR REPLACE FUNCTION pggcl.resume_session(session_id integer, token uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s pggcl.sessions;
    mine integer := pggcl._connection_session();
BEGIN
    SELECT * INTO s FROM pggcl.sessions x WHERE x.id = resume_session.session_id FOR NO KEY UPDATE;
    IF NOT FOUND OR s.reclaimed THEN
        RETURN false;
    ELSIF s.token IS DISTINCT FROM resume_session.token THEN
        RAISE EXCEPTION USING ERRCODE = 'GC007', MESSAGE = format('wrong token for session %s', s.id);
    ELSIF mine = s.id THEN
        RETURN true;
    ELSIF mine IS NOT NULL AND EXISTS (SELECT FROM pggcl.sessions x WHERE x.id = mine) THEN
        RAISE EXCEPTION USING ERRCODE = 'GC007', MESSAGE = format(
            'this connection already has session %s; close it before resuming session %s', mine, s.id);
    ELSIF NOT pg_try_advisory_lock(pggcl._lock_space(), s.id) THEN
        RAISE EXCEPTION USING ERRCODE = 'GC008', MESSAGE = format(
            'session %s is still held by another connection; try again once it is gone', s.id);
    END IF;
    UPDATE pggcl.sessions x SET dead_since = NULL, backend_pid = pg_backend_pid() WHERE x.id = s.id;
    PERFORM set_config('pggcl.session_id', s.id::text, false);
    PERFORM set_config('pggcl.session_key', s.token::text, false);
    RETURN true;
END
$$;

-- End a session: release its leases, drop its waiters (serving whoever they blocked), forget it.
-- With no arguments, the session of this connection. Another connection must give the token.
CREATE OR REPLACE FUNCTION pggcl.close_session(session_id integer DEFAULT NULL, token uuid DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at timestamptz := clock_timestamp();
    mine integer := pggcl._connection_session();
    target integer := coalesce(close_session.session_id, mine);
    s pggcl.sessions;
    ids bigint[];
BEGIN
    SELECT * INTO s FROM pggcl.sessions x WHERE x.id = target;
    IF NOT FOUND THEN
        RETURN false;
    ELSIF target IS DISTINCT FROM mine AND s.token IS DISTINCT FROM close_session.token THEN
        RAISE EXCEPTION USING ERRCODE = 'GC007', MESSAGE = format('wrong token for session %s', s.id);
    END IF;
    ids := pggcl._lock(array(
        SELECT limit_id FROM pggcl.leases WHERE leases.session_id = target
        UNION SELECT limit_id FROM pggcl.waiters WHERE waiters.session_id = target));
    PERFORM pggcl._drop_session_claims(target, ids);
    PERFORM pggcl._grant(ids, at);
    DELETE FROM pggcl.sessions x WHERE x.id = target;
    IF target = mine THEN
        PERFORM pg_advisory_unlock(pggcl._lock_space(), target);
        PERFORM set_config('pggcl.session_id', '', false);
        PERFORM set_config('pggcl.session_key', '', false);
    END IF;
    RETURN true;
END
$$;

-- The safety net of a waiting client, meant to run every few seconds while it has waiters:
-- reclaims what died on the limits this session waits for and serves whoever that lets in.
-- Returns seconds until the next known expiry there (call again by then), or NULL.
-- Raises GC007 when the session no longer exists (it was closed or reclaimed).
CREATE OR REPLACE FUNCTION pggcl.heartbeat(session_id integer) RETURNS double precision
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pggcl._require_session(heartbeat.session_id);
    RETURN pggcl._reclaim(array(SELECT DISTINCT limit_id FROM pggcl.waiters w
                                WHERE w.session_id = heartbeat.session_id));
END
$$;

-- The same on every limit that anyone holds or waits for: for deployments that want dead
-- holders reclaimed even while nobody waits, e.g. every few seconds from pg_cron:
--     SELECT cron.schedule('pggcl-reclaim', '5 seconds', 'SELECT pggcl.reclaim()');
-- Nothing needs it for correctness. Returns seconds until the next known expiry, or NULL.
CREATE OR REPLACE FUNCTION pggcl.reclaim() RETURNS double precision
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN pggcl._reclaim(array(SELECT limit_id FROM pggcl.leases
                                UNION SELECT limit_id FROM pggcl.waiters));
END
$$;

-- The usual acquire, shared by pggcl.acquire and pggcl.take: one name, concurrency mode, room
-- and nobody queued. One conditional UPDATE locks the limit row and re-checks the condition on
-- its latest version; then the lease row. False (and nothing changed) when it does not apply.
CREATE OR REPLACE FUNCTION pggcl._take_one(name text, occupy integer, session_id integer, holder text,
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
       OR EXISTS (SELECT FROM pggcl.sessions x WHERE x.id = _take_one.session_id AND NOT x.reclaimed
                  AND coalesce(x.owner_role = session_user, true));
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
CREATE OR REPLACE FUNCTION pggcl.take(name text, occupy integer, session_id integer, holder text, request_id uuid)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF occupy IS NULL OR occupy < 1 OR occupy > 1000000000 OR session_id IS NULL OR request_id IS NULL THEN
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
CREATE OR REPLACE FUNCTION pggcl.acquire(names text[], occupy integer DEFAULT 1, mode text DEFAULT 'concurrency',
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

    -- 8. Refused: say when to look again, and queue when asked to. (A rate-limit waiter has no
    -- lease; its row keeps the request id, so that cancel can find it by that.)
    retry_after := pggcl._retry_after(ids, occupy, NULL, at, next_at);
    IF wait THEN
        lease_id := CASE WHEN mode = 'concurrency' THEN coalesce(request_id, gen_random_uuid()) END;
        waiter_id := pggcl._enqueue(ids, occupy, mode, coalesce(lease_id, request_id, gen_random_uuid()),
                                    session_id, holder, ttl_seconds, at);
    END IF;
END
$$;

-- Where a waiter stands: 'granted', 'queued', 'rejected' (can never be granted) or 'gone'
-- (cancelled, reclaimed, or a rate-limit grant already delivered). Also serves whoever can be
-- served on its limits, so it is what a client calls on an 'r:' notification or at retry_after.
CREATE OR REPLACE FUNCTION pggcl.recheck(waiter_id bigint, lease_id uuid DEFAULT NULL)
RETURNS TABLE (status text, retry_after double precision)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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

-- Give back a lease's slots and serve the queue. False when the lease is not held (already
-- released, or reclaimed) or is another role's (only managers release any lease), and then
-- nothing changes.
CREATE OR REPLACE FUNCTION pggcl.release(lease_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at timestamptz := clock_timestamp();
    freed_limits bigint[];
    freed_slots integer[];
    lim pggcl.limit_state;
BEGIN
    -- The lease rows go first; everyone who deletes lease rows under a limit lock skips rows
    -- that are locked, so taking the limit locks afterwards cannot deadlock.
    WITH gone AS (
        DELETE FROM pggcl.leases x WHERE x.id = release.lease_id AND pggcl._may_act_for(x.session_id)
        RETURNING x.limit_id, x.occupy
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

-- Extend a lease to end ttl_seconds from now. False when the lease is not held, or is another
-- role's (as release).
CREATE OR REPLACE FUNCTION pggcl.renew(lease_id uuid, ttl_seconds double precision) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF renew.ttl_seconds IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'ttl_seconds',
            MESSAGE = 'invalid ttl_seconds: it is required';
    END IF;
    PERFORM pggcl._check_seconds('ttl_seconds', renew.ttl_seconds);
    UPDATE pggcl.leases x SET expires_at = clock_timestamp() + make_interval(secs => renew.ttl_seconds)
    WHERE x.id = renew.lease_id AND pggcl._may_act_for(x.session_id);
    RETURN FOUND;
END
$$;

DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'pggcl.take(text, integer, integer, text, uuid)',
        'pggcl.acquire(text[], integer, text, boolean, double precision, text, integer, boolean, uuid)',
        'pggcl.recheck(bigint, uuid)',
        'pggcl.release(uuid)',
        'pggcl.renew(uuid, double precision)'
    ]::regprocedure[] LOOP
        EXECUTE format('ALTER FUNCTION %s SET plan_cache_mode = force_generic_plan '
                       'SET enable_seqscan = off SET jit = off', f);
    END LOOP;
END
$$;

DROP FUNCTION pggcl._dead_since(integer);
DROP FUNCTION pggcl._mark_squatted(bigint[], timestamptz);
DROP FUNCTION pggcl._first_seen_dead(integer, integer);
DROP FUNCTION pggcl._held_by_its_backend(integer);
DROP FUNCTION pggcl._same_backend(integer, timestamptz);
DROP FUNCTION pggcl._may_act_on(integer, name);
DROP FUNCTION pggcl._check_holder(text);
DROP FUNCTION pggcl._holder_bound();

DROP TABLE pggcl.sightings;
ALTER TABLE pggcl.leases DROP COLUMN owner_role;
ALTER TABLE pggcl.sessions DROP COLUMN backend_start;

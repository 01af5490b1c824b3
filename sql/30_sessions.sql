-- Sessions: how a client connection registers itself, so that its leases and waiters die with
-- it and so that it can be told, by NOTIFY on its channel, when a queued request is granted.
--
-- Protocol for a waiting client (psql included):
--   SELECT * FROM pggcl.open_session();         -- session_id, token, channel
--   LISTEN "pggcl_<session_id>_<secret>";        -- the channel returned above
--   SELECT pggcl.take('db', 1, <id>, 'me', <a fresh uuid>);   -- optional, the cheap try:
--       true: go, the lease id is that uuid. Otherwise (or instead):
--   SELECT * FROM pggcl.acquire('{db}', 1, session_id => <id>);
--       granted: go. Otherwise a waiter_id: sleep until a notification on the channel
--       'g:<waiter_id>'  granted: the lease id is the one acquire returned
--       'r:<waiter_id>'  re-check: call pggcl.recheck(waiter_id, lease_id)
--       'e:<waiter_id>:<why>'  can never be granted (the limit was lowered); it is dequeued
--   When retry_after is not NULL, call pggcl.recheck at that time (rate limits, TTL expiry).
--   SELECT pggcl.cancel(waiter_id, lease_id);    -- to give up waiting
--   SELECT pggcl.release(lease_id);              -- when done (concurrency mode)
-- A client that waits should call pggcl.heartbeat(session_id) every few seconds: it reclaims
-- the slots of holders that died, which no notification can announce. When everyone there is
-- alive it only reads: it takes no limit lock and holds up no release.

-- Register this connection as a session (or return the one it already has). The connection
-- holds the session's advisory lock from now until it closes; `grace_seconds` is how long its
-- leases survive a lost connection, to let a client reconnect and resume_session: 0 to
-- 315360000 seconds (10 years), else GC003.
-- Session ids come from a sequence, and advisory locks are open to every role: an id whose lock
-- someone else holds (an outsider may take many) is skipped, and the next one tried; GC008 only
-- after 100000 ids in a row were taken (the shared lock table holds far fewer locks than that
-- by default: max_locks_per_transaction * max_connections).
CREATE FUNCTION pggcl.open_session(grace_seconds double precision DEFAULT 5)
RETURNS TABLE (session_id integer, token uuid, channel text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s pggcl.sessions;
    new_id integer;
    tries integer := 0;
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
        LOOP
            new_id := nextval('pggcl.session_id_seq');
            -- (An id still in use after the sequence cycled is skipped too.)
            EXIT WHEN NOT EXISTS (SELECT FROM pggcl.sessions x WHERE x.id = new_id)
                  AND pg_try_advisory_lock(pggcl._lock_space(), new_id);
            tries := tries + 1;
            IF tries >= 100000 THEN
                RAISE EXCEPTION USING ERRCODE = 'GC008', MESSAGE = format(
                    'session ids up to %s are locked by other connections; try again', new_id);
            END IF;
        END LOOP;
        INSERT INTO pggcl.sessions (id, backend_pid, grace_seconds, owner_role, backend_start)
        VALUES (new_id, pg_backend_pid(), open_session.grace_seconds, session_user,
                (SELECT a.backend_start FROM pg_stat_get_activity(pg_backend_pid()) a))
        RETURNING * INTO s;
        DELETE FROM pggcl.sightings x WHERE x.session_id = s.id;  -- of an earlier session s.id
        -- The channel's name is a secret: 'pggcl_<id>_<32 hex digits>' (at most 49 bytes).
        s.channel := 'pggcl_' || s.id || '_' || replace(gen_random_uuid()::text, '-', '');
        UPDATE pggcl.sessions x SET channel = s.channel WHERE x.id = s.id;
        PERFORM set_config('pggcl.session_id', s.id::text, false);
        PERFORM set_config('pggcl.session_key', s.token::text, false);
        -- Forget a few sessions that died holding nothing: no reclaim would ever visit them.
        WITH gone AS (
            DELETE FROM pggcl.sessions x
            WHERE x.id IN (SELECT y.id FROM pggcl.sessions y
                           WHERE y.id <> s.id
                             AND NOT EXISTS (SELECT FROM pggcl.leases l WHERE l.session_id = y.id)
                             AND NOT EXISTS (SELECT FROM pggcl.waiters w WHERE w.session_id = y.id)
                           ORDER BY y.created LIMIT 10)
              AND NOT pggcl._session_alive(x.id)
            RETURNING x.id
        )
        DELETE FROM pggcl.sightings x WHERE x.session_id IN (SELECT gone.id FROM gone);
    END IF;
    RETURN QUERY SELECT s.id, s.token, coalesce(s.channel, 'pggcl_' || s.id);
END
$$;

-- Take a session back on a new connection after the old one was lost. True when it is yours
-- again with everything it held; false when it was already reclaimed (its leases are gone).
-- Raises GC008 while the old connection still holds it (try again shortly; also while someone
-- else holds its lock after the connection was lost: the session is then reclaimed after its
-- grace, and resuming answers false), GC007 on a wrong token or when the session was opened by
-- another role (managers included: a session acts for the role that opened it).
CREATE FUNCTION pggcl.resume_session(session_id integer, token uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s pggcl.sessions;
    mine integer := pggcl._connection_session();
BEGIN
    SELECT * INTO s FROM pggcl.sessions x WHERE x.id = resume_session.session_id FOR NO KEY UPDATE;
    IF NOT FOUND OR s.reclaimed THEN
        RETURN false;
    ELSIF s.owner_role IS DISTINCT FROM session_user AND s.owner_role IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'GC007', MESSAGE = format(
            'session %s was opened by another role: only that role may resume it', s.id);
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
    UPDATE pggcl.sessions x
    SET dead_since = NULL, backend_pid = pg_backend_pid(),
        backend_start = (SELECT a.backend_start FROM pg_stat_get_activity(pg_backend_pid()) a)
    WHERE x.id = s.id;
    DELETE FROM pggcl.sightings x WHERE x.session_id = s.id;
    PERFORM set_config('pggcl.session_id', s.id::text, false);
    PERFORM set_config('pggcl.session_key', s.token::text, false);
    RETURN true;
END
$$;

-- End a session: release its leases, drop its waiters (serving whoever they blocked), forget it.
-- With no arguments, the session of this connection. Another connection must give the token.
CREATE FUNCTION pggcl.close_session(session_id integer DEFAULT NULL, token uuid DEFAULT NULL)
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
    PERFORM pggcl._drop_session_claims(target, ids, at, false);
    PERFORM pggcl._grant(ids, at);
    DELETE FROM pggcl.sessions x WHERE x.id = target;
    DELETE FROM pggcl.sightings x WHERE x.session_id = target;
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
-- About one heartbeat in every `queued` on its limits (chosen at random) also looks for dead
-- sessions whose lock someone else took (_mark_squatted, a read of pg_locks): so that read runs
-- about once per heartbeat interval per limit, however many wait there.
CREATE FUNCTION pggcl.heartbeat(session_id integer) RETURNS double precision
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[];
BEGIN
    PERFORM pggcl._require_session(heartbeat.session_id);
    ids := array(SELECT DISTINCT limit_id FROM pggcl.waiters w WHERE w.session_id = heartbeat.session_id);
    IF random() * (SELECT greatest(1, sum(l.queued)) FROM pggcl.limit_state l WHERE l.id = ANY(ids)) < 1 THEN
        PERFORM pggcl._mark_squatted(ids, clock_timestamp());
    END IF;
    RETURN pggcl._reclaim(ids);
END
$$;

-- The same on every limit that anyone holds or waits for: for deployments that want dead
-- holders reclaimed even while nobody waits, e.g. every few seconds from pg_cron:
--     SELECT cron.schedule('pggcl-reclaim', '5 seconds', 'SELECT pggcl.reclaim()');
-- Nothing needs it for correctness. Returns seconds until the next known expiry, or NULL.
-- Every call also looks for dead sessions whose lock someone else took (_mark_squatted).
CREATE FUNCTION pggcl.reclaim() RETURNS double precision
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[] := array(SELECT limit_id FROM pggcl.leases UNION SELECT limit_id FROM pggcl.waiters);
    next_at double precision;
BEGIN
    PERFORM pggcl._mark_squatted(ids, clock_timestamp());
    next_at := pggcl._reclaim(ids);
    -- And a few idle template instances of each template go (25_templates.sql).
    PERFORM pggcl._sweep_instances(t.id, '{}', 64, clock_timestamp()) FROM pggcl.limit_templates t;
    RETURN next_at;
END
$$;

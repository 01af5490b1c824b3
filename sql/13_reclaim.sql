-- Internal: reclaiming what died. Leases whose TTL passed, and the leases and waiters of
-- sessions whose connection has been gone for longer than their grace period, are dropped on
-- the limits a call has locked; no janitor process is needed.

-- The sessions with a claim on the limits `ids`: a lease or a queued request there.
CREATE FUNCTION pggcl._claimants(ids bigint[]) RETURNS TABLE (session_id integer)
LANGUAGE sql STABLE AS $$
    SELECT x.session_id FROM pggcl.leases x
    WHERE x.limit_id OPERATOR(pg_catalog.=) ANY(ids) AND x.session_id IS NOT NULL
    UNION
    SELECT w.session_id FROM pggcl.waiters w WHERE w.limit_id OPERATOR(pg_catalog.=) ANY(ids)
$$;

-- Reclaim what is dead on the locked limits `ids`: leases whose TTL passed, and the leases and
-- waiters of sessions whose connection has been gone for longer than their grace period.
-- Returns the next moment something here may expire (a TTL, the end of a grace), or NULL.
-- A session already seen dead whose lock is held again was either resumed or had its lock taken
-- by someone else (see _held_by_its_backend): only its own backend keeps it alive. The writes
-- to a session judged dead name the backend it was judged by, so that a resume committed
-- meanwhile (a new backend_pid) is left alone.
CREATE FUNCTION pggcl._reap(ids bigint[], at timestamptz) RETURNS timestamptz
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    next_at timestamptz;
    owner record;
    alive boolean;
    s pggcl.sessions;
    since timestamptz;
BEGIN
    PERFORM pggcl._drop_leases(ids, NULL, at, at, true);

    SELECT min(expires_at) INTO next_at FROM pggcl.leases WHERE limit_id = ANY(ids);

    FOR owner IN SELECT c.session_id FROM pggcl._claimants(ids) c LOOP
        -- Probe first: a live session costs no write. A dead one's advisory lock is now ours
        -- until commit, so resume_session cannot take it meanwhile: a session is either resumed
        -- or reclaimed, never both.
        alive := pggcl._session_alive(owner.session_id);
        SELECT * INTO s FROM pggcl.sessions WHERE id = owner.session_id;
        IF FOUND AND alive AND s.dead_since IS NOT NULL THEN
            alive := pggcl._held_by_its_backend(s.id);
        END IF;
        IF NOT FOUND OR s.reclaimed THEN
            PERFORM pggcl._drop_session_claims(owner.session_id, ids, at, true);
        ELSIF alive THEN
            IF s.dead_since IS NOT NULL THEN
                UPDATE pggcl.sessions SET dead_since = NULL WHERE id = s.id;
            END IF;
        ELSE
            since := least(coalesce(s.dead_since, at), pggcl._first_seen_dead(s.id, s.backend_pid));
            IF s.dead_since IS DISTINCT FROM since THEN
                UPDATE pggcl.sessions SET dead_since = since
                WHERE id = s.id AND backend_pid = s.backend_pid;
            END IF;
            IF since + make_interval(secs => s.grace_seconds) <= at THEN
                UPDATE pggcl.sessions SET reclaimed = true WHERE id = s.id AND backend_pid = s.backend_pid;
                IF FOUND THEN
                    PERFORM pggcl._drop_session_claims(s.id, ids, at, true);
                END IF;
            ELSE
                next_at := least(next_at, since + make_interval(secs => s.grace_seconds));
            END IF;
        END IF;
    END LOOP;
    RETURN next_at;
END
$$;

-- Whether anything on the limits `ids` is there to reclaim: an expired lease, or a claim (lease
-- or waiter) of a session that is gone, reclaimed, or marked dead. Takes no limit lock and
-- writes nothing; a dead session's probe keeps its advisory lock until commit (see _reap).
CREATE FUNCTION pggcl._anything_to_reap(ids bigint[], at timestamptz) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN EXISTS (SELECT FROM pggcl.leases WHERE limit_id = ANY(ids) AND expires_at <= at)
        OR EXISTS (
            SELECT FROM pggcl._claimants(ids) c
            LEFT JOIN pggcl.sessions s ON s.id = c.session_id
            WHERE s.id IS NULL OR s.reclaimed OR s.dead_since IS NOT NULL
               OR NOT pggcl._session_alive(c.session_id));
END
$$;

-- Mark dead the sessions with a claim on the limits `ids` whose lock is held, but not by their
-- own backend (taken by someone else once they died: see _held_by_its_backend), in one read of
-- pg_locks and one of pg_stat_activity (measured: about 0.3 ms together, with 50 connections;
-- both grow with the number of backends). The acquire and grant paths only probe the lock, and
-- _reap checks who holds it only for sessions already marked; heartbeat and reclaim() call
-- this (see there for how often). A session resumed just as it is marked is found alive by that
-- check: the mark is undone at the next reap, and nothing is reclaimed on it.
CREATE FUNCTION pggcl._mark_squatted(ids bigint[], at timestamptz) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    WITH held AS MATERIALIZED (
        SELECT k.objid, k.pid FROM pg_locks k
        WHERE k.locktype = 'advisory' AND k.classid = 1885824867::oid AND k.objsubid = 2 AND k.granted
          AND k.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
    ), started AS MATERIALIZED (
        SELECT a.pid, a.backend_start FROM pg_stat_get_activity(NULL) a WHERE a.backend_start IS NOT NULL
    )
    UPDATE pggcl.sessions s SET dead_since = at
    WHERE s.id IN (SELECT c.session_id FROM pggcl._claimants(ids) c)
      AND s.dead_since IS NULL AND NOT s.reclaimed
      AND s.id::oid IN (SELECT h.objid FROM held h)
      AND ((s.id::oid, s.backend_pid) NOT IN (SELECT h.objid, h.pid FROM held h)
           OR (s.backend_start IS NOT NULL AND s.backend_pid IN (SELECT t.pid FROM started t)
               AND (s.backend_pid, s.backend_start) NOT IN (SELECT t.pid, t.backend_start FROM started t)));
END
$$;

-- Reclaim what died on the given limits and serve whoever that lets in. Returns the seconds
-- until the next known expiry there, or NULL. When everyone there is alive and nothing has
-- expired (the usual heartbeat), no limit is locked, so a heartbeat never holds up a release.
CREATE FUNCTION pggcl._reclaim(ids bigint[]) RETURNS double precision
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    at timestamptz := clock_timestamp();
    next_at timestamptz;
BEGIN
    IF NOT pggcl._anything_to_reap(ids, at) THEN
        RETURN pggcl._seconds_until((SELECT min(expires_at) FROM pggcl.leases WHERE limit_id = ANY(ids)), at);
    END IF;
    ids := pggcl._lock(ids);
    IF cardinality(ids) = 0 THEN
        RETURN NULL;
    END IF;
    next_at := pggcl._reap(ids, at);
    PERFORM pggcl._grant(ids, at);
    RETURN pggcl._seconds_until(next_at, at);
END
$$;

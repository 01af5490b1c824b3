-- Revision 0008, upgrade from 0007. Frozen once released: never edit this file; a change
-- to the engine is a new revision.
-- What 0008 changes (issue #13, and #12 point 4):
-- - Liveness cannot be squatted: an outsider who takes a session's advisory lock
--   (1885824867, id) once its connection is gone no longer keeps it alive. Sessions record
--   backend_start beside backend_pid (pids are reused); reclaim(), and about one heartbeat in
--   every `queued` on its limits, find locks held by another backend in one read of pg_locks
--   and mark the session dead (_mark_squatted), and the reap then checks each session already
--   seen dead (_held_by_its_backend). The acquire and grant paths still only probe.
--   open_session skips ids whose lock someone else holds.
-- - Reading is enough: the views record when they first see a session dead (pggcl.sightings,
--   which locks nothing anyone waits for; nothing in a read-only transaction), so a dead
--   holder's slots leave them once its grace has passed, counted from that first sight.
-- - holder is at most 1000 characters (GC003, COLUMN holder).
-- - A lease without a session (a TTL lease) is the role's that took it (leases.owner_role):
--   only that role or a manager releases or renews it.
-- - recheck raises GC007 for another role's waiter (managers may); resume_session raises
--   GC007 for a session another role opened.
-- Public signatures unchanged.


ALTER TABLE pggcl.sessions ADD COLUMN backend_start timestamptz;
ALTER TABLE pggcl.leases ADD COLUMN owner_role name;

-- When a session was first seen dead by someone who only read (the views: see _dead_since in
-- 20_limits.sql), for the backend it was then registered to. A reader cannot write
-- sessions.dead_since: the row lock would be held until its transaction ends, and reclaims and
-- resume_session would wait for it. Inserting here locks nothing anyone waits for (no unique
-- index: two readers may both insert; the earliest counts). Rows go with their session.
CREATE TABLE pggcl.sightings (
    session_id integer NOT NULL,
    backend_pid integer NOT NULL,
    seen_at timestamptz NOT NULL
);
CREATE INDEX sightings_session_idx ON pggcl.sightings (session_id);
REVOKE ALL ON pggcl.sightings FROM PUBLIC;

-- The longest holder text accepted (see the bounds above).
CREATE FUNCTION pggcl._holder_bound() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 1000 $$;
REVOKE ALL ON FUNCTION pggcl._holder_bound() FROM PUBLIC;

-- Raise GC003 (COLUMN holder) when `holder` is longer than _holder_bound() characters.
CREATE FUNCTION pggcl._check_holder(holder text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF length(holder) > pggcl._holder_bound() THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'holder', MESSAGE = format(
            'invalid holder %L: it is %s characters long, at most %s are allowed',
            left(holder, 40) || '...', length(holder), pggcl._holder_bound());
    END IF;
END
$$;
REVOKE ALL ON FUNCTION pggcl._check_holder(text) FROM PUBLIC;

-- Whether the caller may act on a lease held by `session_id`, or (no session) a TTL lease
-- taken by `owner_role`: its session is the caller's role's, or it is a TTL lease of the
-- caller's role (or taken before revision 0008, without a recorded role), or the caller is a
-- manager.
CREATE FUNCTION pggcl._may_act_on(session_id integer, owner_role name) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (session_id IS NULL AND coalesce(owner_role = session_user, true))
        OR (session_id IS NOT NULL
            AND EXISTS (SELECT FROM pggcl.sessions s WHERE s.id = session_id
                        AND coalesce(s.owner_role = session_user, true)))
        OR pggcl._is_manager();
END
$$;
REVOKE ALL ON FUNCTION pggcl._may_act_on(integer, name) FROM PUBLIC;

-- Whether the backend with this pid is the one that started at `started`: a pid is reused by
-- later backends. Where backend_start cannot be read (pg_stat_activity shows it only to
-- members of the backend's role and of pg_read_all_stats; the schema owner is usually a
-- superuser) or was not recorded (sessions opened before revision 0008), the pid alone counts.
CREATE FUNCTION pggcl._same_backend(pid integer, started timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT started IS NULL
        OR coalesce((SELECT a.backend_start FROM pg_catalog.pg_stat_get_activity(pid) a),
                    started) OPERATOR(pg_catalog.=) started
$$;
REVOKE ALL ON FUNCTION pggcl._same_backend(integer, timestamptz) FROM PUBLIC;

-- Whether the session's advisory lock is held by the backend that registered it. Advisory
-- locks are open to every role, pggcl rights or not, so once a session's connection is gone an
-- outsider may take (1885824867, id): that keeps the try-lock probe (_session_alive) failing,
-- but must not keep the session alive. This reads pg_locks, which copies the whole lock table
-- (measured: about 70-120 us, against 0.2 us for the probe), so it runs only where a probe's
-- "alive" is in doubt: for sessions already seen dead (_reap), in the views, and in one scan
-- for many sessions at once in reclaim() and some heartbeats (_mark_squatted), never on the
-- acquire or grant paths.
CREATE FUNCTION pggcl._held_by_its_backend(session_id integer) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (
        SELECT FROM pggcl.sessions s, pg_locks k
        WHERE s.id = session_id AND NOT s.reclaimed
          AND k.locktype = 'advisory' AND k.classid = 1885824867::oid AND k.objid = s.id::oid
          AND k.objsubid = 2 AND k.granted AND k.pid = s.backend_pid
          AND k.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
          AND pggcl._same_backend(s.backend_pid, s.backend_start));
END
$$;
REVOKE ALL ON FUNCTION pggcl._held_by_its_backend(integer) FROM PUBLIC;

-- When a reader first saw the session dead while it was registered to `backend_pid` (see
-- pggcl.sightings), or NULL.
CREATE FUNCTION pggcl._first_seen_dead(session_id integer, backend_pid integer) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT min(x.seen_at) FROM pggcl.sightings x
            WHERE x.session_id = _first_seen_dead.session_id AND x.backend_pid = _first_seen_dead.backend_pid);
END
$$;
REVOKE ALL ON FUNCTION pggcl._first_seen_dead(integer, integer) FROM PUBLIC;

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
REVOKE ALL ON FUNCTION pggcl._mark_squatted(bigint[], timestamptz) FROM PUBLIC;

-- When a session whose connection is gone was first seen dead: by a reclaim (dead_since) or by
-- a reader of the views (pggcl.sightings), whichever came first. The views call this for the
-- sessions they see dead, so that the slots of a holder dead past its grace drop out of them
-- even when no client acts: reading is enough. A reader that is the first to see a session dead
-- records it (a row of pggcl.sightings, which locks nothing that anyone waits for); in a
-- read-only transaction (on a standby, say) it records nothing and the answer may be NULL
-- (not yet known: the grace has not started). The session must really be dead now (its lock not
-- held by its own backend: see _held_by_its_backend), so calling this directly cannot start a
-- live session's grace. SECURITY DEFINER with a pinned search_path: the views run it as their
-- reader, whoever that is.
CREATE FUNCTION pggcl._dead_since(session_id integer) RETURNS timestamptz
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s pggcl.sessions;
    since timestamptz;
BEGIN
    SELECT * INTO s FROM pggcl.sessions x WHERE x.id = _dead_since.session_id;
    IF NOT FOUND OR s.reclaimed OR pggcl._held_by_its_backend(s.id) THEN
        RETURN NULL;
    END IF;
    since := least(s.dead_since, pggcl._first_seen_dead(s.id, s.backend_pid));
    IF since IS NULL AND current_setting('transaction_read_only') = 'off' THEN
        since := clock_timestamp();
        INSERT INTO pggcl.sightings (session_id, backend_pid, seen_at) VALUES (s.id, s.backend_pid, since);
    END IF;
    RETURN since;
END
$$;
REVOKE ALL ON FUNCTION pggcl._dead_since(integer) FROM PUBLIC;

-- Whether a session found dead (its connection gone: _session_alive said so) is past its grace
-- and may lose what it waits for. The first time it is seen dead its grace starts (dead_since),
-- so a client cut off by a restart has the whole grace to come back, counted from when the
-- server could see it gone (by a reader of the views too: pggcl.sightings).
CREATE OR REPLACE FUNCTION pggcl._dead_past_grace(session_id integer, at timestamptz) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    s pggcl.sessions;
    since timestamptz;
BEGIN
    SELECT * INTO s FROM pggcl.sessions x WHERE x.id = session_id;
    IF NOT FOUND OR s.reclaimed THEN
        RETURN true;
    END IF;
    since := least(coalesce(s.dead_since, at), pggcl._first_seen_dead(s.id, s.backend_pid));
    IF s.dead_since IS DISTINCT FROM since THEN
        UPDATE pggcl.sessions x SET dead_since = since WHERE x.id = s.id;
    END IF;
    RETURN since + make_interval(secs => s.grace_seconds) <= at;
END
$$;

-- Give slots to a request: the lease rows (concurrency mode) or the bucket level (rate-limit
-- mode). Slots are taken on the active limits only. The caller has checked room and holds the
-- locks. A lease without a session is its role's (owner_role).
CREATE OR REPLACE FUNCTION pggcl._take(ids bigint[], active_ids bigint[], occupy integer, mode text,
                            lease_id uuid, session_id integer, holder text,
                            ttl_seconds double precision, at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF mode = 'concurrency' THEN
        INSERT INTO pggcl.leases (id, limit_id, occupy, session_id, holder, acquired_at, expires_at,
                                  owner_role)
        SELECT lease_id, x, CASE WHEN x = ANY(active_ids) THEN occupy ELSE 0 END, session_id, holder,
               at, at + make_interval(secs => ttl_seconds), CASE WHEN session_id IS NULL THEN session_user END
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
    IF FOUND THEN
        DELETE FROM pggcl.sightings x WHERE x.session_id = dead_session;
    END IF;
END
$$;

-- Reclaim what is dead on the locked limits `ids`: leases whose TTL passed, and the leases and
-- waiters of sessions whose connection has been gone for longer than their grace period.
-- Returns the next moment something here may expire (a TTL, the end of a grace), or NULL.
-- A session already seen dead whose lock is held again was either resumed or had its lock taken
-- by someone else (see _held_by_its_backend): only its own backend keeps it alive. The writes
-- to a session judged dead name the backend it was judged by, so that a resume committed
-- meanwhile (a new backend_pid) is left alone.
CREATE OR REPLACE FUNCTION pggcl._reap(ids bigint[], at timestamptz) RETURNS timestamptz
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    next_at timestamptz;
    owner record;
    alive boolean;
    s pggcl.sessions;
    since timestamptz;
BEGIN
    PERFORM pggcl._drop_leases(ids, NULL, at);

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
            PERFORM pggcl._drop_session_claims(owner.session_id, ids);
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
                    PERFORM pggcl._drop_session_claims(s.id, ids);
                END IF;
            ELSE
                next_at := least(next_at, since + make_interval(secs => s.grace_seconds));
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
-- Session ids come from a sequence, and advisory locks are open to every role: an id whose lock
-- someone else holds (an outsider may take many) is skipped, and the next one tried; GC008 only
-- after 100000 ids in a row were taken (the shared lock table holds far fewer locks than that
-- by default: max_locks_per_transaction * max_connections).
CREATE OR REPLACE FUNCTION pggcl.open_session(grace_seconds double precision DEFAULT 5)
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
CREATE OR REPLACE FUNCTION pggcl.resume_session(session_id integer, token uuid) RETURNS boolean
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
CREATE OR REPLACE FUNCTION pggcl.heartbeat(session_id integer) RETURNS double precision
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
CREATE OR REPLACE FUNCTION pggcl.reclaim() RETURNS double precision
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[] := array(SELECT limit_id FROM pggcl.leases UNION SELECT limit_id FROM pggcl.waiters);
BEGIN
    PERFORM pggcl._mark_squatted(ids, clock_timestamp());
    RETURN pggcl._reclaim(ids);
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
-- Only for waiters of the caller's role's sessions (a manager's: any): another role's waiter
-- raises GC007, and another role's lease is not reported ('gone').
CREATE OR REPLACE FUNCTION pggcl.recheck(waiter_id bigint, lease_id uuid DEFAULT NULL)
RETURNS TABLE (status text, retry_after double precision)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at timestamptz := clock_timestamp();
    w pggcl.waiters;
    ids bigint[];
    next_at timestamptz;
BEGIN
    SELECT * INTO w FROM pggcl.waiters x WHERE x.id = recheck.waiter_id LIMIT 1;
    IF FOUND AND NOT pggcl._may_act_for(w.session_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'GC007', MESSAGE = format(
            'waiter %s belongs to a session of another role: only that role (or a manager) may recheck it',
            recheck.waiter_id);
    END IF;
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
    RETURN QUERY SELECT CASE WHEN EXISTS (SELECT FROM pggcl.leases x WHERE x.id = recheck.lease_id
                                          AND pggcl._may_act_on(x.session_id, x.owner_role))
                             THEN 'granted' ELSE 'gone' END, NULL::double precision;
END
$$;

-- Give back a lease's slots and serve the queue. False when the lease is not held (already
-- released, or reclaimed) or is another role's (only managers release any lease; a lease
-- without a session is the role's that took it), and then nothing changes.
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
        DELETE FROM pggcl.leases x
        WHERE x.id = release.lease_id AND pggcl._may_act_on(x.session_id, x.owner_role)
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
    WHERE x.id = renew.lease_id AND pggcl._may_act_on(x.session_id, x.owner_role);
    RETURN FOUND;
END
$$;

-- Whether each session is alive now, read without a probe (private: the views below read it
-- as their owner). A session is alive while its own backend (backend_pid, started at
-- backend_start) holds its session-level advisory lock (1885824867, id): pg_locks shows that to
-- every role, and reading it takes no lock (a probe, pg_try_advisory_xact_lock, would hold the
-- dead session's lock until the reader's transaction ended; and would count a lock that
-- someone else took once the session died). `expired`: dead and past its grace, counted from
-- when it was first seen dead (_dead_since: this read may be the first), or reclaimed.
CREATE OR REPLACE VIEW pggcl._sessions_seen AS
WITH held AS MATERIALIZED (  -- who holds which session's lock: one read of pg_locks
    SELECT k.objid, k.pid FROM pg_catalog.pg_locks k
    WHERE k.locktype = 'advisory' AND k.classid = 1885824867::oid AND k.objsubid = 2 AND k.granted
      AND k.database = (SELECT d.oid FROM pg_catalog.pg_database d
                        WHERE d.datname = pg_catalog.current_database())
), started AS MATERIALIZED (  -- when each backend started, where the reader may see it
    SELECT a.pid, a.backend_start FROM pg_catalog.pg_stat_get_activity(NULL) a
    WHERE a.backend_start IS NOT NULL
)
SELECT s.id,
       a.alive,
       s.reclaimed OR CASE WHEN a.alive THEN false
                           WHEN s.grace_seconds OPERATOR(pg_catalog.=) 0::double precision THEN true
                           ELSE coalesce(pggcl._dead_since(s.id) OPERATOR(pg_catalog.+)
                                             pg_catalog.make_interval(secs => s.grace_seconds)
                                         OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp(), false) END
           AS expired
FROM pggcl.sessions s,
     LATERAL (SELECT NOT s.reclaimed
                     AND (s.id::oid, s.backend_pid) IN (SELECT h.objid, h.pid FROM held h)
                     -- (a later backend with the session's pid is not the session)
                     AND NOT (s.backend_start IS NOT NULL
                              AND s.backend_pid IN (SELECT t.pid FROM started t)
                              AND (s.backend_pid, s.backend_start) NOT IN (
                                  SELECT t.pid, t.backend_start FROM started t)) AS alive) a;

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

GRANT EXECUTE ON FUNCTION pggcl._same_backend(integer, timestamptz), pggcl._dead_since(integer)
TO pggcl_user;

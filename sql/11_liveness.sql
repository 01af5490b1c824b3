-- Internal: whose session a call acts for, whether a session's connection is alive, and how a
-- session is told about its requests. (The SQL functions schema-qualify every function and
-- operator: see "No trojans" in 10_internals.sql.)

-- The session this connection registered, if any. Its id is kept in a per-connection setting
-- (so it vanishes with the connection), but a setting is no proof: any role may SET it. The
-- session counts only when its row says it is held by this backend and the setting
-- pggcl.session_key, set next to it, holds the session's token (which another backend cannot
-- know): SET pggcl.session_id = '<someone else's id>' gives nothing.
CREATE FUNCTION pggcl._connection_session() RETURNS integer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    carried text := pg_catalog.current_setting('pggcl.session_id', true);
    mine integer;
BEGIN
    IF carried IS NULL OR carried !~ '^[0-9]{1,9}$' THEN
        RETURN NULL;
    END IF;
    SELECT s.id INTO mine FROM pggcl.sessions s
    WHERE s.id = carried::integer AND s.backend_pid = pg_backend_pid()
      AND s.token::text = pg_catalog.current_setting('pggcl.session_key', true);
    RETURN mine;
END
$$;

-- Whether the session exists, has not been reclaimed, and belongs to the caller's role (the
-- role that opened it is `session_user` here too; see owner_role in 00_schema.sql).
-- (PL/pgSQL, not SQL: a SQL function whose body has a subquery is never inlined, so it would be
-- parsed and planned again at every call.)
CREATE FUNCTION pggcl._session_exists(session_id integer) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT FROM pggcl.sessions s WHERE s.id = session_id AND NOT s.reclaimed
                   AND coalesce(s.owner_role = session_user, true));
END
$$;

-- Raise GC007 unless the session exists, has not been reclaimed, and is the caller's role's.
CREATE FUNCTION pggcl._require_session(session_id integer) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT pggcl._session_exists(session_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'GC007', MESSAGE = format(
            'session %s does not exist (it was closed, or reclaimed after its connection was lost) '
            'or was opened by another role', session_id);
    END IF;
END
$$;

-- Whether the caller manages pggcl: a member of pggcl_admin, a superuser (a member of every
-- role), or the owner of the schema.
CREATE FUNCTION pggcl._is_manager() RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN pg_has_role(session_user, 'pggcl_admin', 'MEMBER')
        OR EXISTS (SELECT FROM pg_namespace n WHERE n.nspname = 'pggcl'
                   AND n.nspowner = (SELECT r.oid FROM pg_roles r WHERE r.rolname = session_user));
END
$$;

-- Whether the caller may act on a lease or waiter of `session_id`: its session is the caller's
-- role's (or was opened before 0006), it has no session (a lease with a TTL), or the caller is
-- a manager. A claim whose session row is gone is a manager's only.
CREATE FUNCTION pggcl._may_act_for(session_id integer) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN session_id IS NULL
        OR EXISTS (SELECT FROM pggcl.sessions s WHERE s.id = session_id
                   AND coalesce(s.owner_role = session_user, true))
        OR pggcl._is_manager();
END
$$;

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

-- When a reader first saw the session dead while it was registered to `backend_pid` (see
-- pggcl.sightings), or NULL.
CREATE FUNCTION pggcl._first_seen_dead(session_id integer, backend_pid integer) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT min(x.seen_at) FROM pggcl.sightings x
            WHERE x.session_id = _first_seen_dead.session_id AND x.backend_pid = _first_seen_dead.backend_pid);
END
$$;

-- Whether the session's connection is alive, as cheaply as it can be told. A live session
-- holds its advisory lock, so taking it (for this transaction only) fails; success means the
-- owner is gone. Our own session is alive by definition (and does not fail the probe: advisory
-- locks are re-entrant). A failed probe may also mean that someone else took a dead session's
-- lock: the callers that decide a reclaim check that with _held_by_its_backend (see there).
-- (Not IS NOT DISTINCT FROM, whose `=` is looked up on the search_path; session_id is never NULL.)
CREATE FUNCTION pggcl._session_alive(session_id integer) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN pg_catalog.pg_try_advisory_xact_lock(pggcl._lock_space(), session_id)
                THEN coalesce(session_id OPERATOR(pg_catalog.=) pggcl._connection_session(), false)
                ELSE true END
$$;

-- Whether a session found dead (its connection gone: _session_alive said so) is past its grace
-- and may lose what it waits for. The first time it is seen dead its grace starts (dead_since),
-- so a client cut off by a restart has the whole grace to come back, counted from when the
-- server could see it gone (by a reader of the views too: pggcl.sightings).
CREATE FUNCTION pggcl._dead_past_grace(session_id integer, at timestamptz) RETURNS boolean
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

-- Tell a session about its waiter, on the session's stored channel (its secret name is known
-- only to its owner): `kind:waiter_id[:detail]` (see the payloads in 30_sessions.sql). The
-- detail is cut to stay under NOTIFY's 8000 bytes. A session that is gone is told nothing.
CREATE FUNCTION pggcl._notify(session_id integer, kind text, waiter_id bigint, detail text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    to_channel text;
BEGIN
    SELECT coalesce(s.channel, 'pggcl_' || s.id) INTO to_channel FROM pggcl.sessions s WHERE s.id = session_id;
    IF to_channel IS NOT NULL THEN
        PERFORM pg_notify(to_channel, kind || ':' || waiter_id || coalesce(':' || left(detail, 7000), ''));
    END IF;
END
$$;

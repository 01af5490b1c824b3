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

-- Whether the session exists and has not been reclaimed.
-- (PL/pgSQL, not SQL: a SQL function whose body has a subquery is never inlined, so it would be
-- parsed and planned again at every call.)
CREATE FUNCTION pggcl._session_exists(session_id integer) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT FROM pggcl.sessions s WHERE s.id = session_id AND NOT s.reclaimed);
END
$$;

-- Raise GC007 unless the session exists and has not been reclaimed.
CREATE FUNCTION pggcl._require_session(session_id integer) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT pggcl._session_exists(session_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'GC007', MESSAGE = format(
            'session %s does not exist (it was closed, or reclaimed after its connection was lost)',
            session_id);
    END IF;
END
$$;

-- Whether the session's connection is alive. A live session holds its advisory lock, so taking
-- it (for this transaction only) fails; success means the owner is gone. Our own session is
-- alive by definition (and does not fail the probe: advisory locks are re-entrant).
-- (Not IS NOT DISTINCT FROM, whose `=` is looked up on the search_path; session_id is never NULL.)
CREATE FUNCTION pggcl._session_alive(session_id integer) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN pg_catalog.pg_try_advisory_xact_lock(pggcl._lock_space(), session_id)
                THEN coalesce(session_id OPERATOR(pg_catalog.=) pggcl._connection_session(), false)
                ELSE true END
$$;

-- Tell a session about its waiter, on the session's channel: `kind:waiter_id[:detail]`
-- (see the payloads in 30_sessions.sql). The detail is cut to stay under NOTIFY's 8000 bytes.
CREATE FUNCTION pggcl._notify(session_id integer, kind text, waiter_id bigint, detail text DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT pg_catalog.pg_notify('pggcl_' OPERATOR(pg_catalog.||) session_id,
                                kind OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) waiter_id
                                OPERATOR(pg_catalog.||) coalesce(':' OPERATOR(pg_catalog.||) pg_catalog.left(detail, 7000), ''))
$$;

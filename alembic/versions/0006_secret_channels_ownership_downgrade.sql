-- Revision 0006, downgrade to 0005. Frozen once released: never edit this file.
-- What 0006 changes (issue #13, points 1 and 2):
--   * forged grants: a session's notifications go to its stored channel,
--     'pggcl_<id>_<32 random hex digits>', which open_session returns to its owner alone; no
--     one else can LISTEN to it or NOTIFY on it by guessing 'pggcl_<id>' (sessions opened
--     before 0006 keep the channel 'pggcl_<id>');
--   * ownership: a session belongs to the role that opened it (sessions.owner_role, the
--     session_user of open_session). take, acquire and try_acquire with its session_id, and
--     heartbeat(session_id), raise GC007 for another role's session; release and renew return
--     false, and cancel 'gone', for another role's lease or waiter, except for managers
--     (members of pggcl_admin, superusers, the schema owner).
-- Tables: sessions gains the columns channel and owner_role. Public signatures unchanged.
--
-- Re-runs the function, view and privilege part of 0005_dead_waiters_no_takeover.sql: every
-- function and view ends as 0005 defined it; then 0006's own functions and columns go.

-- sql/10_internals.sql
-- Internal helpers (this file and the four after it). None of these is part of the public API
-- and none is granted to the pggcl roles: the public functions (SECURITY DEFINER) call them as
-- the schema owner, with the caller's settings (the pinned search_path among them).
--
-- Every public function follows one pattern:
--   1. validate its input (errors use SQLSTATEs of class GC, see below);
--   2. lock the limit rows it needs, in one statement, ordered by id (so no two calls deadlock);
--   3. change state only on the rows it has locked;
--   4. if it may have made room, run the grant step (pggcl._grant) on those limits, which hands
--      slots to queued waiters first come first served and NOTIFYs them.
--
-- SQLSTATEs raised by pggcl:
--   GC001 limit not found        GC002 limit already exists      GC003 invalid argument
--   GC004 occupy exceeds limit   GC005 rate limit without decay  GC006 strict: limit missing
--   GC007 unknown session        GC008 session held elsewhere
-- A GC003 error names the parameter it is about in its COLUMN field (psycopg:
-- `diag.column_name`, asyncpg: `column_name`): name, limit, slot_decay_per_second, new_name,
-- names, occupy, mode, ttl_seconds or grace_seconds. Its message says what is wrong.
--
-- Bounds. Every number a caller gives is bounded so that all timestamp, float and integer
-- arithmetic on it stays in range, whoever calls later (another caller, a manager, reclaim):
--   limit                  0 .. 1,000,000,000 slots    (held + occupy stays below 2^31 - 1)
--   occupy                 1 .. 1,000,000,000 slots
--   slot_decay_per_second  0, or 1e-9 .. 1e9 slots per second (level / decay and
--                          decay * elapsed stay finite)
--   ttl_seconds            above 0, at most 315,360,000 s (10 years)
--   grace_seconds          0 .. 315,360,000 s (10 years)
-- Ten years is far beyond any lease a person will come back for (a longer one is a lease
-- nobody releases: give it a session instead) and far inside every timestamp's range.
-- Names: 1 to 255 characters, none of / % & > <, no control characters (U+0000-U+001F,
-- U+007F-U+009F) and no bidirectional formatting characters (U+061C, U+200E, U+200F,
-- U+202A-U+202E, U+2066-U+2069). Names are kept exactly as given: leading and trailing spaces
-- stay, and no Unicode normalisation is applied (names compare as given).
--
-- No trojans. The SQL helpers below schema-qualify every function and operator
-- (OPERATOR(pg_catalog.=)): PostgreSQL inlines them into the calling query and parses them there
-- with the caller's search_path, and pggcl.limits calls _decayed as whoever reads the view
-- (a superuser, perhaps, with an attacker's schema first on the path). A SET search_path would
-- pin it too, but stops the inlining that the hot path's UPDATEs rely on. The PL/pgSQL helpers
-- run only inside the public functions, whose search_path is pinned to pg_catalog, pg_temp
-- (functions and operators are never looked up in pg_temp), and no pggcl role may call them;
-- pinning each as well would cost about 1.8 us per call (measured: 4.7 vs 2.9 us for a
-- one-statement helper), and a contended acquire makes a dozen such calls.
-- tests/sql/test_hardening.py checks these rules on the catalog.
--
-- This file: what a limit's numbers mean, and the checks of what callers give.

-- The first key of every pggcl advisory lock; the second is the session id.
CREATE OR REPLACE FUNCTION pggcl._lock_space() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 1885824867 $$;  -- 'pggc'

-- Rate-limit level of a limit at time `at`: `level` as it stood at `level_at`, decayed
-- continuously at `decay` slots per second since. Statements over pggcl.limit_state pass the
-- columns: a row-typed argument would make PostgreSQL build a copy of the whole row for every
-- call (measured: a third of an uncontended acquire's server time).
CREATE OR REPLACE FUNCTION pggcl._decayed(level double precision, decay double precision, level_at timestamptz,
                               at timestamptz) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN level OPERATOR(pg_catalog.=) 0::double precision THEN 0::double precision
                ELSE greatest(0::double precision,
                              level OPERATOR(pg_catalog.-) (decay OPERATOR(pg_catalog.*)
                                  pg_catalog.date_part('epoch', at OPERATOR(pg_catalog.-) level_at))) END
$$;

-- Whether `occupy` more slots fit on a limit at `at`. Inactive limits always have room. The
-- tolerance absorbs float rounding so that a caller who waited exactly retry_after gets in.
CREATE OR REPLACE FUNCTION pggcl._fits(active boolean, "limit" integer, held integer, level double precision,
                            decay double precision, level_at timestamptz, occupy integer,
                            at timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT NOT active
        OR (held OPERATOR(pg_catalog.+) pggcl._decayed(level, decay, level_at, at) OPERATOR(pg_catalog.+) occupy)
           OPERATOR(pg_catalog.<=) ("limit" OPERATOR(pg_catalog.+) 1e-9)
$$;

-- The same two for a limit_state value held in a PL/pgSQL variable.
CREATE OR REPLACE FUNCTION pggcl._level(l pggcl.limit_state, at timestamptz) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT pggcl._decayed(l.level, l.slot_decay_per_second, l.level_at, at)
$$;

CREATE OR REPLACE FUNCTION pggcl._has_room(l pggcl.limit_state, occupy integer, at timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT pggcl._fits(l.active, l."limit", l.held, l.level, l.slot_decay_per_second, l.level_at, occupy, at)
$$;

-- Seconds from `at` until `later` (0 when it has passed), NULL when `later` is NULL.
CREATE OR REPLACE FUNCTION pggcl._seconds_until(later timestamptz, at timestamptz) RETURNS double precision STRICT
LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(0::double precision, extract(epoch FROM later OPERATOR(pg_catalog.-) at)::double precision)
$$;

-- The elements of `a` that are also in `b`, in the order of `a`.
CREATE OR REPLACE FUNCTION pggcl._intersect(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN (SELECT coalesce(array_agg(x), '{}') FROM unnest(a) x WHERE x = ANY(b));
END
$$;

-- What a name must not contain besides / % & > <: control characters and bidirectional
-- formatting characters, as a regular expression.
CREATE OR REPLACE FUNCTION pggcl._unprintable() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '[\u0001-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]'::text
$$;

-- Whether `name` is a valid limit name (the rules are at the top of this file). The cheap test
-- that the usual path runs; _check_name says what is wrong.
CREATE OR REPLACE FUNCTION pggcl._valid_name(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT name IS NOT NULL AND name OPERATOR(pg_catalog.<>) ''
       AND pg_catalog.length(name) OPERATOR(pg_catalog.<=) 255
       AND name OPERATOR(pg_catalog.!~) '[/%&><]' AND name OPERATOR(pg_catalog.!~) pggcl._unprintable()
$$;

-- Whether `seconds` is absent (NULL) or a number of seconds above 0 and at most 10 years.
CREATE OR REPLACE FUNCTION pggcl._valid_seconds(seconds double precision) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT seconds IS NULL
        OR (seconds OPERATOR(pg_catalog.>) 0::double precision
            AND seconds OPERATOR(pg_catalog.<=) 315360000::double precision)
$$;

-- Raise the error that says what is wrong with a name (the rules are in _valid_name); `field`
-- is the parameter it came in (name, new_name or names), named in the error's COLUMN field.
CREATE OR REPLACE FUNCTION pggcl._check_name(name text, field text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    bad text;
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = field,
            MESSAGE = 'invalid limit name: it must not be empty';
    ELSIF name ~ pggcl._unprintable() THEN
        -- The name itself is not shown: it holds what a terminal or a page must not print.
        bad := substring(name from pggcl._unprintable());
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = field, MESSAGE = format(
            'invalid limit name: character %s is U+%s, a control or bidirectional formatting '
            'character; names must be printable', strpos(name, bad), upper(lpad(to_hex(ascii(bad)), 4, '0')));
    ELSIF length(name) > 255 THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = field, MESSAGE = format(
            'invalid limit name %L: it is %s characters long, at most 255 are allowed',
            left(name, 40) || '...', length(name));
    ELSIF name ~ '[/%&><]' THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = field, MESSAGE = format(
            'invalid limit name %L: it must not contain any of / %% & > <', name);
    END IF;
END
$$;

-- Raise GC003 (COLUMN limit or slot_decay_per_second) unless `limit` is NULL or within its
-- bounds and `slot_decay_per_second` is NULL or within its bounds (see the top of this file).
-- `name` is the limit, for the message.
CREATE OR REPLACE FUNCTION pggcl._check_limit_values(name text, "limit" integer, slot_decay_per_second double precision)
RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF "limit" < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'limit', MESSAGE = format(
            'invalid limit for %L: %s; it must be 0 or more slots', name, "limit");
    ELSIF "limit" > 1000000000 THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'limit', MESSAGE = format(
            'invalid limit for %L: %s; it must be at most 1000000000 slots', name, "limit");
    END IF;
    IF NOT (slot_decay_per_second >= 0 AND slot_decay_per_second < 'Infinity') THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'slot_decay_per_second', MESSAGE = format(
            'invalid slot_decay_per_second for %L: %s; it must be a finite number, 0 or more',
            name, slot_decay_per_second);
    ELSIF slot_decay_per_second > 0 AND NOT slot_decay_per_second BETWEEN 1e-9 AND 1e9 THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'slot_decay_per_second', MESSAGE = format(
            'invalid slot_decay_per_second for %L: %s; it must be 0 or from 1e-09 to 1e+09 slots per second',
            name, slot_decay_per_second);
    END IF;
END
$$;

-- Raise GC003 (COLUMN `what`, the parameter's name) unless `seconds` is valid (_valid_seconds).
CREATE OR REPLACE FUNCTION pggcl._check_seconds(what text, seconds double precision) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF NOT (seconds > 0 AND seconds < 'Infinity') THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = what, MESSAGE = format(
            'invalid %s: %s; it must be a finite number of seconds above 0', what, seconds);
    ELSIF NOT pggcl._valid_seconds(seconds) THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = what, MESSAGE = format(
            'invalid %s: %s; it must be at most 315360000 seconds (10 years)', what, seconds);
    END IF;
END
$$;

-- The names a request for slots asks for, distinct and sorted (the order limits are locked
-- in), once every argument is valid; otherwise GC003 naming the parameter: occupy (a whole
-- number of slots within its bounds), mode, ttl_seconds, names (an array of valid names).
-- (Conditions without subqueries are evaluated without starting the executor: the usual path
-- is written so that only its real work runs queries.)
CREATE OR REPLACE FUNCTION pggcl._checked_request(names text[], occupy integer, mode text,
                                       ttl_seconds double precision) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    wanted text[];
    n text;
BEGIN
    IF occupy IS NULL OR occupy < 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'occupy', MESSAGE = format(
            'invalid occupy: %s; it must be a whole number of slots, 1 or more', coalesce(occupy::text, 'NULL'));
    ELSIF occupy > 1000000000 THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'occupy', MESSAGE = format(
            'invalid occupy: %s; it must be at most 1000000000 slots', occupy);
    END IF;
    IF mode IS NULL OR mode NOT IN ('concurrency', 'rate_limit') THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'mode', MESSAGE = format(
            'invalid mode: %s; it must be ''concurrency'' or ''rate_limit''', coalesce(quote_literal(mode), 'NULL'));
    END IF;
    IF NOT pggcl._valid_seconds(ttl_seconds) THEN
        PERFORM pggcl._check_seconds('ttl_seconds', ttl_seconds);
    END IF;
    IF names IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'names',
            MESSAGE = 'invalid names: an array of limit names is required';
    END IF;
    IF cardinality(names) = 1 AND array_ndims(names) = 1 THEN
        wanted := names;
    ELSE  -- (also flattens a multidimensional array, such as '{{a}}', whose names[1] is NULL)
        wanted := array(SELECT DISTINCT x FROM unnest(names) x ORDER BY x);
    END IF;
    FOREACH n IN ARRAY wanted LOOP
        IF NOT pggcl._valid_name(n) THEN
            PERFORM pggcl._check_name(n, 'names');
        END IF;
    END LOOP;
    RETURN wanted;
END
$$;

-- sql/11_liveness.sql
-- Internal: whose session a call acts for, whether a session's connection is alive, and how a
-- session is told about its requests. (The SQL functions schema-qualify every function and
-- operator: see "No trojans" in 10_internals.sql.)

-- The session this connection registered, if any. Its id is kept in a per-connection setting
-- (so it vanishes with the connection), but a setting is no proof: any role may SET it. The
-- session counts only when its row says it is held by this backend and the setting
-- pggcl.session_key, set next to it, holds the session's token (which another backend cannot
-- know): SET pggcl.session_id = '<someone else's id>' gives nothing.
CREATE OR REPLACE FUNCTION pggcl._connection_session() RETURNS integer
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
CREATE OR REPLACE FUNCTION pggcl._session_exists(session_id integer) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT FROM pggcl.sessions s WHERE s.id = session_id AND NOT s.reclaimed);
END
$$;

-- Raise GC007 unless the session exists and has not been reclaimed.
CREATE OR REPLACE FUNCTION pggcl._require_session(session_id integer) RETURNS void
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
CREATE OR REPLACE FUNCTION pggcl._session_alive(session_id integer) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN pg_catalog.pg_try_advisory_xact_lock(pggcl._lock_space(), session_id)
                THEN coalesce(session_id OPERATOR(pg_catalog.=) pggcl._connection_session(), false)
                ELSE true END
$$;

-- Tell a session about its waiter, on the session's channel: `kind:waiter_id[:detail]`
-- (see the payloads in 30_sessions.sql). The detail is cut to stay under NOTIFY's 8000 bytes.
CREATE OR REPLACE FUNCTION pggcl._notify(session_id integer, kind text, waiter_id bigint, detail text DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT pg_catalog.pg_notify('pggcl_' OPERATOR(pg_catalog.||) session_id,
                                kind OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) waiter_id
                                OPERATOR(pg_catalog.||) coalesce(':' OPERATOR(pg_catalog.||) pg_catalog.left(detail, 7000), ''))
$$;

-- sql/12_bookkeeping.sql
-- Internal: locking limits, and the changes made on locked limits. Each function here keeps
-- the counters of limit_state (`held`, `queued`) equal to the rows they count (leases, waiters).
-- (Helpers whose body is a query are PL/pgSQL, whose plans are cached; SQL functions that
-- cannot be inlined are planned anew at every call.)
--
-- Lease rows are taken with SKIP LOCKED everywhere a limit lock is held: a row locked by
-- someone else is being released right now, and waiting for it could deadlock (a release
-- deletes its lease rows before it locks the limits).

-- Lock the given limits, in id order, and return their ids in that order.
CREATE OR REPLACE FUNCTION pggcl._lock(ids bigint[]) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN (SELECT coalesce(array_agg(id), '{}') FROM (
        SELECT id FROM pggcl.limit_state WHERE id = ANY(ids) ORDER BY id FOR NO KEY UPDATE
    ) locked);
END
$$;

-- Lock the limits named `names` that exist, in id order (so that no two calls deadlock), and
-- return their rows as locked.
CREATE OR REPLACE FUNCTION pggcl._lock_named(names text[]) RETURNS pggcl.limit_state[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lim pggcl.limit_state;
BEGIN
    IF cardinality(names) = 1 THEN
        SELECT * INTO lim FROM pggcl.limit_state s WHERE s.name = names[1] FOR NO KEY UPDATE;
        RETURN CASE WHEN FOUND THEN ARRAY[lim] ELSE '{}' END;
    END IF;
    RETURN array(SELECT s FROM pggcl.limit_state s WHERE s.name = ANY(names) ORDER BY s.id
                 FOR NO KEY UPDATE);
END
$$;

-- Create the limits of `wanted` missing from `locked`, inactive (they block nobody), and return
-- their names; with `strict`, raise GC006 naming them instead. A limit created meanwhile by
-- someone else is left as it is.
CREATE OR REPLACE FUNCTION pggcl._create_missing(wanted text[], locked pggcl.limit_state[], strict boolean)
RETURNS text[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    missing text[] := array(SELECT x FROM unnest(wanted) x
                            WHERE x <> ALL(array(SELECT (s).name FROM unnest(locked) s)));
BEGIN
    IF strict THEN
        RAISE EXCEPTION USING ERRCODE = 'GC006', MESSAGE = format('no such limit: %s',
            array_to_string(array(SELECT quote_literal(x) FROM unnest(missing) x), ', '));
    END IF;
    INSERT INTO pggcl.limit_state (name, "limit", active)
    SELECT x, 1, false FROM unnest(missing) x
    ON CONFLICT ON CONSTRAINT limit_state_name_key DO NOTHING;
    RETURN missing;
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

-- Give back the slots of deleted lease rows, summed per limit.
CREATE OR REPLACE FUNCTION pggcl._give_back(freed_limit_ids bigint[], freed_slots integer[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF cardinality(freed_limit_ids) = 1 THEN
        UPDATE pggcl.limit_state SET held = held - freed_slots[1] WHERE id = freed_limit_ids[1];
    ELSIF cardinality(freed_limit_ids) > 1 THEN
        UPDATE pggcl.limit_state l SET held = l.held - f.slots
        FROM (SELECT limit_id, sum(slots)::integer AS slots
              FROM unnest(freed_limit_ids, freed_slots) AS u(limit_id, slots) GROUP BY limit_id) f
        WHERE l.id = f.limit_id;
    END IF;
END
$$;

-- Drop the lease rows on the locked limits `ids` that belong to the session `of_session` or
-- that expired by `expired_by` (callers give one of the two, the other NULL matches nothing),
-- and give their slots back. Rows locked by someone else are skipped (see above).
CREATE OR REPLACE FUNCTION pggcl._drop_leases(ids bigint[], of_session integer, expired_by timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    freed_limits bigint[];
    freed_slots integer[];
BEGIN
    WITH gone AS (
        DELETE FROM pggcl.leases WHERE (id, limit_id) IN (
            SELECT x.id, x.limit_id FROM pggcl.leases x
            WHERE x.limit_id = ANY(ids) AND (x.session_id = of_session OR x.expires_at <= expired_by)
            FOR UPDATE SKIP LOCKED)
        RETURNING limit_id, occupy
    )
    SELECT array_agg(limit_id), array_agg(occupy) INTO freed_limits, freed_slots FROM gone;
    PERFORM pggcl._give_back(freed_limits, freed_slots);
END
$$;

-- Count waiter rows removed from the given (locked) limits, one array element per row.
CREATE OR REPLACE FUNCTION pggcl._dequeued(limit_ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF limit_ids IS NOT NULL THEN
        UPDATE pggcl.limit_state l SET queued = l.queued - c.n
        FROM (SELECT x AS id, count(*)::integer AS n FROM unnest(limit_ids) x GROUP BY x) c
        WHERE l.id = c.id;
    END IF;
END
$$;

-- Queue a request on the locked limits `ids`: one waiter row per limit, all under one new id
-- (ids grow, so it is served after everyone queued there before it), counted in `queued`.
-- Returns the waiter id.
CREATE OR REPLACE FUNCTION pggcl._enqueue(ids bigint[], occupy integer, mode text, lease_id uuid,
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
    UPDATE pggcl.limit_state SET queued = queued + 1 WHERE id = ANY(ids);
    RETURN waiter_id;
END
$$;

-- Remove a waiter from every queue it is in; its limits are locked. False when it was in none.
CREATE OR REPLACE FUNCTION pggcl._dequeue_waiter(waiter_id bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    WITH gone AS (DELETE FROM pggcl.waiters w WHERE w.id = waiter_id RETURNING w.limit_id)
    UPDATE pggcl.limit_state l SET queued = l.queued - 1 FROM gone WHERE l.id = gone.limit_id;
    RETURN FOUND;
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

-- sql/13_reclaim.sql
-- Internal: reclaiming what died. Leases whose TTL passed, and the leases and waiters of
-- sessions whose connection has been gone for longer than their grace period, are dropped on
-- the limits a call has locked; no janitor process is needed.

-- The sessions with a claim on the limits `ids`: a lease or a queued request there.
CREATE OR REPLACE FUNCTION pggcl._claimants(ids bigint[]) RETURNS TABLE (session_id integer)
LANGUAGE sql STABLE AS $$
    SELECT x.session_id FROM pggcl.leases x
    WHERE x.limit_id OPERATOR(pg_catalog.=) ANY(ids) AND x.session_id IS NOT NULL
    UNION
    SELECT w.session_id FROM pggcl.waiters w WHERE w.limit_id OPERATOR(pg_catalog.=) ANY(ids)
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

-- Whether anything on the limits `ids` is there to reclaim: an expired lease, or a claim (lease
-- or waiter) of a session that is gone, reclaimed, or marked dead. Takes no limit lock and
-- writes nothing; a dead session's probe keeps its advisory lock until commit (see _reap).
CREATE OR REPLACE FUNCTION pggcl._anything_to_reap(ids bigint[], at timestamptz) RETURNS boolean
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

-- Reclaim what died on the given limits and serve whoever that lets in. Returns the seconds
-- until the next known expiry there, or NULL. When everyone there is alive and nothing has
-- expired (the usual heartbeat), no limit is locked, so a heartbeat never holds up a release.
CREATE OR REPLACE FUNCTION pggcl._reclaim(ids bigint[]) RETURNS double precision
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

-- sql/14_grant.sql
-- Internal: the grant step, which hands free slots to queued waiters first come, first served,
-- and tells them; and what a refused request is told (why never, or when to look again).

-- Why a request can never be granted on these limits, or NULL when it can.
CREATE OR REPLACE FUNCTION pggcl._impossible(ids bigint[], occupy integer, mode text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce(
        (SELECT format('cannot occupy %s slots on limit %L: its limit is %s', occupy, name, "limit")
         FROM pggcl.limit_state WHERE id = ANY(ids) AND active AND occupy > "limit" ORDER BY name LIMIT 1),
        (SELECT format('cannot rate limit on %L: its slot_decay_per_second is 0', name)
         FROM pggcl.limit_state
         WHERE id = ANY(ids) AND active AND mode = 'rate_limit' AND slot_decay_per_second = 0
         ORDER BY name LIMIT 1));
END
$$;

-- The grant step. On the locked limits `ids`, serve queued waiters in arrival order while room
-- exists. A waiter blocks every later waiter on each of its active limits (head-of-line
-- blocking: a large request is never starved by small ones). A waiter that also waits on limits
-- we have not locked is asked to re-check itself (it locks all its limits in order and runs this
-- step there). A waiter that can never be served (a limit was lowered below its request) is
-- removed and told why. A waiter whose session is dead is dropped instead of served (see
-- _serve). Returns the ids of the waiters it granted.
CREATE OR REPLACE FUNCTION pggcl._grant(ids bigint[], at timestamptz) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lim pggcl.limit_state;
BEGIN
    IF cardinality(ids) = 1 THEN
        SELECT * INTO lim FROM pggcl.limit_state WHERE id = ids[1];
        IF NOT FOUND OR lim.queued = 0 THEN
            RETURN '{}';
        END IF;
        RETURN pggcl._serve(lim, at);
    END IF;
    RETURN pggcl._grant_general(ids, at);
END
$$;

-- The grant step on one limit, given its locked row as it stands (a release passes it with its
-- slots given back, from the UPDATE that locked it). The usual case, an active limit whose queue
-- head wants that limit alone, is served here: the head of the queue while it fits, the row kept
-- in a variable and written once, each grant one statement (dequeue, lease, notify). Anything
-- else goes to the general step: an inactive limit, or a head with more limits to lock or a
-- request that can never fit, to refuse.
-- A waiter whose session is dead (its connection gone, however recently) is never served: the
-- one about to be granted is probed first (_session_alive), and a dead one is dequeued and the
-- next one looked at. Only a waiter that would be granted is probed, so a release with nobody
-- queued probes nothing.
CREATE OR REPLACE FUNCTION pggcl._serve(lim pggcl.limit_state, at timestamptz) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    w pggcl.waiters;
    notified boolean;
    granted bigint[] := '{}';
    dropped boolean := false;
    general boolean := NOT lim.active;
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
                DELETE FROM pggcl.waiters x WHERE x.limit_id = lim.id AND x.id = w.id;
                lim.queued := lim.queued - 1;
                lim.queue_from := w.id;
                dropped := true;
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
            END IF;
            lim.queued := lim.queued - 1;
            lim.queue_from := w.id;  -- it was the head: every waiter before it here is gone
            granted := granted || w.id;
        END LOOP;
        IF cardinality(granted) > 0 OR dropped THEN
            UPDATE pggcl.limit_state
            SET held = lim.held, queued = lim.queued, level = lim.level, level_at = lim.level_at,
                queue_from = lim.queue_from
            WHERE id = lim.id;
        END IF;
    END IF;
    IF general THEN
        granted := granted || pggcl._grant_general(ARRAY[lim.id], at);
    END IF;
    RETURN granted;
END
$$;

-- The grant step for any set of limits (see above).
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
            blocked := blocked || w.limit_ids;
        ELSE
            why := pggcl._impossible(w.limit_ids, w.occupy, w.mode);
            IF why IS NOT NULL THEN
                PERFORM pggcl._dequeue_waiter(w.id);
                PERFORM pggcl._notify(w.session_id, 'e', w.id, why);
            ELSIF (SELECT bool_and(pggcl._fits(l.active, l."limit", l.held, l.level, l.slot_decay_per_second,
                                               l.level_at, w.occupy, at))
                   FROM pggcl.limit_state l WHERE l.id = ANY(w.limit_ids)) THEN
                IF NOT pggcl._session_alive(w.session_id) THEN  -- never served: dropped
                    PERFORM pggcl._dequeue_waiter(w.id);
                    CONTINUE;
                END IF;
                PERFORM pggcl._take(w.limit_ids, pggcl._intersect(w.limit_ids, active_ids), w.occupy,
                                    w.mode, w.lease_id, w.session_id, w.holder, w.ttl_seconds, at);
                PERFORM pggcl._dequeue_waiter(w.id);
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

-- Seconds until a request for `occupy` slots on the locked limits `ids` may fit, counting the
-- waiters queued before `before` (all of them when NULL). Exact for rate limits (the bucket's
-- decay is known); for slots held by leases only an expiry or reclaim at `next_at` is known.
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

-- sql/20_limits.sql
-- Reading and managing limits: the public views and create/update/delete.

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

-- Every limit with its occupancy now (never a stale stored number). Waiters of dead sessions
-- are not counted in `waiting`, nor the slots of dead sessions past their grace in
-- `held_slots`: they are gone the moment anyone next locks the limit.
-- active_slots = held_slots + decaying_slots.
CREATE OR REPLACE VIEW pggcl.limits AS
WITH dead AS MATERIALIZED (SELECT d.id, d.expired FROM pggcl._sessions_seen d WHERE NOT d.alive)
SELECT l.name,
       l."limit",
       l.active,
       l.held - c.dead_held + r.decaying AS active_slots,
       l.slot_decay_per_second,
       l.queued - c.dead_waiting AS waiting,
       l.created,
       l.updated,
       l.held - c.dead_held AS held_slots,
       r.decaying AS decaying_slots
FROM pggcl.limit_state l,
     LATERAL (SELECT pggcl._decayed(l.level, l.slot_decay_per_second, l.level_at, clock_timestamp())
                     AS decaying) r,
     LATERAL (SELECT CASE WHEN l.queued = 0 THEN 0 ELSE (
                         SELECT count(*) FROM pggcl.waiters w
                         WHERE w.limit_id = l.id AND w.session_id IN (SELECT d.id FROM dead d))::integer
                     END AS dead_waiting,
                     CASE WHEN l.held = 0 THEN 0 ELSE (
                         SELECT coalesce(sum(le.occupy), 0) FROM pggcl.leases le
                         WHERE le.limit_id = l.id AND le.session_id IS NOT NULL
                           AND (le.session_id IN (SELECT d.id FROM dead d WHERE d.expired)
                                OR le.session_id NOT IN (SELECT x.id FROM pggcl.sessions x)))::integer
                     END AS dead_held) c;
COMMENT ON VIEW pggcl.limits IS 'Every limit with its live occupancy and queue length';

-- Who holds slots: one row per lease and limit (not the leases of sessions dead past their
-- grace: see _sessions_seen).
CREATE OR REPLACE VIEW pggcl.holders AS
SELECT le.id AS lease_id, l.name, le.occupy AS slots, le.holder, le.session_id,
       le.acquired_at AS since, le.expires_at AS expires
FROM pggcl.leases le JOIN pggcl.limit_state l ON l.id = le.limit_id
     LEFT JOIN pggcl._sessions_seen v ON v.id = le.session_id
WHERE le.session_id IS NULL OR v.expired IS false;
COMMENT ON VIEW pggcl.holders IS 'Slots held by leases, one row per lease and limit';

-- Who waits, in the order they will be served on each limit (position 1 is next): the
-- waiters of live sessions only.
CREATE OR REPLACE VIEW pggcl.queue AS
SELECT w.id AS waiter_id, l.name,
       row_number() OVER (PARTITION BY w.limit_id ORDER BY w.id)::integer AS position,
       w.occupy, w.mode, w.holder, w.session_id, w.enqueued_at AS since
FROM pggcl.waiters w JOIN pggcl.limit_state l ON l.id = w.limit_id
     JOIN pggcl._sessions_seen v ON v.id = w.session_id AND v.alive;
COMMENT ON VIEW pggcl.queue IS 'Queued requests per limit, in the order they will be served';

-- Create a limit. Raises GC002 when the name is taken, GC003 on a bad name or value (its COLUMN
-- field names the parameter).
CREATE OR REPLACE FUNCTION pggcl.create_limit(name text, "limit" integer,
                                   slot_decay_per_second double precision DEFAULT 0,
                                   active boolean DEFAULT true)
RETURNS pggcl.limits
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
    result pggcl.limits;
BEGIN
    PERFORM pggcl._check_name(create_limit.name, 'name');
    IF create_limit."limit" IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'limit',
            MESSAGE = format('invalid limit for %L: it is required', create_limit.name);
    END IF;
    PERFORM pggcl._check_limit_values(create_limit.name, create_limit."limit",
                                      coalesce(create_limit.slot_decay_per_second, 'NaN'));
    INSERT INTO pggcl.limit_state (name, "limit", slot_decay_per_second, active)
    VALUES (create_limit.name, create_limit."limit", create_limit.slot_decay_per_second,
            coalesce(create_limit.active, true))
    ON CONFLICT ON CONSTRAINT limit_state_name_key DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'GC002', MESSAGE = format('limit %L already exists', create_limit.name);
    END IF;
    SELECT * INTO result FROM pggcl.limits v WHERE v.name = create_limit.name;
    RETURN result;
END
$$;

-- Change what is given (NULL leaves a field as it is); `new_name` renames. The decay state is
-- carried over exactly. Anything that adds room lets queued waiters in before this returns.
-- Raises GC001 when the limit does not exist, GC002 when `new_name` is taken, GC003 on a bad
-- name or value.
CREATE OR REPLACE FUNCTION pggcl.update_limit(name text, "limit" integer DEFAULT NULL,
                                   slot_decay_per_second double precision DEFAULT NULL,
                                   active boolean DEFAULT NULL, new_name text DEFAULT NULL)
RETURNS pggcl.limits
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at timestamptz := clock_timestamp();
    l pggcl.limit_state;
    result pggcl.limits;
BEGIN
    PERFORM pggcl._check_name(update_limit.name, 'name');
    PERFORM pggcl._check_limit_values(update_limit.name, update_limit."limit", update_limit.slot_decay_per_second);
    SELECT * INTO l FROM pggcl.limit_state s WHERE s.name = update_limit.name FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'GC001', MESSAGE = format('limit %L does not exist', update_limit.name);
    END IF;
    IF new_name IS NOT NULL AND new_name <> l.name THEN
        PERFORM pggcl._check_name(new_name, 'new_name');
        IF EXISTS (SELECT FROM pggcl.limit_state s WHERE s.name = new_name) THEN
            RAISE EXCEPTION USING ERRCODE = 'GC002', MESSAGE = format('limit %L already exists', new_name);
        END IF;
    END IF;
    -- Materialise the level with the old decay rate first, so a new rate applies from now on.
    UPDATE pggcl.limit_state s
    SET level = pggcl._decayed(s.level, s.slot_decay_per_second, s.level_at, at), level_at = at,
        "limit" = coalesce(update_limit."limit", s."limit"),
        slot_decay_per_second = coalesce(update_limit.slot_decay_per_second, s.slot_decay_per_second),
        active = coalesce(update_limit.active, s.active),
        name = coalesce(new_name, s.name),
        updated = at
    WHERE s.id = l.id;
    PERFORM pggcl._grant(ARRAY[l.id], at);
    SELECT * INTO result FROM pggcl.limits v WHERE v.name = coalesce(new_name, l.name);
    RETURN result;
END
$$;

-- Delete a limit; false when there was none. Its waiters proceed as if the limit were missing
-- (a waiter that also waits on other limits goes on waiting for those).
CREATE OR REPLACE FUNCTION pggcl.delete_limit(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at timestamptz := clock_timestamp();
    doomed bigint;
    w record;
BEGIN
    SELECT id INTO doomed FROM pggcl.limit_state s WHERE s.name = delete_limit.name FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- Deactivated, the limit no longer gates anyone: waiters on it alone are granted here.
    UPDATE pggcl.limit_state SET active = false WHERE id = doomed;
    PERFORM pggcl._grant(ARRAY[doomed], at);
    FOR w IN DELETE FROM pggcl.waiters WHERE limit_id = doomed RETURNING id, session_id LOOP
        UPDATE pggcl.waiters SET limit_ids = array_remove(limit_ids, doomed) WHERE id = w.id;
        PERFORM pggcl._notify(w.session_id, 'r', w.id);
    END LOOP;
    DELETE FROM pggcl.leases WHERE (id, limit_id) IN (
        SELECT id, limit_id FROM pggcl.leases WHERE limit_id = doomed FOR UPDATE SKIP LOCKED);
    DELETE FROM pggcl.limit_state WHERE id = doomed;
    RETURN true;
END
$$;

-- sql/30_sessions.sql
-- Sessions: how a client connection registers itself, so that its leases and waiters die with
-- it and so that it can be told, by NOTIFY on its channel, when a queued request is granted.
--
-- Protocol for a waiting client (psql included):
--   SELECT * FROM pggcl.open_session();         -- session_id, token, channel
--   LISTEN "pggcl_<session_id>";                 -- the channel returned above
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
        INSERT INTO pggcl.sessions (backend_pid, grace_seconds)
        VALUES (pg_backend_pid(), open_session.grace_seconds) RETURNING * INTO s;
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
    RETURN QUERY SELECT s.id, s.token, 'pggcl_' || s.id;
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

-- sql/40_acquire.sql
-- Acquiring slots: the public take, acquire and try_acquire, and the pieces of acquire.
--
-- The public functions here and in the next two files run for every acquire and release, so
-- they pin planner settings, set in one place: 80_hot_path.sql.

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
       OR EXISTS (SELECT FROM pggcl.sessions x WHERE x.id = _take_one.session_id AND NOT x.reclaimed);
    IF NOT FOUND THEN
        PERFORM pggcl._require_session(session_id);  -- raises: the UPDATE is undone
    END IF;
    RETURN true;
END
$$;

-- The usual rate-limit acquire: one name, an active limit with decay, room and nobody queued.
-- One conditional UPDATE locks the row, re-checks the condition on its latest version and
-- raises the bucket. False (and nothing changed) when it does not apply.
CREATE OR REPLACE FUNCTION pggcl._take_one_rate(name text, occupy integer, at timestamptz) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE pggcl.limit_state s
    SET level = pggcl._decayed(s.level, s.slot_decay_per_second, s.level_at, at) + occupy, level_at = at
    WHERE s.name = _take_one_rate.name AND s.active AND s.queued = 0 AND s.slot_decay_per_second > 0
      AND pggcl._fits(true, s."limit", s.held, s.level, s.slot_decay_per_second, s.level_at, occupy, at);
    RETURN FOUND;
END
$$;

-- Whether a request fits now on the locked limits: room on every active one, and nobody queued
-- on it (a grant never jumps the queue).
CREATE OR REPLACE FUNCTION pggcl._fits_now(ids bigint[], occupy integer, at timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN NOT EXISTS (
        SELECT FROM pggcl.limit_state l
        WHERE l.id = ANY(ids) AND l.active
          AND (l.queued > 0 OR NOT pggcl._fits(true, l."limit", l.held, l.level, l.slot_decay_per_second,
                                               l.level_at, occupy, at)));
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

-- Take `occupy` slots on every limit in `names` now, or be told when to try again. Never waits.
--   concurrency mode: on success `lease_id`; the slots are held until pggcl.release(lease_id),
--     until the owning session's connection is lost (past its grace), or until ttl_seconds pass.
--     Without a session and a TTL, the lease belongs to this connection's session.
--   rate_limit mode: no lease; the slots decay away at slot_decay_per_second. When refused,
--     retry_after is exactly the seconds until they will fit (NULL: it depends on a release).
-- Missing names are created inactive unless `strict` (GC006). Errors: GC003 bad input, GC004
-- occupy above an active limit, GC005 rate_limit on a limit without decay.
CREATE OR REPLACE FUNCTION pggcl.try_acquire(names text[], occupy integer DEFAULT 1, mode text DEFAULT 'concurrency',
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

-- sql/50_waiting.sql
-- Waiting: where a queued request stands, and giving up on it. (Hot path: see 80_hot_path.sql.)

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

-- Stop waiting. 'cancelled' when the request was still queued (whoever it blocked is served);
-- otherwise what recheck would say ('granted': the caller now holds lease_id and must release it).
-- With waiter_id NULL, the waiter is found by the request id given to acquire (as lease_id).
CREATE OR REPLACE FUNCTION pggcl.cancel(waiter_id bigint, lease_id uuid DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at timestamptz := clock_timestamp();
    ids bigint[];
BEGIN
    IF cancel.waiter_id IS NULL THEN  -- the caller knows only the request id it chose
        waiter_id := (SELECT x.id FROM pggcl.waiters x WHERE x.lease_id = cancel.lease_id LIMIT 1);
    END IF;
    ids := pggcl._lock(array(SELECT limit_id FROM pggcl.waiters x WHERE x.id = cancel.waiter_id));
    IF pggcl._dequeue_waiter(cancel.waiter_id) THEN
        PERFORM pggcl._grant(ids, at);
        RETURN 'cancelled';
    END IF;
    RETURN CASE WHEN EXISTS (SELECT FROM pggcl.leases x WHERE x.id = cancel.lease_id) THEN 'granted' ELSE 'gone' END;
END
$$;

-- sql/60_release.sql
-- Releasing slots, and extending a lease. (Hot path: see 80_hot_path.sql.)

-- Give back a lease's slots and serve the queue. False when the lease is not held (already
-- released, or reclaimed), and then nothing changes.
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
CREATE OR REPLACE FUNCTION pggcl.renew(lease_id uuid, ttl_seconds double precision) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF renew.ttl_seconds IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'ttl_seconds',
            MESSAGE = 'invalid ttl_seconds: it is required';
    END IF;
    PERFORM pggcl._check_seconds('ttl_seconds', renew.ttl_seconds);
    UPDATE pggcl.leases x SET expires_at = clock_timestamp() + make_interval(secs => renew.ttl_seconds)
    WHERE x.id = renew.lease_id;
    RETURN FOUND;
END
$$;

-- sql/80_hot_path.sql
-- The hot path's planner settings, in one place. These public functions run for every
-- acquire and release, so they pin: generic plans (planned once per connection, never
-- re-planned per call), no sequential scans (the first plan is made while the tables are
-- small, and must stay right as they grow), and no JIT (a plan costed high by the seqscan
-- penalty must not trigger a compile). Each function's own SET search_path stays on its
-- definition; these settings are added to it here, and pg_get_functiondef shows them all.
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

-- sql/90_privileges.sql
-- Who may do what. pggcl_user acquires, releases and reads; pggcl_admin also manages limits.
-- Public functions are SECURITY DEFINER with a pinned search_path; tables stay private.

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pggcl FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA pggcl FROM PUBLIC;
GRANT USAGE ON SCHEMA pggcl TO pggcl_user, pggcl_admin;

GRANT SELECT ON pggcl.limits, pggcl.holders, pggcl.queue TO pggcl_user;
-- The limits view computes each bucket's level with this (pure) function.
GRANT EXECUTE ON FUNCTION pggcl._decayed(double precision, double precision, timestamptz, timestamptz)
TO pggcl_user;
GRANT EXECUTE ON FUNCTION
    pggcl.try_acquire(text[], integer, text, boolean, double precision, text, integer),
    pggcl.acquire(text[], integer, text, boolean, double precision, text, integer, boolean, uuid),
    pggcl.take(text, integer, integer, text, uuid),
    pggcl.recheck(bigint, uuid),
    pggcl.cancel(bigint, uuid),
    pggcl.release(uuid),
    pggcl.renew(uuid, double precision),
    pggcl.open_session(double precision),
    pggcl.resume_session(integer, uuid),
    pggcl.close_session(integer, uuid),
    pggcl.heartbeat(integer),
    pggcl.reclaim()
TO pggcl_user;

GRANT EXECUTE ON FUNCTION
    pggcl.create_limit(text, integer, double precision, boolean),
    pggcl.update_limit(text, integer, double precision, boolean, text),
    pggcl.delete_limit(text)
TO pggcl_admin;

-- 0006's own helpers and columns, now unused.
DROP FUNCTION pggcl._may_act_for(integer);
DROP FUNCTION pggcl._is_manager();
ALTER TABLE pggcl.sessions DROP COLUMN channel, DROP COLUMN owner_role;

-- Internal helpers. None of these is part of the public API and none is granted to the pggcl
-- roles: the public functions (SECURITY DEFINER) call them as the schema owner.
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

-- The first key of every pggcl advisory lock; the second is the session id.
CREATE FUNCTION pggcl._lock_space() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 1885824867 $$;  -- 'pggc'

-- Rate-limit level of a limit at time `at`: `level` as it stood at `level_at`, decayed
-- continuously at `decay` slots per second since. Statements over pggcl.limit_state pass the
-- columns: a row-typed argument would make PostgreSQL build a copy of the whole row for every
-- call (measured: a third of an uncontended acquire's server time).
CREATE FUNCTION pggcl._decayed(level double precision, decay double precision, level_at timestamptz,
                               at timestamptz) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN level = 0 THEN 0::double precision
                ELSE greatest(0::double precision, level - decay * date_part('epoch', at - level_at)) END
$$;

-- Whether `occupy` more slots fit on a limit at `at`. Inactive limits always have room. The
-- tolerance absorbs float rounding so that a caller who waited exactly retry_after gets in.
CREATE FUNCTION pggcl._fits(active boolean, "limit" integer, held integer, level double precision,
                            decay double precision, level_at timestamptz, occupy integer,
                            at timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT NOT active OR held + pggcl._decayed(level, decay, level_at, at) + occupy <= "limit" + 1e-9
$$;

-- The same two for a limit_state value held in a PL/pgSQL variable.
CREATE FUNCTION pggcl._level(l pggcl.limit_state, at timestamptz) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT pggcl._decayed(l.level, l.slot_decay_per_second, l.level_at, at)
$$;

CREATE FUNCTION pggcl._has_room(l pggcl.limit_state, occupy integer, at timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT pggcl._fits(l.active, l."limit", l.held, l.level, l.slot_decay_per_second, l.level_at, occupy, at)
$$;

CREATE FUNCTION pggcl._valid_name(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT name IS NOT NULL AND name <> '' AND length(name) <= 255 AND name !~ '[/%&><]'
$$;

CREATE FUNCTION pggcl._valid_seconds(seconds double precision) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT seconds IS NULL OR (seconds > 0 AND seconds < 'Infinity')
$$;

-- Raise the error that says what is wrong with a name (the rules are in _valid_name).
CREATE FUNCTION pggcl._check_name(name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', MESSAGE = 'invalid limit name: it must not be empty';
    ELSIF length(name) > 255 THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', MESSAGE = format(
            'invalid limit name %L: it is %s characters long, at most 255 are allowed',
            left(name, 40) || '...', length(name));
    ELSIF name ~ '[/%&><]' THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', MESSAGE = format(
            'invalid limit name %L: it must not contain any of / %% & > <', name);
    END IF;
END
$$;

CREATE FUNCTION pggcl._check_limit_values(name text, "limit" integer, slot_decay_per_second double precision)
RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF "limit" < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', MESSAGE = format(
            'invalid limit for %L: %s; it must be 0 or more slots', name, "limit");
    END IF;
    IF NOT (slot_decay_per_second >= 0 AND slot_decay_per_second < 'Infinity') THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', MESSAGE = format(
            'invalid slot_decay_per_second for %L: %s; it must be a finite number, 0 or more',
            name, slot_decay_per_second);
    END IF;
END
$$;

CREATE FUNCTION pggcl._check_seconds(what text, seconds double precision) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF NOT pggcl._valid_seconds(seconds) THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', MESSAGE = format(
            'invalid %s: %s; it must be a finite number of seconds above 0', what, seconds);
    END IF;
END
$$;

-- The session this connection registered, if any (kept in a per-connection setting, so it
-- vanishes with the connection).
CREATE FUNCTION pggcl._connection_session() RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('pggcl.session_id', true), '')::integer
$$;

-- (PL/pgSQL, not SQL: a SQL function whose body has a subquery is never inlined, so it would be
-- parsed and planned again at every call.)
CREATE FUNCTION pggcl._session_exists(session_id integer) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT FROM pggcl.sessions s WHERE s.id = session_id AND NOT s.reclaimed);
END
$$;

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
-- alive by definition (and would not fail the probe: advisory locks are re-entrant).
CREATE FUNCTION pggcl._session_alive(session_id integer) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT session_id IS NOT DISTINCT FROM pggcl._connection_session()
        OR NOT pg_try_advisory_xact_lock(pggcl._lock_space(), session_id)
$$;

-- Seconds from `at` until `later` (0 when it has passed), NULL when `later` is NULL.
CREATE FUNCTION pggcl._seconds_until(later timestamptz, at timestamptz) RETURNS double precision STRICT
LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(0::double precision, extract(epoch FROM later - at)::double precision)
$$;

CREATE FUNCTION pggcl._notify(session_id integer, kind text, waiter_id bigint, detail text DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT pg_notify('pggcl_' || session_id,
                     kind || ':' || waiter_id || coalesce(':' || left(detail, 7000), ''))
$$;

-- Lock the given limits, in id order, and return their ids in that order.
-- (Helpers whose body is a query are PL/pgSQL, whose plans are cached; SQL functions that
-- cannot be inlined are planned anew at every call.)
CREATE FUNCTION pggcl._lock(ids bigint[]) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN (SELECT coalesce(array_agg(id), '{}') FROM (
        SELECT id FROM pggcl.limit_state WHERE id = ANY(ids) ORDER BY id FOR NO KEY UPDATE
    ) locked);
END
$$;

CREATE FUNCTION pggcl._intersect(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN (SELECT coalesce(array_agg(x), '{}') FROM unnest(a) x WHERE x = ANY(b));
END
$$;

-- Give slots to a request: the lease rows (concurrency mode) or the bucket level (rate-limit
-- mode). Slots are taken on the active limits only. The caller has checked room and holds the
-- locks.
CREATE FUNCTION pggcl._take(ids bigint[], active_ids bigint[], occupy integer, mode text,
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
CREATE FUNCTION pggcl._give_back(freed_limit_ids bigint[], freed_slots integer[]) RETURNS void
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

-- Count waiter rows removed from the given (locked) limits, one array element per row.
CREATE FUNCTION pggcl._dequeued(limit_ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF limit_ids IS NOT NULL THEN
        UPDATE pggcl.limit_state l SET queued = l.queued - c.n
        FROM (SELECT x AS id, count(*)::integer AS n FROM unnest(limit_ids) x GROUP BY x) c
        WHERE l.id = c.id;
    END IF;
END
$$;

-- Drop what a dead (or orphaned) session holds and waits for on the locked limits `ids`.
-- Its queue entries on other limits go when those limits are reaped in turn.
-- Lease rows are taken with SKIP LOCKED everywhere a limit lock is held: a row locked by
-- someone else is being released right now, and waiting for it could deadlock (a release
-- deletes its lease rows before it locks the limits).
CREATE FUNCTION pggcl._drop_session_claims(dead_session integer, ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    freed_limits bigint[];
    freed_slots integer[];
    dequeued bigint[];
BEGIN
    WITH gone AS (
        DELETE FROM pggcl.leases WHERE (id, limit_id) IN (
            SELECT id, limit_id FROM pggcl.leases
            WHERE limit_id = ANY(ids) AND session_id = dead_session FOR UPDATE SKIP LOCKED)
        RETURNING limit_id, occupy
    )
    SELECT array_agg(limit_id), array_agg(occupy) INTO freed_limits, freed_slots FROM gone;
    PERFORM pggcl._give_back(freed_limits, freed_slots);

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

-- The sessions with a claim on the limits `ids`: a lease or a queued request there.
CREATE FUNCTION pggcl._claimants(ids bigint[]) RETURNS TABLE (session_id integer)
LANGUAGE sql STABLE AS $$
    SELECT x.session_id FROM pggcl.leases x WHERE x.limit_id = ANY(ids) AND x.session_id IS NOT NULL
    UNION
    SELECT w.session_id FROM pggcl.waiters w WHERE w.limit_id = ANY(ids)
$$;

-- Reclaim what is dead on the locked limits `ids`: leases whose TTL passed, and the leases and
-- waiters of sessions whose connection has been gone for longer than their grace period.
-- Returns the next moment something here may expire (a TTL, the end of a grace), or NULL.
CREATE FUNCTION pggcl._reap(ids bigint[], at timestamptz) RETURNS timestamptz
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    next_at timestamptz;
    freed_limits bigint[];
    freed_slots integer[];
    owner record;
    alive boolean;
    s pggcl.sessions;
    dead_since timestamptz;
BEGIN
    WITH gone AS (
        DELETE FROM pggcl.leases WHERE (id, limit_id) IN (
            SELECT id, limit_id FROM pggcl.leases
            WHERE limit_id = ANY(ids) AND expires_at <= at FOR UPDATE SKIP LOCKED)
        RETURNING limit_id, occupy
    )
    SELECT array_agg(limit_id), array_agg(occupy) INTO freed_limits, freed_slots FROM gone;
    PERFORM pggcl._give_back(freed_limits, freed_slots);

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

-- Why a request can never be granted on these limits, or NULL when it can.
CREATE FUNCTION pggcl._impossible(ids bigint[], occupy integer, mode text) RETURNS text
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

-- Remove a waiter from every queue it is in. Its limits are locked.
CREATE FUNCTION pggcl._dequeue_waiter(waiter_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    WITH gone AS (DELETE FROM pggcl.waiters w WHERE w.id = waiter_id RETURNING w.limit_id)
    UPDATE pggcl.limit_state l SET queued = l.queued - 1 FROM gone WHERE l.id = gone.limit_id;
END
$$;

-- The grant step. On the locked limits `ids`, serve queued waiters in arrival order while room
-- exists. A waiter blocks every later waiter on each of its active limits (head-of-line
-- blocking: a large request is never starved by small ones). A waiter that also waits on limits
-- we have not locked is asked to re-check itself (it locks all its limits in order and runs this
-- step there). A waiter that can never be served (a limit was lowered below its request) is
-- removed and told why. Returns the ids of the waiters it granted.
CREATE FUNCTION pggcl._grant(ids bigint[], at timestamptz) RETURNS bigint[]
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
CREATE FUNCTION pggcl._serve(lim pggcl.limit_state, at timestamptz) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    w pggcl.waiters;
    notified boolean;
    granted bigint[] := '{}';
    general boolean := NOT lim.active;
    -- Each grant takes a slot or more: no more waiters than free slots can be served.
    most integer := greatest(1, floor(lim."limit" - lim.held - pggcl._level(lim, at) + 1e-9));
BEGIN
    IF lim.active THEN
        FOR w IN SELECT * FROM pggcl.waiters x WHERE x.limit_id = lim.id AND x.id > lim.queue_from
                 ORDER BY x.id LIMIT most LOOP
            IF cardinality(w.limit_ids) > 1 OR w.occupy > lim."limit"
               OR (w.mode = 'rate_limit' AND lim.slot_decay_per_second = 0) THEN
                general := true;
                EXIT;
            END IF;
            EXIT WHEN NOT pggcl._has_room(lim, w.occupy, at);
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
        IF cardinality(granted) > 0 THEN
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
CREATE FUNCTION pggcl._grant_general(ids bigint[], at timestamptz) RETURNS bigint[]
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
CREATE FUNCTION pggcl._retry_after(ids bigint[], occupy integer, before bigint, at timestamptz,
                                   next_at timestamptz)
RETURNS double precision
LANGUAGE plpgsql STABLE AS $$
DECLARE
    l pggcl.limit_state;
    ahead integer;
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

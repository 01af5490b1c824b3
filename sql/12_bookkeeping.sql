-- Internal: locking limits, and the changes made on locked limits. Each function here keeps
-- the counters of limit_state (`held`, `queued`) equal to the rows they count (leases, waiters),
-- and counts what it did (grants, enqueued, gave_up, ...: see 00_schema.sql) in that same UPDATE.
-- (Helpers whose body is a query are PL/pgSQL, whose plans are cached; SQL functions that
-- cannot be inlined are planned anew at every call.)
--
-- Lease rows are taken with SKIP LOCKED everywhere a limit lock is held: a row locked by
-- someone else is being released right now, and waiting for it could deadlock (a release
-- deletes its lease rows before it locks the limits).

-- Lock the given limits, in id order, and return their ids in that order.
CREATE FUNCTION pggcl._lock(ids bigint[]) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN (SELECT coalesce(array_agg(id), '{}') FROM (
        SELECT id FROM pggcl.limit_state WHERE id = ANY(ids) ORDER BY id FOR NO KEY UPDATE
    ) locked);
END
$$;

-- Lock the limits named `names` that exist, in id order (so that no two calls deadlock), and
-- return their rows as locked.
CREATE FUNCTION pggcl._lock_named(names text[]) RETURNS pggcl.limit_state[]
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

-- Create the limits of `wanted` missing from `locked`: each that matches a template (see
-- 25_templates.sql) active, with the template's values, the others inactive (they block
-- nobody); and return the names created inactive (NULL: none). With `strict`, raise GC006
-- naming those that match no template instead. A name that is itself a pattern is refused (GC003: a template
-- holds no slots). A limit created meanwhile by someone else is left as it is. Creating
-- instances of a template sweeps a few of its idle ones away.
CREATE FUNCTION pggcl._create_missing(wanted text[], locked pggcl.limit_state[], strict boolean)
RETURNS text[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    at timestamptz := clock_timestamp();
    missing text[] := array(SELECT x FROM unnest(wanted) x
                            WHERE x <> ALL(array(SELECT (s).name FROM unnest(locked) s)));
    x text;
    t pggcl.limit_templates;
    new_id bigint;
    inactive text[] := '{}';
    templates bigint[] := '{}';
    spared bigint[] := array(SELECT (s).id FROM unnest(locked) s);
BEGIN
    FOREACH x IN ARRAY missing LOOP
        IF pggcl._is_pattern(x) THEN
            RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'names', MESSAGE = format(
                'invalid names: %L is a template (a name with *), which holds no slots; ask for '
                'a limit it makes, such as %L', x, replace(x, '*', 'x'));
        END IF;
    END LOOP;
    FOREACH x IN ARRAY missing LOOP
        SELECT * INTO t FROM pggcl._template_for(x);
        IF t.id IS NULL THEN
            inactive := inactive || x;
            CONTINUE;
        END IF;
        INSERT INTO pggcl.limit_state (name, "limit", slot_decay_per_second, active)
        VALUES (x, t."limit", t.slot_decay_per_second, t.active)
        ON CONFLICT ON CONSTRAINT limit_state_name_key DO NOTHING
        RETURNING id INTO new_id;
        IF new_id IS NOT NULL THEN
            INSERT INTO pggcl.limit_instances (limit_id, template_id) VALUES (new_id, t.id);
            templates := templates || t.id;
            spared := spared || new_id;
        END IF;
        t := NULL;
        new_id := NULL;
    END LOOP;
    IF strict AND cardinality(inactive) > 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'GC006', MESSAGE = format('no such limit: %s',
            array_to_string(array(SELECT quote_literal(y) FROM unnest(inactive) y), ', '));
    END IF;
    INSERT INTO pggcl.limit_state (name, "limit", active)
    SELECT y, 1, false FROM unnest(inactive) y
    ON CONFLICT ON CONSTRAINT limit_state_name_key DO NOTHING;
    PERFORM pggcl._sweep_instances(u.id, spared, 4, at)
    FROM (SELECT DISTINCT y AS id FROM unnest(templates) y) u;
    RETURN nullif(inactive, '{}');
END
$$;

-- Give slots to a request: the lease rows (concurrency mode) or the bucket level (rate-limit
-- mode). Slots are taken on the active limits only; the grant is counted on every limit of the
-- request (inactive ones too). The caller has checked room and holds the locks. A lease without
-- a session is its role's (owner_role).
CREATE FUNCTION pggcl._take(ids bigint[], active_ids bigint[], occupy integer, mode text,
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
        UPDATE pggcl.limit_state l
        SET held = l.held + CASE WHEN l.id = ANY(active_ids) THEN occupy ELSE 0 END, grants = l.grants + 1
        WHERE l.id = ANY(ids);
    ELSE
        UPDATE pggcl.limit_state l
        SET level = CASE WHEN l.id = ANY(active_ids)
                         THEN pggcl._decayed(l.level, l.slot_decay_per_second, l.level_at, at) + occupy
                         ELSE l.level END,
            level_at = CASE WHEN l.id = ANY(active_ids) THEN at ELSE l.level_at END,
            grants = l.grants + 1
        WHERE l.id = ANY(ids);
    END IF;
END
$$;

-- Give back the slots of deleted lease rows (one array element per row: its limit, slots and
-- when it was granted), summed per limit, and count their hold times up to `at`; `reclaimed`:
-- they were taken from dead holders or expired, and their slots count as reclaimed_slots.
CREATE FUNCTION pggcl._give_back(freed_limit_ids bigint[], freed_slots integer[], held_since timestamptz[],
                                 at timestamptz, reclaimed boolean) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    held_for double precision;
BEGIN
    IF cardinality(freed_limit_ids) = 1 THEN
        held_for := pggcl._seconds(held_since[1], at);
        UPDATE pggcl.limit_state
        SET held = held - freed_slots[1],
            reclaimed_slots = reclaimed_slots + CASE WHEN reclaimed THEN freed_slots[1] ELSE 0 END,
            hold_seconds_sum = hold_seconds_sum + held_for,
            hold_buckets[pggcl._bucket(held_for)] = hold_buckets[pggcl._bucket(held_for)] + 1
        WHERE id = freed_limit_ids[1];
    ELSIF cardinality(freed_limit_ids) > 1 THEN
        UPDATE pggcl.limit_state l
        SET held = l.held - f.slots,
            reclaimed_slots = l.reclaimed_slots + CASE WHEN reclaimed THEN f.slots ELSE 0 END,
            hold_seconds_sum = l.hold_seconds_sum + f.seconds,
            hold_buckets = pggcl._counted(l.hold_buckets, f.buckets)
        FROM (SELECT u.limit_id, sum(u.slots)::integer AS slots, sum(pggcl._seconds(u.since, at)) AS seconds,
                     array_agg(pggcl._bucket(pggcl._seconds(u.since, at))) AS buckets
              FROM unnest(freed_limit_ids, freed_slots, held_since) AS u(limit_id, slots, since)
              GROUP BY u.limit_id) f
        WHERE l.id = f.limit_id;
    END IF;
END
$$;

-- Drop the lease rows on the locked limits `ids` that belong to the session `of_session` or
-- that expired by `expired_by` (callers give one of the two, the other NULL matches nothing),
-- and give their slots back, their hold ending `at` (`reclaimed`: see _give_back). Rows locked
-- by someone else are skipped (see above).
CREATE FUNCTION pggcl._drop_leases(ids bigint[], of_session integer, expired_by timestamptz,
                                   at timestamptz, reclaimed boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    freed_limits bigint[];
    freed_slots integer[];
    held_since timestamptz[];
BEGIN
    WITH gone AS (
        DELETE FROM pggcl.leases WHERE (id, limit_id) IN (
            SELECT x.id, x.limit_id FROM pggcl.leases x
            WHERE x.limit_id = ANY(ids) AND (x.session_id = of_session OR x.expires_at <= expired_by)
            FOR UPDATE SKIP LOCKED)
        RETURNING limit_id, occupy, acquired_at
    )
    SELECT array_agg(limit_id), array_agg(occupy), array_agg(acquired_at)
      INTO freed_limits, freed_slots, held_since FROM gone;
    PERFORM pggcl._give_back(freed_limits, freed_slots, held_since, at, reclaimed);
END
$$;

-- Count waiter rows removed from the given (locked) limits without a grant (their session
-- closed or died: they gave up), one array element per row.
CREATE FUNCTION pggcl._dequeued(limit_ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF limit_ids IS NOT NULL THEN
        UPDATE pggcl.limit_state l SET queued = l.queued - c.n, gave_up = l.gave_up + c.n
        FROM (SELECT x AS id, count(*)::integer AS n FROM unnest(limit_ids) x GROUP BY x) c
        WHERE l.id = c.id;
    END IF;
END
$$;

-- Where a request that arrives `at` with `priority` (a head start in seconds) stands in every
-- queue: the first part of the order (serve_key, id) in which queues are served.
CREATE FUNCTION pggcl._serve_key(at timestamptz, priority double precision) RETURNS double precision
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN extract(epoch FROM at)::double precision - priority;
END
$$;

-- Whether no waiter of the locked limit `limit_id` is ahead of a request at `key` (see
-- _serve_key): a waiter at the same key arrived first, and is ahead. Dead sessions' waiters
-- keep their place here as in the queue (see _serve).
CREATE FUNCTION pggcl._nobody_ahead(limit_id bigint, key double precision) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN NOT EXISTS (SELECT FROM pggcl.waiters w
                       WHERE w.limit_id = _nobody_ahead.limit_id AND w.serve_key <= key);
END
$$;

-- Queue a request on the locked limits `ids`: one waiter row per limit, all under one new id
-- (ids grow with arrival), at `key` (_serve_key), counted in `queued`. A key before where a
-- queue's reading starts (queue_from_key, queue_from) moves that start back to just before it.
-- Returns the waiter id.
CREATE FUNCTION pggcl._enqueue(ids bigint[], occupy integer, mode text, lease_id uuid,
                               session_id integer, holder text, ttl_seconds double precision,
                               at timestamptz, priority double precision, key double precision)
RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    waiter_id bigint := nextval('pggcl.waiter_id_seq');
BEGIN
    INSERT INTO pggcl.waiters (id, limit_id, limit_ids, session_id, lease_id, occupy, mode, holder,
                               ttl_seconds, enqueued_at, priority, serve_key)
    SELECT waiter_id, x, ids, session_id, lease_id, occupy, mode, holder, ttl_seconds, at,
           priority, key
    FROM unnest(ids) x;
    UPDATE pggcl.limit_state l
    SET queued = l.queued + 1, enqueued = l.enqueued + 1,
        queue_from_key = CASE WHEN (key, waiter_id) <= (l.queue_from_key, l.queue_from)
                              THEN key ELSE l.queue_from_key END,
        queue_from = CASE WHEN (key, waiter_id) <= (l.queue_from_key, l.queue_from)
                          THEN waiter_id - 1 ELSE l.queue_from END
    WHERE l.id = ANY(ids);
    RETURN waiter_id;
END
$$;

-- Remember that the queued rate-limit waiter `waiter_id` was granted (see pggcl.rate_grants),
-- and forget the grants older than an hour: a client asks about its waiter within seconds,
-- and only while its session lives.
CREATE FUNCTION pggcl._record_rate_grant(waiter_id bigint, session_id integer, at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    DELETE FROM pggcl.rate_grants g
    WHERE g.granted_at OPERATOR(pg_catalog.<)
          (_record_rate_grant.at OPERATOR(pg_catalog.-) '1 hour'::pg_catalog.interval);
    INSERT INTO pggcl.rate_grants (waiter_id, session_id, granted_at)
    VALUES (_record_rate_grant.waiter_id, _record_rate_grant.session_id, _record_rate_grant.at)
    ON CONFLICT DO NOTHING;
END
$$;

-- Remove a waiter from every queue it is in; its limits are locked. False when it was in none.
-- `outcome` is counted: 'granted' (its wait, enqueued to `at`; the grant itself is _take's),
-- 'gave_up' or 'rejected'.
CREATE FUNCTION pggcl._dequeue_waiter(waiter_id bigint, outcome text, at timestamptz) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF outcome = 'granted' THEN
        WITH gone AS (
            DELETE FROM pggcl.waiters w WHERE w.id = waiter_id
            RETURNING w.limit_id, pggcl._seconds(w.enqueued_at, at) AS waited
        )
        UPDATE pggcl.limit_state l
        SET queued = l.queued - 1, wait_seconds_sum = l.wait_seconds_sum + gone.waited,
            wait_buckets[pggcl._bucket(gone.waited)] = l.wait_buckets[pggcl._bucket(gone.waited)] + 1
        FROM gone WHERE l.id = gone.limit_id;
    ELSE
        WITH gone AS (DELETE FROM pggcl.waiters w WHERE w.id = waiter_id RETURNING w.limit_id)
        UPDATE pggcl.limit_state l
        SET queued = l.queued - 1,
            gave_up = l.gave_up + CASE WHEN outcome = 'gave_up' THEN 1 ELSE 0 END,
            rejected = l.rejected + CASE WHEN outcome = 'rejected' THEN 1 ELSE 0 END
        FROM gone WHERE l.id = gone.limit_id;
    END IF;
    RETURN FOUND;
END
$$;

-- Drop what a session holds and waits for on the locked limits `ids` (a dead, reclaimed or
-- orphaned session, or one being closed), and forget a reclaimed session once nothing of it
-- is left. Its claims on other limits go when those limits are reaped in turn. `reclaimed`:
-- its slots count as reclaimed (not when it is closed).
CREATE FUNCTION pggcl._drop_session_claims(dead_session integer, ids bigint[], at timestamptz,
                                           reclaimed boolean) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    dequeued bigint[];
BEGIN
    PERFORM pggcl._drop_leases(ids, dead_session, NULL, at, reclaimed);

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

-- Reading and managing limits: the public views and create/update/delete.

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

-- Whether each session is alive now, read without a probe (private: the views below read it
-- as their owner). A session is alive while its own backend (backend_pid, started at
-- backend_start) holds its session-level advisory lock (1885824867, id): pg_locks shows that to
-- every role, and reading it takes no lock (a probe, pg_try_advisory_xact_lock, would hold the
-- dead session's lock until the reader's transaction ended; and would count a lock that
-- someone else took once the session died). `expired`: dead and past its grace, counted from
-- when it was first seen dead (_dead_since: this read may be the first), or reclaimed.
CREATE VIEW pggcl._sessions_seen AS
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

-- Every limit with its occupancy now (never a stale stored number). Waiters of dead sessions
-- are not counted in `waiting`, nor the slots of dead sessions past their grace in
-- `held_slots` (whether or not anyone reclaimed them yet: see _dead_since): they are gone the
-- moment anyone next locks the limit.
-- active_slots = held_slots + decaying_slots.
-- Then the counters, which only grow (docs/protocol.md says what each counts): grants,
-- enqueued, denied, gave_up, rejected, reclaimed_slots; the wait time of every grant (0 s for
-- one granted at once) and the hold time of every lease row that ended, in seconds, each as a
-- count, a sum and cumulative buckets: element i counts those of at most the i-th bound of
-- 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 600 s and +Inf (the 12th equals the count),
-- as Prometheus histograms have them. They are read from the limit's row as it stands, without
-- a lock: reading never holds up an acquire.
-- Last, for a limit made from a template (revision 0013): the template's name, and whether the
-- limit was changed individually since (then a change of the template leaves it alone).
CREATE VIEW pggcl.limits AS
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
       r.decaying AS decaying_slots,
       l.grants,
       l.enqueued,
       l.denied,
       l.gave_up,
       l.rejected,
       l.reclaimed_slots,
       l.grants AS wait_seconds_count,
       l.wait_seconds_sum,
       h.wait_seconds_buckets,
       h.hold_seconds_count,
       l.hold_seconds_sum,
       h.hold_seconds_buckets,
       (SELECT t.pattern FROM pggcl.limit_templates t WHERE t.id OPERATOR(pg_catalog.=) i.template_id)
           AS template,
       coalesce(i.customized, false) AS customized
FROM pggcl.limit_state l
     LEFT JOIN pggcl.limit_instances i ON i.limit_id OPERATOR(pg_catalog.=) l.id,
     LATERAL (SELECT pggcl._decayed(l.level, l.slot_decay_per_second, l.level_at, clock_timestamp())
                     AS decaying) r,
     -- The stored buckets count one event each and, for waits, only the grants that queued:
     -- made cumulative here, the grants at once (0 s) added to every bucket.
     LATERAL (SELECT (SELECT array_agg(x.n ORDER BY x.i) FROM (
                          SELECT b.i, (l.grants - sum(b.n) OVER () + sum(b.n) OVER (ORDER BY b.i))::bigint AS n
                          FROM unnest(l.wait_buckets) WITH ORDINALITY b(n, i)) x) AS wait_seconds_buckets,
                     (SELECT array_agg(x.n ORDER BY x.i) FROM (
                          SELECT b.i, (sum(b.n) OVER (ORDER BY b.i))::bigint AS n
                          FROM unnest(l.hold_buckets) WITH ORDINALITY b(n, i)) x) AS hold_seconds_buckets,
                     (SELECT sum(b)::bigint FROM unnest(l.hold_buckets) b) AS hold_seconds_count) h,
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
CREATE VIEW pggcl.holders AS
SELECT le.id AS lease_id, l.name, le.occupy AS slots, le.holder, le.session_id,
       le.acquired_at AS since, le.expires_at AS expires
FROM pggcl.leases le JOIN pggcl.limit_state l ON l.id = le.limit_id
     LEFT JOIN pggcl._sessions_seen v ON v.id = le.session_id
WHERE le.session_id IS NULL OR v.expired IS false;
COMMENT ON VIEW pggcl.holders IS 'Slots held by leases, one row per lease and limit';

-- Who waits, in the order they will be served on each limit (position 1 is next: arrival less
-- priority, then arrival; see _serve_key), with the head start each asked: the waiters of live
-- sessions only.
CREATE VIEW pggcl.queue AS
SELECT w.id AS waiter_id, l.name,
       row_number() OVER (PARTITION BY w.limit_id ORDER BY w.serve_key, w.id)::integer AS position,
       w.occupy, w.mode, w.holder, w.session_id, w.enqueued_at AS since, w.priority
FROM pggcl.waiters w JOIN pggcl.limit_state l ON l.id = w.limit_id
     JOIN pggcl._sessions_seen v ON v.id = w.session_id AND v.alive;
COMMENT ON VIEW pggcl.queue IS 'Queued requests per limit, in the order they will be served';

-- Create a limit, or a template when the name contains `*` (25_templates.sql; idle_seconds,
-- default an hour, is a template's alone). Raises GC002 when the name is taken, GC003 on a bad
-- name or value (its COLUMN field names the parameter).
CREATE FUNCTION pggcl.create_limit(name text, "limit" integer,
                                   slot_decay_per_second double precision DEFAULT 0,
                                   active boolean DEFAULT true,
                                   idle_seconds double precision DEFAULT NULL)
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
    IF pggcl._is_pattern(create_limit.name) THEN
        RETURN pggcl._template_as_limit(pggcl._create_template(
            create_limit.name, create_limit."limit", create_limit.slot_decay_per_second,
            create_limit.active, create_limit.idle_seconds));
    ELSIF create_limit.idle_seconds IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'idle_seconds', MESSAGE = format(
            'invalid idle_seconds for %L: only a template (a name with *) has one', create_limit.name);
    END IF;
    IF EXISTS (SELECT FROM pggcl.limit_templates t WHERE t.pattern = create_limit.name) THEN
        RAISE EXCEPTION USING ERRCODE = 'GC002', MESSAGE = format('template %L already exists', create_limit.name);
    END IF;
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
-- A template (a name with `*` that is no limit) changes with its instances not changed
-- individually (25_templates.sql); an instance changed here is changed individually from then
-- on. idle_seconds is a template's alone; a template cannot be renamed.
-- Raises GC001 when the limit does not exist, GC002 when `new_name` is taken, GC003 on a bad
-- name or value.
CREATE FUNCTION pggcl.update_limit(name text, "limit" integer DEFAULT NULL,
                                   slot_decay_per_second double precision DEFAULT NULL,
                                   active boolean DEFAULT NULL, new_name text DEFAULT NULL,
                                   idle_seconds double precision DEFAULT NULL)
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
    IF NOT FOUND AND pggcl._is_pattern(update_limit.name) THEN
        IF update_limit.new_name IS NOT NULL AND update_limit.new_name <> update_limit.name THEN
            RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'new_name', MESSAGE = format(
                'invalid new_name for %L: a template cannot be renamed (create another)', update_limit.name);
        END IF;
        RETURN pggcl._template_as_limit(pggcl._update_template(
            update_limit.name, update_limit."limit", update_limit.slot_decay_per_second,
            update_limit.active, update_limit.idle_seconds, at));
    ELSIF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'GC001', MESSAGE = format('limit %L does not exist', update_limit.name);
    ELSIF update_limit.idle_seconds IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'idle_seconds', MESSAGE = format(
            'invalid idle_seconds for %L: only a template (a name with *) has one', update_limit.name);
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
    IF num_nonnulls(update_limit."limit", update_limit.slot_decay_per_second, update_limit.active) > 0 THEN
        UPDATE pggcl.limit_instances i SET customized = true WHERE i.limit_id = l.id AND NOT i.customized;
    END IF;
    PERFORM pggcl._grant(ARRAY[l.id], at);
    SELECT * INTO result FROM pggcl.limits v WHERE v.name = coalesce(new_name, l.name);
    RETURN result;
END
$$;

-- Delete a limit; false when there was none. Its waiters proceed as if the limit were missing
-- (a waiter that also waits on other limits goes on waiting for those). Deleting a template
-- leaves its instances as plain limits (they may be in use).
CREATE FUNCTION pggcl.delete_limit(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at timestamptz := clock_timestamp();
    doomed bigint;
    w record;
    template bigint;
BEGIN
    SELECT id INTO doomed FROM pggcl.limit_state s WHERE s.name = delete_limit.name FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        DELETE FROM pggcl.limit_templates t WHERE t.pattern = delete_limit.name RETURNING t.id INTO template;
        IF template IS NOT NULL THEN
            DELETE FROM pggcl.limit_instances i WHERE i.template_id = template;
        END IF;
        RETURN template IS NOT NULL;
    END IF;
    DELETE FROM pggcl.limit_instances i WHERE i.limit_id = doomed;
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

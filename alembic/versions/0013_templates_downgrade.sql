-- Revision 0013, downgrade to 0012: templates go (their instances stay, as plain limits),
-- and the functions and the view pggcl.limits are 0012's again. Frozen once released.
DROP VIEW pggcl.templates;
DROP FUNCTION pggcl.create_limit(text, integer, double precision, boolean, double precision);
DROP FUNCTION pggcl.update_limit(text, integer, double precision, boolean, text, double precision);
DROP FUNCTION pggcl._template_as_limit(pggcl.limit_templates);
DROP FUNCTION pggcl._create_template(text, integer, double precision, boolean, double precision);
DROP FUNCTION pggcl._update_template(text, integer, double precision, boolean, double precision, timestamptz);
DROP FUNCTION pggcl._sweep_instances(bigint, bigint[], integer, timestamptz);
DROP FUNCTION pggcl._template_for(text);
DROP FUNCTION pggcl._check_idle_seconds(text, double precision);
DROP FUNCTION pggcl._is_pattern(text);
DROP VIEW pggcl.limits;

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
       h.hold_seconds_buckets
FROM pggcl.limit_state l,
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

CREATE FUNCTION pggcl.create_limit(name text, "limit" integer,
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

CREATE FUNCTION pggcl.update_limit(name text, "limit" integer DEFAULT NULL,
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

CREATE OR REPLACE FUNCTION pggcl.reclaim() RETURNS double precision
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[] := array(SELECT limit_id FROM pggcl.leases UNION SELECT limit_id FROM pggcl.waiters);
BEGIN
    PERFORM pggcl._mark_squatted(ids, clock_timestamp());
    RETURN pggcl._reclaim(ids);
END
$$;

DROP TABLE pggcl.limit_instances;
DROP TABLE pggcl.limit_templates;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pggcl FROM PUBLIC;
GRANT SELECT ON pggcl.limits TO pggcl_user;
GRANT EXECUTE ON FUNCTION
    pggcl.create_limit(text, integer, double precision, boolean),
    pggcl.update_limit(text, integer, double precision, boolean, text)
TO pggcl_admin;

DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure
        FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
        WHERE p.pronamespace = 'pggcl'::regnamespace AND l.lanname = 'plpgsql'
          AND NOT coalesce(p.proconfig, '{}') @> ARRAY['search_path=pg_catalog, pg_temp']
        ORDER BY 1
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END
$$;

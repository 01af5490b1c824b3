-- Revision 0013, upgrade from 0012. Frozen once released: never edit this file; a change
-- to the engine is a new revision.
-- What 0013 adds (issue #15, templates): a limit name with `*` is a template; a request naming
-- a missing limit that matches one creates that limit active with the template's values;
-- changing a template changes its instances not changed individually; idle instances are
-- swept away by the paths that create instances and by reclaim(). New: tables
-- pggcl.limit_templates and pggcl.limit_instances, the view pggcl.templates, the columns
-- `template` and `customized` at the end of pggcl.limits, the parameter idle_seconds of
-- create_limit and update_limit (last, default NULL: positional calls are unchanged).
-- created_limits of acquire names only the limits created inactive (instances are not).

CREATE TABLE pggcl.limit_templates (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pattern text NOT NULL UNIQUE,
    like_pattern text NOT NULL,
    literal_length integer NOT NULL,
    "limit" integer NOT NULL,
    slot_decay_per_second double precision NOT NULL DEFAULT 0,
    active boolean NOT NULL DEFAULT true,
    idle_seconds double precision NOT NULL DEFAULT 3600,
    sweep_after bigint NOT NULL DEFAULT 0,
    created timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE pggcl.limit_instances (
    limit_id bigint PRIMARY KEY,
    template_id bigint NOT NULL,
    customized boolean NOT NULL DEFAULT false,
    idle_seen_at timestamptz,
    idle_activity bigint
);

CREATE INDEX limit_instances_template_idx ON pggcl.limit_instances (template_id, limit_id);

REVOKE ALL ON pggcl.limit_templates, pggcl.limit_instances FROM PUBLIC;

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

-- Whether `name` is a template's pattern.
CREATE FUNCTION pggcl._is_pattern(name text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN strpos(name, '*') > 0;
END
$$;

-- The template a missing limit named `name` is made from (no row: none matches).
CREATE FUNCTION pggcl._template_for(name text) RETURNS SETOF pggcl.limit_templates
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT * FROM pggcl.limit_templates t
    WHERE _template_for.name LIKE t.like_pattern
    ORDER BY t.literal_length DESC, t.pattern
    LIMIT 1;
END
$$;

-- Raise GC003 unless idle_seconds (of a template; `name`, for the message) is NULL or a
-- number of seconds above 0 and at most 10 years.
CREATE FUNCTION pggcl._check_idle_seconds(name text, idle_seconds double precision) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF idle_seconds IS NOT NULL AND NOT (idle_seconds > 0 AND idle_seconds <= 315360000) THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'idle_seconds', MESSAGE = format(
            'invalid idle_seconds for %L: %s; it must be a number of seconds above 0 and at '
            'most 315360000 (10 years)', name, idle_seconds);
    END IF;
END
$$;

-- A template as a row of pggcl.limits (what create_limit and update_limit return): its name
-- and values, nothing held or counted.
CREATE FUNCTION pggcl._template_as_limit(t pggcl.limit_templates) RETURNS pggcl.limits
LANGUAGE plpgsql STABLE AS $$
DECLARE
    result pggcl.limits;
    zeros bigint[] := '{0,0,0,0,0,0,0,0,0,0,0,0}';
BEGIN
    result.name := t.pattern;
    result."limit" := t."limit";
    result.active := t.active;
    result.active_slots := 0;
    result.slot_decay_per_second := t.slot_decay_per_second;
    result.waiting := 0;
    result.created := t.created;
    result.updated := t.updated;
    result.held_slots := 0;
    result.decaying_slots := 0;
    result.grants := 0;
    result.enqueued := 0;
    result.denied := 0;
    result.gave_up := 0;
    result.rejected := 0;
    result.reclaimed_slots := 0;
    result.wait_seconds_count := 0;
    result.wait_seconds_sum := 0;
    result.wait_seconds_buckets := zeros;
    result.hold_seconds_count := 0;
    result.hold_seconds_sum := 0;
    result.hold_seconds_buckets := zeros;
    result.template := NULL;
    result.customized := false;
    RETURN result;
END
$$;

-- Create the template `pattern`. GC002 when a template or a limit of that name exists.
CREATE FUNCTION pggcl._create_template(pattern text, "limit" integer, slot_decay_per_second double precision,
                                       active boolean, idle_seconds double precision)
RETURNS pggcl.limit_templates
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    t pggcl.limit_templates;
BEGIN
    PERFORM pggcl._check_idle_seconds(pattern, idle_seconds);
    IF EXISTS (SELECT FROM pggcl.limit_state s WHERE s.name = pattern) THEN
        RAISE EXCEPTION USING ERRCODE = 'GC002', MESSAGE = format('limit %L already exists', pattern);
    END IF;
    INSERT INTO pggcl.limit_templates AS x (pattern, like_pattern, literal_length, "limit",
                                            slot_decay_per_second, active, idle_seconds)
    VALUES (_create_template.pattern,
            replace(replace(replace(_create_template.pattern, '\', '\\'), '_', '\_'), '*', '_%'),
            length(replace(_create_template.pattern, '*', '')), _create_template."limit",
            coalesce(_create_template.slot_decay_per_second, 0), coalesce(_create_template.active, true),
            coalesce(_create_template.idle_seconds, 3600))
    ON CONFLICT ON CONSTRAINT limit_templates_pattern_key DO NOTHING
    RETURNING * INTO t;
    IF t.id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'GC002', MESSAGE = format('template %L already exists', pattern);
    END IF;
    RETURN t;
END
$$;

-- Change the template `pattern` (NULL leaves a value as it is) and, the same way, every
-- instance of it not changed individually; room added lets their queued waiters in. The
-- instances are locked in id order, as every acquire locks them. GC001 when there is none.
CREATE FUNCTION pggcl._update_template(pattern text, "limit" integer, slot_decay_per_second double precision,
                                       active boolean, idle_seconds double precision, at timestamptz)
RETURNS pggcl.limit_templates
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    t pggcl.limit_templates;
    ids bigint[];
BEGIN
    PERFORM pggcl._check_idle_seconds(pattern, idle_seconds);
    UPDATE pggcl.limit_templates x
    SET "limit" = coalesce(_update_template."limit", x."limit"),
        slot_decay_per_second = coalesce(_update_template.slot_decay_per_second, x.slot_decay_per_second),
        active = coalesce(_update_template.active, x.active),
        idle_seconds = coalesce(_update_template.idle_seconds, x.idle_seconds),
        updated = at
    WHERE x.pattern = _update_template.pattern
    RETURNING * INTO t;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'GC001', MESSAGE = format('template %L does not exist', pattern);
    END IF;
    IF num_nonnulls("limit", slot_decay_per_second, active) = 0 THEN
        RETURN t;
    END IF;
    ids := pggcl._lock(array(SELECT i.limit_id FROM pggcl.limit_instances i
                             WHERE i.template_id = t.id AND NOT i.customized));
    -- Materialise each level with the old decay rate first, so a new rate applies from now on.
    UPDATE pggcl.limit_state s
    SET level = pggcl._decayed(s.level, s.slot_decay_per_second, s.level_at, at), level_at = at,
        "limit" = t."limit", slot_decay_per_second = t.slot_decay_per_second, active = t.active,
        updated = at
    WHERE s.id = ANY(ids);
    PERFORM pggcl._grant(ids, at);
    RETURN t;
END
$$;

-- Remove idle instances of the template `template_id`: look at up to `how_many` instances,
-- in id order from where the last sweep stopped (so that every instance is looked at in
-- turn), leaving `spared` (limits the caller has locked) alone. An instance is idle when it
-- has no lease, no waiter and an empty bucket; it is removed once a sweep has seen it idle
-- for idle_seconds with no grant, queued request or refusal in between. Takes no lock anyone
-- waits for: the template's row and each limit row are skipped when someone else holds them.
CREATE FUNCTION pggcl._sweep_instances(template_id bigint, spared bigint[], how_many integer, at timestamptz)
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    t pggcl.limit_templates;
    i pggcl.limit_instances;
    l pggcl.limit_state;
    activity bigint;
    idle boolean;
    last_seen bigint;
    removed integer := 0;
BEGIN
    SELECT * INTO t FROM pggcl.limit_templates x WHERE x.id = _sweep_instances.template_id
    FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    last_seen := t.sweep_after;
    FOR i IN
        (SELECT * FROM pggcl.limit_instances x
         WHERE x.template_id = t.id AND x.limit_id > t.sweep_after ORDER BY x.limit_id LIMIT how_many)
        UNION ALL
        (SELECT * FROM pggcl.limit_instances x
         WHERE x.template_id = t.id AND x.limit_id <= t.sweep_after ORDER BY x.limit_id LIMIT how_many)
        LIMIT how_many
    LOOP
        last_seen := i.limit_id;
        CONTINUE WHEN i.limit_id = ANY(spared);
        SELECT * INTO l FROM pggcl.limit_state s WHERE s.id = i.limit_id FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        activity := l.grants + l.enqueued + l.denied;
        idle := l.held = 0 AND l.queued = 0
                AND pggcl._decayed(l.level, l.slot_decay_per_second, l.level_at, at) = 0
                AND NOT EXISTS (SELECT FROM pggcl.leases x WHERE x.limit_id = l.id)
                AND NOT EXISTS (SELECT FROM pggcl.waiters x WHERE x.limit_id = l.id);
        IF NOT idle THEN
            IF i.idle_seen_at IS NOT NULL THEN
                UPDATE pggcl.limit_instances x SET idle_seen_at = NULL, idle_activity = NULL
                WHERE x.limit_id = i.limit_id;
            END IF;
        ELSIF i.idle_seen_at IS NULL OR i.idle_activity IS DISTINCT FROM activity THEN
            UPDATE pggcl.limit_instances x SET idle_seen_at = at, idle_activity = activity
            WHERE x.limit_id = i.limit_id;
        ELSIF i.idle_seen_at + make_interval(secs => t.idle_seconds) <= at THEN
            DELETE FROM pggcl.limit_instances x WHERE x.limit_id = i.limit_id;
            DELETE FROM pggcl.limit_state s WHERE s.id = i.limit_id;
            removed := removed + 1;
        END IF;
    END LOOP;
    UPDATE pggcl.limit_templates x SET sweep_after = last_seen WHERE x.id = t.id;
    RETURN removed;
END
$$;

-- Every template with its number of instances (limits made from it that still exist).
CREATE VIEW pggcl.templates AS
SELECT t.pattern AS name, t."limit", t.slot_decay_per_second, t.active, t.idle_seconds,
       (SELECT pg_catalog.count(*) FROM pggcl.limit_instances i
        WHERE i.template_id OPERATOR(pg_catalog.=) t.id)::integer AS instances,
       t.created, t.updated
FROM pggcl.limit_templates t;
COMMENT ON VIEW pggcl.templates IS 'Limit templates (names with *), with how many instances each has';

CREATE OR REPLACE FUNCTION pggcl._create_missing(wanted text[], locked pggcl.limit_state[], strict boolean)
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

DROP FUNCTION pggcl.create_limit(text, integer, double precision, boolean);

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

DROP FUNCTION pggcl.update_limit(text, integer, double precision, boolean, text);

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

CREATE OR REPLACE FUNCTION pggcl.delete_limit(name text) RETURNS boolean
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

CREATE OR REPLACE FUNCTION pggcl.reclaim() RETURNS double precision
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

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pggcl FROM PUBLIC;
GRANT SELECT ON pggcl.templates TO pggcl_user;
GRANT EXECUTE ON FUNCTION
    pggcl.create_limit(text, integer, double precision, boolean, double precision),
    pggcl.update_limit(text, integer, double precision, boolean, text, double precision)
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

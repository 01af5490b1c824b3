-- Templates: per-key limits created on first use (issue #15). A limit name that contains `*` is
-- a template (`tenant:*`); `*` matches one or more characters. A request naming a missing limit
-- that matches a template creates that limit, an instance, active with the template's values
-- (in _create_missing, atomically with the request). When several templates match, the one
-- with the most characters other than `*` wins; on a tie, the pattern that sorts first (in the
-- database's collation). Changing a template changes the instances not changed individually;
-- instances idle longer than the template's idle_seconds are removed by the paths that create
-- instances and by reclaim() (_sweep_instances): no janitor.
-- A template holds no slots itself. Limits whose name has a `*` and that existed before
-- revision 0013 stay plain limits (a name is looked up as a limit first).

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
-- The counters of a removed instance are added to the template's retired_* columns, in the
-- same UPDATE of the template's row (locked here) that records where the sweep stopped
-- (revision 0014): the template's totals never go down.
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
    -- What the removed instances counted, added to the template's row at the end.
    gone pggcl.limit_state;
    gone_waited numeric := 0;  -- the sums of seconds, added exactly (see limit_templates)
    gone_held numeric := 0;
    k integer;
BEGIN
    SELECT * INTO t FROM pggcl.limit_templates x WHERE x.id = _sweep_instances.template_id
    FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    gone.grants := 0;
    gone.enqueued := 0;
    gone.denied := 0;
    gone.gave_up := 0;
    gone.rejected := 0;
    gone.reclaimed_slots := 0;
    gone.wait_buckets := t.retired_wait_buckets;
    gone.hold_buckets := t.retired_hold_buckets;
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
            gone.grants := gone.grants + l.grants;
            gone.enqueued := gone.enqueued + l.enqueued;
            gone.denied := gone.denied + l.denied;
            gone.gave_up := gone.gave_up + l.gave_up;
            gone.rejected := gone.rejected + l.rejected;
            gone.reclaimed_slots := gone.reclaimed_slots + l.reclaimed_slots;
            gone_waited := gone_waited + l.wait_seconds_sum::numeric;
            gone_held := gone_held + l.hold_seconds_sum::numeric;
            FOR k IN 1 .. cardinality(gone.wait_buckets) LOOP
                gone.wait_buckets[k] := gone.wait_buckets[k] + coalesce(l.wait_buckets[k], 0);
                gone.hold_buckets[k] := gone.hold_buckets[k] + coalesce(l.hold_buckets[k], 0);
            END LOOP;
        END IF;
    END LOOP;
    IF removed = 0 THEN
        UPDATE pggcl.limit_templates x SET sweep_after = last_seen WHERE x.id = t.id;
    ELSE
        UPDATE pggcl.limit_templates x
        SET sweep_after = last_seen,
            retired_instances = x.retired_instances + removed,
            retired_grants = x.retired_grants + gone.grants,
            retired_enqueued = x.retired_enqueued + gone.enqueued,
            retired_denied = x.retired_denied + gone.denied,
            retired_gave_up = x.retired_gave_up + gone.gave_up,
            retired_rejected = x.retired_rejected + gone.rejected,
            retired_reclaimed_slots = x.retired_reclaimed_slots + gone.reclaimed_slots,
            retired_wait_seconds_sum = x.retired_wait_seconds_sum + gone_waited,
            retired_hold_seconds_sum = x.retired_hold_seconds_sum + gone_held,
            retired_wait_buckets = gone.wait_buckets,
            retired_hold_buckets = gone.hold_buckets
        WHERE x.id = t.id;
    END IF;
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

-- Every template with its instances taken together (revision 0014): how many exist, their
-- occupancy now (summed over pggcl.limits, so with its rules for dead sessions: active_slots =
-- held_slots + decaying_slots) and, for each counter of pggcl.limits, the sum over the
-- instances that exist plus what the instances swept away had counted (retired_* of
-- limit_templates): totals that only grow, as Prometheus counters must. The histograms'
-- buckets are cumulative, as in pggcl.limits (the 12th equals the count). `retired_instances`:
-- the instances swept away so far. Read without a lock, as pggcl.limits is: reading never
-- holds up an acquire. Reading it reads every instance once, in the database: what a scrape
-- gets is one row per template however many instances there are.
CREATE VIEW pggcl.template_totals AS
WITH live AS MATERIALIZED (
    SELECT l.template, count(*) AS instances, sum(l.held_slots) AS held_slots,
           sum(l.decaying_slots) AS decaying_slots, sum(l.waiting) AS waiting
    FROM pggcl.limits l
    WHERE l.template IS NOT NULL
    GROUP BY l.template
), counted AS MATERIALIZED (
    SELECT i.template_id, sum(s.grants) AS grants, sum(s.enqueued) AS enqueued,
           sum(s.denied) AS denied, sum(s.gave_up) AS gave_up, sum(s.rejected) AS rejected,
           sum(s.reclaimed_slots) AS reclaimed_slots,
           -- numeric, exactly as the sweep adds them up (see limit_templates): a total that
           -- only grows, however the instances move from this sum to the retired one
           sum(s.wait_seconds_sum::numeric) AS wait_seconds_sum,
           sum(s.hold_seconds_sum::numeric) AS hold_seconds_sum
    FROM pggcl.limit_instances i JOIN pggcl.limit_state s ON s.id = i.limit_id
    GROUP BY i.template_id
), bucketed AS MATERIALIZED (  -- the raw buckets, summed per template and bucket
    SELECT i.template_id, b.k, sum(b.w) AS w, sum(b.h) AS h
    FROM pggcl.limit_instances i JOIN pggcl.limit_state s ON s.id = i.limit_id,
         unnest(s.wait_buckets, s.hold_buckets) WITH ORDINALITY b(w, h, k)
    GROUP BY i.template_id, b.k
)
SELECT t.pattern AS name,
       t."limit",
       t.slot_decay_per_second,
       t.active,
       coalesce(v.instances, 0)::bigint AS instances,
       coalesce(v.held_slots, 0)::bigint::double precision + coalesce(v.decaying_slots, 0) AS active_slots,
       coalesce(v.waiting, 0)::bigint AS waiting,
       coalesce(v.held_slots, 0)::bigint AS held_slots,
       coalesce(v.decaying_slots, 0)::double precision AS decaying_slots,
       g.grants,
       (t.retired_enqueued + coalesce(c.enqueued, 0))::bigint AS enqueued,
       (t.retired_denied + coalesce(c.denied, 0))::bigint AS denied,
       (t.retired_gave_up + coalesce(c.gave_up, 0))::bigint AS gave_up,
       (t.retired_rejected + coalesce(c.rejected, 0))::bigint AS rejected,
       (t.retired_reclaimed_slots + coalesce(c.reclaimed_slots, 0))::bigint AS reclaimed_slots,
       g.grants AS wait_seconds_count,
       (t.retired_wait_seconds_sum + coalesce(c.wait_seconds_sum, 0))::double precision AS wait_seconds_sum,
       h.wait_seconds_buckets,
       h.hold_seconds_count,
       (t.retired_hold_seconds_sum + coalesce(c.hold_seconds_sum, 0))::double precision AS hold_seconds_sum,
       h.hold_seconds_buckets,
       t.retired_instances
FROM pggcl.limit_templates t
     LEFT JOIN live v ON v.template = t.pattern
     LEFT JOIN counted c ON c.template_id = t.id,
     LATERAL (SELECT (t.retired_grants + coalesce(c.grants, 0))::bigint AS grants) g,
     -- Made cumulative as pggcl.limits makes them: the grants at once (0 s) in every bucket.
     LATERAL (SELECT array_agg(x.w ORDER BY x.k) AS wait_seconds_buckets,
                     array_agg(x.h ORDER BY x.k) AS hold_seconds_buckets,
                     coalesce(max(x.h), 0)::bigint AS hold_seconds_count
              FROM (SELECT r.k,
                           (g.grants - sum(r.w) OVER () + sum(r.w) OVER (ORDER BY r.k))::bigint AS w,
                           (sum(r.h) OVER (ORDER BY r.k))::bigint AS h
                    FROM (SELECT u.k, u.w + coalesce(b.w, 0) AS w, u.h + coalesce(b.h, 0) AS h
                          FROM unnest(t.retired_wait_buckets, t.retired_hold_buckets)
                                   WITH ORDINALITY u(w, h, k)
                               LEFT JOIN bucketed b ON b.template_id = t.id AND b.k = u.k) r) x) h;
COMMENT ON VIEW pggcl.template_totals IS
    'Every template with its instances taken together: occupancy now and counters that only grow';

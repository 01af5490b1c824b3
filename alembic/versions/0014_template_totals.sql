-- Revision 0014, upgrade from 0013. Frozen once released: never edit this file; a change
-- to the engine is a new revision.
-- What 0014 adds (issues #15 and #16.2, templates in /metrics and the UI): the counters of an
-- instance swept away are added to its template's row (new columns retired_* at the end of
-- pggcl.limit_templates, in the sweep's UPDATE of that row), and the view
-- pggcl.template_totals gives every template its instances taken together: occupancy now and
-- counters that only grow (retired plus those of the instances that exist). A scrape reads
-- one row per template, however many instances there are.

ALTER TABLE pggcl.limit_templates
    ADD COLUMN retired_instances bigint NOT NULL DEFAULT 0,
    ADD COLUMN retired_grants bigint NOT NULL DEFAULT 0,
    ADD COLUMN retired_enqueued bigint NOT NULL DEFAULT 0,
    ADD COLUMN retired_denied bigint NOT NULL DEFAULT 0,
    ADD COLUMN retired_gave_up bigint NOT NULL DEFAULT 0,
    ADD COLUMN retired_rejected bigint NOT NULL DEFAULT 0,
    ADD COLUMN retired_reclaimed_slots bigint NOT NULL DEFAULT 0,
    ADD COLUMN retired_wait_seconds_sum numeric NOT NULL DEFAULT 0,
    ADD COLUMN retired_hold_seconds_sum numeric NOT NULL DEFAULT 0,
    ADD COLUMN retired_wait_buckets bigint[] NOT NULL DEFAULT '{0,0,0,0,0,0,0,0,0,0,0,0}',
    ADD COLUMN retired_hold_buckets bigint[] NOT NULL DEFAULT '{0,0,0,0,0,0,0,0,0,0,0,0}';

CREATE OR REPLACE FUNCTION pggcl._sweep_instances(template_id bigint, spared bigint[], how_many integer, at timestamptz)
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

REVOKE ALL ON pggcl.template_totals FROM PUBLIC;
GRANT SELECT ON pggcl.template_totals TO pggcl_user;

-- CREATE OR REPLACE dropped the pinned search_path of _sweep_instances: pinned again, as
-- sql/85_pinned_helpers.sql pins every PL/pgSQL helper.
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

-- Revision 0014, downgrade to 0013: the view pggcl.template_totals and the retired_*
-- columns go (what the swept instances had counted goes with them), and _sweep_instances is
-- 0013's again. Frozen once released.
DROP VIEW pggcl.template_totals;

-- Remove idle instances of the template `template_id`: look at up to `how_many` instances,
-- in id order from where the last sweep stopped (so that every instance is looked at in
-- turn), leaving `spared` (limits the caller has locked) alone. An instance is idle when it
-- has no lease, no waiter and an empty bucket; it is removed once a sweep has seen it idle
-- for idle_seconds with no grant, queued request or refusal in between. Takes no lock anyone
-- waits for: the template's row and each limit row are skipped when someone else holds them.
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

ALTER TABLE pggcl.limit_templates
    DROP COLUMN retired_instances,
    DROP COLUMN retired_grants,
    DROP COLUMN retired_enqueued,
    DROP COLUMN retired_denied,
    DROP COLUMN retired_gave_up,
    DROP COLUMN retired_rejected,
    DROP COLUMN retired_reclaimed_slots,
    DROP COLUMN retired_wait_seconds_sum,
    DROP COLUMN retired_hold_seconds_sum,
    DROP COLUMN retired_wait_buckets,
    DROP COLUMN retired_hold_buckets;

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

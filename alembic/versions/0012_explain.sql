-- Revision 0012, upgrade from 0011. Frozen once released: never edit this file; a change
-- to the engine is a new revision.
-- What 0012 adds (issue #16 point 3, "why am I waiting?"): pggcl.explain(waiter_id,
-- max_holders), which says for a queued request, per limit it waits on, whether that limit
-- blocks it, its place in the queue, the limit's occupancy and holders (no lease ids), and in
-- rate mode the seconds until room (sql/55_explain.sql; docs/protocol.md). It only reads.
-- Executable by pggcl_user. Nothing else changes.

CREATE FUNCTION pggcl.explain(waiter_id bigint, max_holders integer DEFAULT NULL)
RETURNS TABLE (name text, blocking boolean, "position" integer, occupy integer,
               mode text, "limit" integer, active boolean, held_slots integer,
               active_slots double precision, leases integer, holders jsonb,
               seconds_until_room double precision, since timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    at timestamptz := clock_timestamp();
    wanted bigint := explain.waiter_id;
    shown integer := explain.max_holders;
BEGIN
    IF shown < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'max_holders', MESSAGE = format(
            'invalid max_holders: %s; it must be 0 or more (NULL: every holder)', shown);
    END IF;
    RETURN QUERY
    -- The sessions whose connection is gone, read once (pg_locks, as the views read it).
    WITH dead AS MATERIALIZED (SELECT d.id, d.expired FROM pggcl._sessions_seen d WHERE NOT d.alive)
    SELECT l.name,
           l.active AND (a.ahead > 0 OR NOT pggcl._fits(l.active, l."limit", h.held, l.level,
                                                       l.slot_decay_per_second, l.level_at,
                                                       w.occupy, at)),
           a.ahead + 1, w.occupy, w.mode, l."limit", l.active, h.held,
           h.held + pggcl._decayed(l.level, l.slot_decay_per_second, l.level_at, at),
           h.leases, h.holders,
           CASE WHEN w.mode = 'rate_limit'
                THEN pggcl._retry_after(ARRAY[l.id], w.occupy, w.id, at, NULL) END,
           w.enqueued_at
    FROM pggcl.waiters w
         JOIN pggcl.limit_state l ON l.id = w.limit_id,
         -- Live requests queued ahead of it here (those pggcl.queue shows): a dead session's
         -- waiter is never served, and blocks nobody.
         LATERAL (SELECT count(*)::integer AS ahead
                  FROM pggcl.waiters q
                  WHERE q.limit_id = l.id AND q.id > l.queue_from AND q.id < w.id
                    AND q.session_id NOT IN (SELECT d.id FROM dead d)) a,
         -- Who holds slots here (those pggcl.holders shows: not the leases of sessions dead
         -- past their grace), oldest first; `holders` lists at most max_holders of them.
         LATERAL (SELECT coalesce(sum(x.occupy), 0)::integer AS held,
                         (count(*) FILTER (WHERE x.occupy > 0))::integer AS leases,
                         coalesce(jsonb_agg(jsonb_build_object(
                                      'holder', x.holder, 'slots', x.occupy,
                                      'since', x.acquired_at, 'expires', x.expires_at)
                                  ORDER BY x.n)
                                  FILTER (WHERE x.occupy > 0 AND (shown IS NULL OR x.n <= shown)),
                                  '[]'::jsonb) AS holders
                  FROM (SELECT le.occupy, le.holder, le.acquired_at, le.expires_at,
                               row_number() OVER (ORDER BY le.occupy = 0, le.acquired_at, le.id) AS n
                        FROM pggcl.leases le
                        WHERE le.limit_id = l.id
                          AND (le.session_id IS NULL
                               OR (le.session_id NOT IN (SELECT d.id FROM dead d WHERE d.expired)
                                   AND le.session_id IN (SELECT x.id FROM pggcl.sessions x)))) x) h
    WHERE w.id = wanted
    ORDER BY l.name;
END
$$;

REVOKE ALL ON FUNCTION pggcl.explain(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pggcl.explain(bigint, integer) TO pggcl_user;

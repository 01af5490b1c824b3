-- "Why am I waiting?" (revision 0012, issue #16 point 3): for a queued request, one row per
-- limit it waits on, saying whether that limit keeps it waiting, its place in that limit's
-- queue, how full the limit is and who holds it, and in rate mode when it will have room.
--
-- It only reads: no row lock (an acquire, release or recheck never waits for it), and only
-- the rows it needs, by index: the waiter's rows (waiters_id_idx), each of its limits' rows
-- (primary key), the waiters ahead of it there (by index, from the limit's queue_from on) and
-- the leases on it (leases_limit_idx). Liveness is read once, as the views read it
-- (pggcl._sessions_seen: pg_locks, no probe, no lock; a dead session seen for the first time
-- is recorded in pggcl.sightings, as a reader of the views records it).
--
-- What it shows is what pggcl.limits, pggcl.holders and pggcl.queue already show every
-- pggcl_user (held slots, holder texts and times, places in the queue), and less: no lease
-- id, no session id, no token or channel. So any pggcl_user may explain any waiter.
--
-- An id that is not queued (granted, cancelled, rejected, reclaimed, never existed, NULL)
-- gives no rows: which of these it was is not said, as recheck does not say it to another
-- role. A waiter whose session's connection is gone but is within its grace (it keeps its
-- place) is explained too, although pggcl.queue leaves it out.
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
                  WHERE q.limit_id = l.id
                    AND (q.serve_key, q.id) > (l.queue_from_key, l.queue_from)
                    AND (q.serve_key, q.id) < (w.serve_key, w.id)
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

-- Revision 0007, upgrade from 0006. Frozen once released: never edit this file; a change
-- to the engine is a new revision.
-- What 0007 changes (issue #12, points 1 and 4): the grant step still never serves a waiter
-- whose session is dead, but drops it only once its grace has passed (counted from when it was
-- first seen dead); within its grace it is passed over and keeps its place, so a waiter whose
-- client is reconnecting after a restart is not sent to the back of the queue. And a waiter
-- told to re-check (it waits on limits not locked here) blocks those after it only on its
-- active limits: deleting a limit no longer drops a waiter queued behind it on that limit
-- (found by tests/model). Public signatures unchanged.

-- Whether a session found dead (its connection gone: _session_alive said so) is past its grace
-- and may lose what it waits for. The first time it is seen dead its grace starts (dead_since),
-- so a client cut off by a restart has the whole grace to come back, counted from when the
-- server could see it gone.
CREATE FUNCTION pggcl._dead_past_grace(session_id integer, at timestamptz) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    s pggcl.sessions;
BEGIN
    SELECT * INTO s FROM pggcl.sessions x WHERE x.id = session_id;
    IF NOT FOUND OR s.reclaimed THEN
        RETURN true;
    ELSIF s.dead_since IS NULL THEN
        UPDATE pggcl.sessions x SET dead_since = at WHERE x.id = s.id;
        RETURN s.grace_seconds <= 0;
    END IF;
    RETURN s.dead_since + make_interval(secs => s.grace_seconds) <= at;
END
$$;
REVOKE ALL ON FUNCTION pggcl._dead_past_grace(integer, timestamptz) FROM PUBLIC;

CREATE OR REPLACE FUNCTION pggcl._serve(lim pggcl.limit_state, at timestamptz) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    w pggcl.waiters;
    notified boolean;
    granted bigint[] := '{}';
    dropped boolean := false;
    passed boolean := false;  -- a waiter was passed over: queue_from must stay below it
    general boolean := NOT lim.active;
BEGIN
    IF lim.active THEN
        -- (No LIMIT: dead waiters are skipped; the loop ends when the head does not fit.)
        FOR w IN SELECT * FROM pggcl.waiters x WHERE x.limit_id = lim.id AND x.id > lim.queue_from
                 ORDER BY x.id LOOP
            IF cardinality(w.limit_ids) > 1 OR w.occupy > lim."limit"
               OR (w.mode = 'rate_limit' AND lim.slot_decay_per_second = 0) THEN
                general := true;
                EXIT;
            END IF;
            EXIT WHEN NOT pggcl._has_room(lim, w.occupy, at);
            IF NOT pggcl._session_alive(w.session_id) THEN
                IF pggcl._dead_past_grace(w.session_id, at) THEN
                    DELETE FROM pggcl.waiters x WHERE x.limit_id = lim.id AND x.id = w.id;
                    lim.queued := lim.queued - 1;
                    IF NOT passed THEN
                        lim.queue_from := w.id;
                    END IF;
                    dropped := true;
                ELSE
                    passed := true;
                END IF;
                CONTINUE;
            END IF;
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
            IF NOT passed THEN
                lim.queue_from := w.id;  -- it was the head: every waiter before it here is gone
            END IF;
            granted := granted || w.id;
        END LOOP;
        IF cardinality(granted) > 0 OR dropped THEN
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

CREATE OR REPLACE FUNCTION pggcl._grant_general(ids bigint[], at timestamptz) RETURNS bigint[]
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
            -- It blocks those after it on its active limits here only: an inactive (or just
            -- deleted) limit gates nobody.
            blocked := blocked || pggcl._intersect(w.limit_ids, active_ids);
        ELSE
            why := pggcl._impossible(w.limit_ids, w.occupy, w.mode);
            IF why IS NOT NULL THEN
                PERFORM pggcl._dequeue_waiter(w.id);
                PERFORM pggcl._notify(w.session_id, 'e', w.id, why);
            ELSIF (SELECT bool_and(pggcl._fits(l.active, l."limit", l.held, l.level, l.slot_decay_per_second,
                                               l.level_at, w.occupy, at))
                   FROM pggcl.limit_state l WHERE l.id = ANY(w.limit_ids)) THEN
                IF NOT pggcl._session_alive(w.session_id) THEN  -- never served (see _serve)
                    IF pggcl._dead_past_grace(w.session_id, at) THEN
                        PERFORM pggcl._dequeue_waiter(w.id);
                    END IF;
                    CONTINUE;
                END IF;
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

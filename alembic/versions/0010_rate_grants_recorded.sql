-- Revision 0010, upgrade from 0009. Frozen once released: never edit this file; a change
-- to the engine is a new revision.
-- What 0010 changes (issue #17, a contract defect the protocol reference found): recheck and
-- cancel answered 'gone' for a rate-limit grant (it leaves no lease) as for a waiter reclaimed
-- with its session, dropped or rejected, so a rate-limit client had to read 'gone' as granted
-- and could go ahead without a slot. Now a rate grant made to a queued waiter is recorded
-- (pggcl.rate_grants, kept an hour) and recheck and cancel answer 'granted' for it; 'gone'
-- always means "not granted". Public signatures unchanged.

CREATE TABLE pggcl.rate_grants (
    waiter_id bigint PRIMARY KEY,
    session_id integer NOT NULL,
    granted_at timestamptz NOT NULL
);
CREATE INDEX rate_grants_granted_at_idx ON pggcl.rate_grants (granted_at);
REVOKE ALL ON pggcl.rate_grants FROM PUBLIC;


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

-- Whether the request of a waiter that is no longer queued was granted, as far as the caller
-- may know: its lease `lease_id` is held (concurrency), or its rate-limit grant is recorded
-- (pggcl.rate_grants), by a session of the caller's role (a manager's: any). Anything else
-- (reclaimed with its session, dropped, rejected, cancelled, released, unknown) is not.
CREATE FUNCTION pggcl._was_granted(waiter_id bigint, lease_id uuid) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT FROM pggcl.leases x WHERE x.id OPERATOR(pg_catalog.=) _was_granted.lease_id
                   AND pggcl._may_act_on(x.session_id, x.owner_role))
        OR EXISTS (SELECT FROM pggcl.rate_grants g
                   WHERE g.waiter_id OPERATOR(pg_catalog.=) _was_granted.waiter_id
                   AND pggcl._may_act_for(g.session_id));
END
$$;

-- The grant step on one limit, given its locked row as it stands (a release passes it with its
-- slots given back, from the UPDATE that locked it). The usual case, an active limit whose queue
-- head wants that limit alone, is served here: the head of the queue while it fits, the row kept
-- in a variable and written once, each grant one statement (dequeue, lease, notify). Anything
-- else goes to the general step: an inactive limit, or a head with more limits to lock or a
-- request that can never fit, to refuse.
-- A waiter whose session is dead (its connection gone) is never served: the one about to be
-- granted is probed first (_session_alive). Past its grace it is dequeued; within it, it is
-- passed over but keeps its place (its client may be reconnecting, after a restart say: it
-- re-checks once it is back), and the queue's lower bound stays below it. The next one is then
-- looked at. Only a waiter that would be granted is probed, so a release with nobody queued
-- probes nothing.
CREATE OR REPLACE FUNCTION pggcl._serve(lim pggcl.limit_state, at timestamptz) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    w pggcl.waiters;
    notified boolean;
    granted bigint[] := '{}';
    dropped boolean := false;
    passed boolean := false;  -- a waiter was passed over: queue_from must stay below it
    general boolean := NOT lim.active;
    waited double precision;
    bucket integer;
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
                    lim.gave_up := lim.gave_up + 1;
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
                PERFORM pggcl._record_rate_grant(w.id, w.session_id, at);
            END IF;
            lim.queued := lim.queued - 1;
            lim.grants := lim.grants + 1;
            waited := pggcl._seconds(w.enqueued_at, at);
            bucket := pggcl._bucket(waited);
            lim.wait_seconds_sum := lim.wait_seconds_sum + waited;
            lim.wait_buckets[bucket] := lim.wait_buckets[bucket] + 1;
            IF NOT passed THEN
                lim.queue_from := w.id;  -- it was the head: every waiter before it here is gone
            END IF;
            granted := granted || w.id;
        END LOOP;
        IF cardinality(granted) > 0 OR dropped THEN
            UPDATE pggcl.limit_state
            SET held = lim.held, queued = lim.queued, level = lim.level, level_at = lim.level_at,
                queue_from = lim.queue_from, grants = lim.grants, gave_up = lim.gave_up,
                wait_seconds_sum = lim.wait_seconds_sum, wait_buckets = lim.wait_buckets
            WHERE id = lim.id;
        END IF;
    END IF;
    IF general THEN
        granted := granted || pggcl._grant_general(ARRAY[lim.id], at);
    END IF;
    RETURN granted;
END
$$;

-- The grant step for any set of limits (see above).
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
                PERFORM pggcl._dequeue_waiter(w.id, 'rejected', at);
                PERFORM pggcl._notify(w.session_id, 'e', w.id, why);
            ELSIF (SELECT bool_and(pggcl._fits(l.active, l."limit", l.held, l.level, l.slot_decay_per_second,
                                               l.level_at, w.occupy, at))
                   FROM pggcl.limit_state l WHERE l.id = ANY(w.limit_ids)) THEN
                IF NOT pggcl._session_alive(w.session_id) THEN  -- never served (see _serve)
                    IF pggcl._dead_past_grace(w.session_id, at) THEN
                        PERFORM pggcl._dequeue_waiter(w.id, 'gave_up', at);
                    END IF;
                    CONTINUE;
                END IF;
                PERFORM pggcl._take(w.limit_ids, pggcl._intersect(w.limit_ids, active_ids), w.occupy,
                                    w.mode, w.lease_id, w.session_id, w.holder, w.ttl_seconds, at);
                PERFORM pggcl._dequeue_waiter(w.id, 'granted', at);
                IF w.mode = 'rate_limit' THEN
                    PERFORM pggcl._record_rate_grant(w.id, w.session_id, at);
                END IF;
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

-- Where a waiter stands: 'granted', 'queued', 'rejected' (can never be granted) or 'gone'
-- (cancelled, reclaimed, or a rate-limit grant already delivered). Also serves whoever can be
-- served on its limits, so it is what a client calls on an 'r:' notification or at retry_after.
-- Only for waiters of the caller's role's sessions (a manager's: any): another role's waiter
-- raises GC007, and another role's lease is not reported ('gone').
CREATE OR REPLACE FUNCTION pggcl.recheck(waiter_id bigint, lease_id uuid DEFAULT NULL)
RETURNS TABLE (status text, retry_after double precision)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at timestamptz := clock_timestamp();
    w pggcl.waiters;
    ids bigint[];
    next_at timestamptz;
BEGIN
    SELECT * INTO w FROM pggcl.waiters x WHERE x.id = recheck.waiter_id LIMIT 1;
    IF FOUND AND NOT pggcl._may_act_for(w.session_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'GC007', MESSAGE = format(
            'waiter %s belongs to a session of another role: only that role (or a manager) may recheck it',
            recheck.waiter_id);
    END IF;
    ids := pggcl._lock(array(SELECT limit_id FROM pggcl.waiters x WHERE x.id = recheck.waiter_id));
    SELECT * INTO w FROM pggcl.waiters x WHERE x.id = recheck.waiter_id LIMIT 1;
    IF FOUND THEN
        next_at := pggcl._reap(ids, at);
        IF recheck.waiter_id = ANY(pggcl._grant(ids, at)) THEN
            RETURN QUERY SELECT 'granted'::text, NULL::double precision;
            RETURN;
        ELSIF EXISTS (SELECT FROM pggcl.waiters x WHERE x.id = recheck.waiter_id) THEN
            RETURN QUERY SELECT 'queued'::text, pggcl._retry_after(ids, w.occupy, w.id, at, next_at);
            RETURN;
        ELSIF pggcl._impossible(ids, w.occupy, w.mode) IS NOT NULL THEN
            RETURN QUERY SELECT 'rejected'::text, NULL::double precision;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY SELECT CASE WHEN pggcl._was_granted(recheck.waiter_id, recheck.lease_id)
                             THEN 'granted' ELSE 'gone' END, NULL::double precision;
END
$$;

-- Stop waiting. 'cancelled' when the request was still queued (whoever it blocked is served);
-- otherwise what recheck would say ('granted': the caller now holds lease_id and must release it).
-- With waiter_id NULL, the waiter is found by the request id given to acquire (as lease_id).
-- Acts only on waiters of the caller's role's sessions (a manager's: any); another role's
-- waiter is left as it is and the answer is 'gone'.
CREATE OR REPLACE FUNCTION pggcl.cancel(waiter_id bigint, lease_id uuid DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at timestamptz := clock_timestamp();
    ids bigint[];
BEGIN
    IF cancel.waiter_id IS NULL THEN  -- the caller knows only the request id it chose
        waiter_id := (SELECT x.id FROM pggcl.waiters x WHERE x.lease_id = cancel.lease_id
                      AND pggcl._may_act_for(x.session_id) LIMIT 1);
    END IF;
    -- Only the caller's role's waiters (or any, for a manager): another's is as good as gone.
    IF NOT EXISTS (SELECT FROM pggcl.waiters x WHERE x.id = cancel.waiter_id
                   AND pggcl._may_act_for(x.session_id)) THEN
        RETURN CASE WHEN pggcl._was_granted(cancel.waiter_id, cancel.lease_id)
                    THEN 'granted' ELSE 'gone' END;
    END IF;
    ids := pggcl._lock(array(SELECT limit_id FROM pggcl.waiters x WHERE x.id = cancel.waiter_id));
    IF pggcl._dequeue_waiter(cancel.waiter_id, 'gave_up', at) THEN
        PERFORM pggcl._grant(ids, at);
        RETURN 'cancelled';
    END IF;
    RETURN CASE WHEN pggcl._was_granted(cancel.waiter_id, cancel.lease_id)
                THEN 'granted' ELSE 'gone' END;
END
$$;

-- CREATE OR REPLACE resets a function's settings to its definition's: the hot path's again
-- (see 80_hot_path.sql).
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY['pggcl.recheck(bigint, uuid)', 'pggcl.cancel(bigint, uuid)']::regprocedure[] LOOP
        EXECUTE format('ALTER FUNCTION %s SET plan_cache_mode = force_generic_plan '
                       'SET enable_seqscan = off SET jit = off', f);
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION pggcl._record_rate_grant(bigint, integer, timestamptz), pggcl._was_granted(bigint, uuid) FROM PUBLIC;

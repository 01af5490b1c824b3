-- Waiting: where a queued request stands, and giving up on it. (Hot path: see 80_hot_path.sql.)

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

-- Where a waiter stands: 'granted', 'queued', 'rejected' (can never be granted) or 'gone'
-- (cancelled, reclaimed, or a rate-limit grant already delivered). Also serves whoever can be
-- served on its limits, so it is what a client calls on an 'r:' notification or at retry_after.
-- Only for waiters of the caller's role's sessions (a manager's: any): another role's waiter
-- raises GC007, and another role's lease is not reported ('gone').
CREATE FUNCTION pggcl.recheck(waiter_id bigint, lease_id uuid DEFAULT NULL)
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
CREATE FUNCTION pggcl.cancel(waiter_id bigint, lease_id uuid DEFAULT NULL) RETURNS text
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

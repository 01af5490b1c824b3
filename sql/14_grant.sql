-- Internal: the grant step, which hands free slots to queued waiters first come, first served,
-- and tells them; and what a refused request is told (why never, or when to look again).

-- Why a request can never be granted on these limits, or NULL when it can.
CREATE FUNCTION pggcl._impossible(ids bigint[], occupy integer, mode text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce(
        (SELECT format('cannot occupy %s slots on limit %L: its limit is %s', occupy, name, "limit")
         FROM pggcl.limit_state WHERE id = ANY(ids) AND active AND occupy > "limit" ORDER BY name LIMIT 1),
        (SELECT format('cannot rate limit on %L: its slot_decay_per_second is 0', name)
         FROM pggcl.limit_state
         WHERE id = ANY(ids) AND active AND mode = 'rate_limit' AND slot_decay_per_second = 0
         ORDER BY name LIMIT 1));
END
$$;

-- The grant step. On the locked limits `ids`, serve queued waiters in their order (serve_key,
-- id: arrival less priority, then arrival) while room exists. A waiter blocks every later waiter on each of its active limits (head-of-line
-- blocking: a large request is never starved by small ones). A waiter that also waits on limits
-- we have not locked is asked to re-check itself (it locks all its limits in order and runs this
-- step there). A waiter that can never be served (a limit was lowered below its request) is
-- removed and told why. A waiter whose session is dead is dropped instead of served (see
-- _serve). Returns the ids of the waiters it granted.
CREATE FUNCTION pggcl._grant(ids bigint[], at timestamptz) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lim pggcl.limit_state;
BEGIN
    IF cardinality(ids) = 1 THEN
        SELECT * INTO lim FROM pggcl.limit_state WHERE id = ids[1];
        IF NOT FOUND OR lim.queued = 0 THEN
            RETURN '{}';
        END IF;
        RETURN pggcl._serve(lim, at);
    END IF;
    RETURN pggcl._grant_general(ids, at);
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
CREATE FUNCTION pggcl._serve(lim pggcl.limit_state, at timestamptz) RETURNS bigint[]
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
        FOR w IN SELECT * FROM pggcl.waiters x
                 WHERE x.limit_id = lim.id AND (x.serve_key, x.id) > (lim.queue_from_key, lim.queue_from)
                 ORDER BY x.serve_key, x.id LOOP
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
                        lim.queue_from_key := w.serve_key;
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
                -- It was the head: every waiter before it here is gone.
                lim.queue_from_key := w.serve_key;
                lim.queue_from := w.id;
            END IF;
            granted := granted || w.id;
        END LOOP;
        IF cardinality(granted) > 0 OR dropped THEN
            UPDATE pggcl.limit_state
            SET held = lim.held, queued = lim.queued, level = lim.level, level_at = lim.level_at,
                queue_from = lim.queue_from, queue_from_key = lim.queue_from_key,
                grants = lim.grants, gave_up = lim.gave_up,
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
CREATE FUNCTION pggcl._grant_general(ids bigint[], at timestamptz) RETURNS bigint[]
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

    FOR w IN SELECT * FROM pggcl.waiters WHERE limit_id = ANY(ids) ORDER BY serve_key, id LOOP
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

-- Seconds until a request for `occupy` slots on the locked limits `ids` may fit, counting the
-- waiters queued ahead of the waiter `before` (all of them when NULL). Exact for rate limits (the bucket's
-- decay is known); for slots held by leases only an expiry or reclaim at `next_at` is known.
CREATE FUNCTION pggcl._retry_after(ids bigint[], occupy integer, before bigint, at timestamptz,
                                   next_at timestamptz)
RETURNS double precision
LANGUAGE plpgsql STABLE AS $$
DECLARE
    l pggcl.limit_state;
    ahead bigint;  -- slots queued ahead: a sum of many requests may pass 2^31 - 1
    unknown boolean;
    free double precision;
    wait double precision := 0;
    before_key double precision := (SELECT w.serve_key FROM pggcl.waiters w WHERE w.id = before LIMIT 1);
BEGIN
    FOR l IN SELECT * FROM pggcl.limit_state WHERE id = ANY(ids) AND active LOOP
        -- Slots held by leases must be released first: no need to read the (maybe long) queue.
        IF l.held + occupy > l."limit" THEN
            RETURN pggcl._seconds_until(next_at, at);
        END IF;
        SELECT coalesce(sum(q.occupy), 0), coalesce(bool_or(q.mode <> 'rate_limit'), false)
          INTO ahead, unknown
          FROM pggcl.waiters q
         WHERE q.limit_id = l.id AND (q.serve_key, q.id) > (l.queue_from_key, l.queue_from)
           AND (before IS NULL OR (q.serve_key, q.id) < (before_key, before));
        -- The bucket must drain until holders, those ahead (who drain with it) and we fit.
        free := l."limit" - l.held - ahead - occupy;
        IF unknown OR (l.slot_decay_per_second = 0 AND pggcl._level(l, at) > free) THEN
            RETURN pggcl._seconds_until(next_at, at);
        ELSIF pggcl._level(l, at) > free THEN
            wait := greatest(wait, (pggcl._level(l, at) - free) / l.slot_decay_per_second);
        END IF;
    END LOOP;
    RETURN wait;
END
$$;

-- Revision 0009, upgrade from 0008. Frozen once released: never edit this file; a change
-- to the engine is a new revision.
-- What 0009 changes (issue #16, points 1 and 2): counters per limit, kept on the limit's row
-- by the statements that make the change they count (no other row, no other lock): grants,
-- requests that had to queue (enqueued), try_acquire refusals (denied), waiters gone without a
-- grant (gave_up), waiters told 'e:' (rejected), slots reclaimed from dead holders and expired
-- TTLs (reclaimed_slots), and wait and hold times in seconds, each a sum and a histogram of
-- fixed buckets (0.001 .. 600 s, +Inf). pggcl.limits shows them as new columns at its end.
-- Internal helpers _give_back, _drop_leases, _dequeue_waiter and _drop_session_claims take
-- more arguments. Public signatures unchanged.

-- The counters, on the row that the changes they count write anyway (see 00_schema.sql).
ALTER TABLE pggcl.limit_state
    ADD COLUMN grants bigint NOT NULL DEFAULT 0,
    ADD COLUMN enqueued bigint NOT NULL DEFAULT 0,
    ADD COLUMN denied bigint NOT NULL DEFAULT 0,
    ADD COLUMN gave_up bigint NOT NULL DEFAULT 0,
    ADD COLUMN rejected bigint NOT NULL DEFAULT 0,
    ADD COLUMN reclaimed_slots bigint NOT NULL DEFAULT 0,
    ADD COLUMN wait_seconds_sum double precision NOT NULL DEFAULT 0,
    ADD COLUMN hold_seconds_sum double precision NOT NULL DEFAULT 0,
    ADD COLUMN wait_buckets bigint[] NOT NULL DEFAULT '{0,0,0,0,0,0,0,0,0,0,0,0}',
    ADD COLUMN hold_buckets bigint[] NOT NULL DEFAULT '{0,0,0,0,0,0,0,0,0,0,0,0}';

-- The histogram bucket (1 to 12) of a wait or hold of `seconds`: the first upper bound it does
-- not exceed among 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 600 s, and 12 (+Inf) above
-- them (Prometheus's `le`: a bound is inclusive). pggcl/ui/metrics.py has the same bounds.
CREATE FUNCTION pggcl._bucket(seconds double precision) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN seconds OPERATOR(pg_catalog.<=) 0.001::double precision THEN 1
                WHEN seconds OPERATOR(pg_catalog.<=) 0.005::double precision THEN 2
                WHEN seconds OPERATOR(pg_catalog.<=) 0.01::double precision THEN 3
                WHEN seconds OPERATOR(pg_catalog.<=) 0.05::double precision THEN 4
                WHEN seconds OPERATOR(pg_catalog.<=) 0.1::double precision THEN 5
                WHEN seconds OPERATOR(pg_catalog.<=) 0.5::double precision THEN 6
                WHEN seconds OPERATOR(pg_catalog.<=) 1::double precision THEN 7
                WHEN seconds OPERATOR(pg_catalog.<=) 5::double precision THEN 8
                WHEN seconds OPERATOR(pg_catalog.<=) 10::double precision THEN 9
                WHEN seconds OPERATOR(pg_catalog.<=) 60::double precision THEN 10
                WHEN seconds OPERATOR(pg_catalog.<=) 600::double precision THEN 11
                ELSE 12 END
$$;

-- Seconds between two moments, as a double (the wait and hold times counted).
CREATE FUNCTION pggcl._seconds(since timestamptz, at timestamptz) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT pg_catalog.date_part('epoch', at OPERATOR(pg_catalog.-) since)
$$;

-- `counts` with one more in each bucket of `buckets` (one element per event).
CREATE FUNCTION pggcl._counted(counts bigint[], buckets integer[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    b integer;
BEGIN
    FOREACH b IN ARRAY coalesce(buckets, '{}') LOOP
        counts[b] := counts[b] + 1;
    END LOOP;
    RETURN counts;
END
$$;

-- Functions whose arguments changed: the old signatures go.
DROP FUNCTION pggcl._give_back(bigint[], integer[]);
DROP FUNCTION pggcl._drop_leases(bigint[], integer, timestamptz);
DROP FUNCTION pggcl._dequeue_waiter(bigint);
DROP FUNCTION pggcl._drop_session_claims(integer, bigint[]);

-- Give back the slots of deleted lease rows (one array element per row: its limit, slots and
-- when it was granted), summed per limit, and count their hold times up to `at`; `reclaimed`:
-- they were taken from dead holders or expired, and their slots count as reclaimed_slots.
CREATE FUNCTION pggcl._give_back(freed_limit_ids bigint[], freed_slots integer[], held_since timestamptz[],
                                 at timestamptz, reclaimed boolean) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    held_for double precision;
BEGIN
    IF cardinality(freed_limit_ids) = 1 THEN
        held_for := pggcl._seconds(held_since[1], at);
        UPDATE pggcl.limit_state
        SET held = held - freed_slots[1],
            reclaimed_slots = reclaimed_slots + CASE WHEN reclaimed THEN freed_slots[1] ELSE 0 END,
            hold_seconds_sum = hold_seconds_sum + held_for,
            hold_buckets[pggcl._bucket(held_for)] = hold_buckets[pggcl._bucket(held_for)] + 1
        WHERE id = freed_limit_ids[1];
    ELSIF cardinality(freed_limit_ids) > 1 THEN
        UPDATE pggcl.limit_state l
        SET held = l.held - f.slots,
            reclaimed_slots = l.reclaimed_slots + CASE WHEN reclaimed THEN f.slots ELSE 0 END,
            hold_seconds_sum = l.hold_seconds_sum + f.seconds,
            hold_buckets = pggcl._counted(l.hold_buckets, f.buckets)
        FROM (SELECT u.limit_id, sum(u.slots)::integer AS slots, sum(pggcl._seconds(u.since, at)) AS seconds,
                     array_agg(pggcl._bucket(pggcl._seconds(u.since, at))) AS buckets
              FROM unnest(freed_limit_ids, freed_slots, held_since) AS u(limit_id, slots, since)
              GROUP BY u.limit_id) f
        WHERE l.id = f.limit_id;
    END IF;
END
$$;

-- Drop the lease rows on the locked limits `ids` that belong to the session `of_session` or
-- that expired by `expired_by` (callers give one of the two, the other NULL matches nothing),
-- and give their slots back, their hold ending `at` (`reclaimed`: see _give_back). Rows locked
-- by someone else are skipped (see above).
CREATE FUNCTION pggcl._drop_leases(ids bigint[], of_session integer, expired_by timestamptz,
                                   at timestamptz, reclaimed boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    freed_limits bigint[];
    freed_slots integer[];
    held_since timestamptz[];
BEGIN
    WITH gone AS (
        DELETE FROM pggcl.leases WHERE (id, limit_id) IN (
            SELECT x.id, x.limit_id FROM pggcl.leases x
            WHERE x.limit_id = ANY(ids) AND (x.session_id = of_session OR x.expires_at <= expired_by)
            FOR UPDATE SKIP LOCKED)
        RETURNING limit_id, occupy, acquired_at
    )
    SELECT array_agg(limit_id), array_agg(occupy), array_agg(acquired_at)
      INTO freed_limits, freed_slots, held_since FROM gone;
    PERFORM pggcl._give_back(freed_limits, freed_slots, held_since, at, reclaimed);
END
$$;

-- Remove a waiter from every queue it is in; its limits are locked. False when it was in none.
-- `outcome` is counted: 'granted' (its wait, enqueued to `at`; the grant itself is _take's),
-- 'gave_up' or 'rejected'.
CREATE FUNCTION pggcl._dequeue_waiter(waiter_id bigint, outcome text, at timestamptz) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF outcome = 'granted' THEN
        WITH gone AS (
            DELETE FROM pggcl.waiters w WHERE w.id = waiter_id
            RETURNING w.limit_id, pggcl._seconds(w.enqueued_at, at) AS waited
        )
        UPDATE pggcl.limit_state l
        SET queued = l.queued - 1, wait_seconds_sum = l.wait_seconds_sum + gone.waited,
            wait_buckets[pggcl._bucket(gone.waited)] = l.wait_buckets[pggcl._bucket(gone.waited)] + 1
        FROM gone WHERE l.id = gone.limit_id;
    ELSE
        WITH gone AS (DELETE FROM pggcl.waiters w WHERE w.id = waiter_id RETURNING w.limit_id)
        UPDATE pggcl.limit_state l
        SET queued = l.queued - 1,
            gave_up = l.gave_up + CASE WHEN outcome = 'gave_up' THEN 1 ELSE 0 END,
            rejected = l.rejected + CASE WHEN outcome = 'rejected' THEN 1 ELSE 0 END
        FROM gone WHERE l.id = gone.limit_id;
    END IF;
    RETURN FOUND;
END
$$;

-- Drop what a session holds and waits for on the locked limits `ids` (a dead, reclaimed or
-- orphaned session, or one being closed), and forget a reclaimed session once nothing of it
-- is left. Its claims on other limits go when those limits are reaped in turn. `reclaimed`:
-- its slots count as reclaimed (not when it is closed).
CREATE FUNCTION pggcl._drop_session_claims(dead_session integer, ids bigint[], at timestamptz,
                                           reclaimed boolean) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    dequeued bigint[];
BEGIN
    PERFORM pggcl._drop_leases(ids, dead_session, NULL, at, reclaimed);

    WITH gone AS (
        DELETE FROM pggcl.waiters WHERE session_id = dead_session AND limit_id = ANY(ids)
        RETURNING limit_id
    )
    SELECT array_agg(limit_id) INTO dequeued FROM gone;
    PERFORM pggcl._dequeued(dequeued);

    DELETE FROM pggcl.sessions s
    WHERE s.id = dead_session AND s.reclaimed
      AND NOT EXISTS (SELECT FROM pggcl.leases WHERE session_id = dead_session)
      AND NOT EXISTS (SELECT FROM pggcl.waiters WHERE session_id = dead_session);
    IF FOUND THEN
        DELETE FROM pggcl.sightings x WHERE x.session_id = dead_session;
    END IF;
END
$$;

-- Give slots to a request: the lease rows (concurrency mode) or the bucket level (rate-limit
-- mode). Slots are taken on the active limits only; the grant is counted on every limit of the
-- request (inactive ones too). The caller has checked room and holds the locks. A lease without
-- a session is its role's (owner_role).
CREATE OR REPLACE FUNCTION pggcl._take(ids bigint[], active_ids bigint[], occupy integer, mode text,
                            lease_id uuid, session_id integer, holder text,
                            ttl_seconds double precision, at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF mode = 'concurrency' THEN
        INSERT INTO pggcl.leases (id, limit_id, occupy, session_id, holder, acquired_at, expires_at,
                                  owner_role)
        SELECT lease_id, x, CASE WHEN x = ANY(active_ids) THEN occupy ELSE 0 END, session_id, holder,
               at, at + make_interval(secs => ttl_seconds), CASE WHEN session_id IS NULL THEN session_user END
        FROM unnest(ids) x;
        UPDATE pggcl.limit_state l
        SET held = l.held + CASE WHEN l.id = ANY(active_ids) THEN occupy ELSE 0 END, grants = l.grants + 1
        WHERE l.id = ANY(ids);
    ELSE
        UPDATE pggcl.limit_state l
        SET level = CASE WHEN l.id = ANY(active_ids)
                         THEN pggcl._decayed(l.level, l.slot_decay_per_second, l.level_at, at) + occupy
                         ELSE l.level END,
            level_at = CASE WHEN l.id = ANY(active_ids) THEN at ELSE l.level_at END,
            grants = l.grants + 1
        WHERE l.id = ANY(ids);
    END IF;
END
$$;

-- Count waiter rows removed from the given (locked) limits without a grant (their session
-- closed or died: they gave up), one array element per row.
CREATE OR REPLACE FUNCTION pggcl._dequeued(limit_ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF limit_ids IS NOT NULL THEN
        UPDATE pggcl.limit_state l SET queued = l.queued - c.n, gave_up = l.gave_up + c.n
        FROM (SELECT x AS id, count(*)::integer AS n FROM unnest(limit_ids) x GROUP BY x) c
        WHERE l.id = c.id;
    END IF;
END
$$;

-- Queue a request on the locked limits `ids`: one waiter row per limit, all under one new id
-- (ids grow, so it is served after everyone queued there before it), counted in `queued`.
-- Returns the waiter id.
CREATE OR REPLACE FUNCTION pggcl._enqueue(ids bigint[], occupy integer, mode text, lease_id uuid,
                               session_id integer, holder text, ttl_seconds double precision,
                               at timestamptz) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    waiter_id bigint := nextval('pggcl.waiter_id_seq');
BEGIN
    INSERT INTO pggcl.waiters (id, limit_id, limit_ids, session_id, lease_id, occupy, mode, holder,
                               ttl_seconds, enqueued_at)
    SELECT waiter_id, x, ids, session_id, lease_id, occupy, mode, holder, ttl_seconds, at
    FROM unnest(ids) x;
    UPDATE pggcl.limit_state SET queued = queued + 1, enqueued = enqueued + 1 WHERE id = ANY(ids);
    RETURN waiter_id;
END
$$;

-- Reclaim what is dead on the locked limits `ids`: leases whose TTL passed, and the leases and
-- waiters of sessions whose connection has been gone for longer than their grace period.
-- Returns the next moment something here may expire (a TTL, the end of a grace), or NULL.
-- A session already seen dead whose lock is held again was either resumed or had its lock taken
-- by someone else (see _held_by_its_backend): only its own backend keeps it alive. The writes
-- to a session judged dead name the backend it was judged by, so that a resume committed
-- meanwhile (a new backend_pid) is left alone.
CREATE OR REPLACE FUNCTION pggcl._reap(ids bigint[], at timestamptz) RETURNS timestamptz
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    next_at timestamptz;
    owner record;
    alive boolean;
    s pggcl.sessions;
    since timestamptz;
BEGIN
    PERFORM pggcl._drop_leases(ids, NULL, at, at, true);

    SELECT min(expires_at) INTO next_at FROM pggcl.leases WHERE limit_id = ANY(ids);

    FOR owner IN SELECT c.session_id FROM pggcl._claimants(ids) c LOOP
        -- Probe first: a live session costs no write. A dead one's advisory lock is now ours
        -- until commit, so resume_session cannot take it meanwhile: a session is either resumed
        -- or reclaimed, never both.
        alive := pggcl._session_alive(owner.session_id);
        SELECT * INTO s FROM pggcl.sessions WHERE id = owner.session_id;
        IF FOUND AND alive AND s.dead_since IS NOT NULL THEN
            alive := pggcl._held_by_its_backend(s.id);
        END IF;
        IF NOT FOUND OR s.reclaimed THEN
            PERFORM pggcl._drop_session_claims(owner.session_id, ids, at, true);
        ELSIF alive THEN
            IF s.dead_since IS NOT NULL THEN
                UPDATE pggcl.sessions SET dead_since = NULL WHERE id = s.id;
            END IF;
        ELSE
            since := least(coalesce(s.dead_since, at), pggcl._first_seen_dead(s.id, s.backend_pid));
            IF s.dead_since IS DISTINCT FROM since THEN
                UPDATE pggcl.sessions SET dead_since = since
                WHERE id = s.id AND backend_pid = s.backend_pid;
            END IF;
            IF since + make_interval(secs => s.grace_seconds) <= at THEN
                UPDATE pggcl.sessions SET reclaimed = true WHERE id = s.id AND backend_pid = s.backend_pid;
                IF FOUND THEN
                    PERFORM pggcl._drop_session_claims(s.id, ids, at, true);
                END IF;
            ELSE
                next_at := least(next_at, since + make_interval(secs => s.grace_seconds));
            END IF;
        END IF;
    END LOOP;
    RETURN next_at;
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

-- End a session: release its leases, drop its waiters (serving whoever they blocked), forget it.
-- With no arguments, the session of this connection. Another connection must give the token.
CREATE OR REPLACE FUNCTION pggcl.close_session(session_id integer DEFAULT NULL, token uuid DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at timestamptz := clock_timestamp();
    mine integer := pggcl._connection_session();
    target integer := coalesce(close_session.session_id, mine);
    s pggcl.sessions;
    ids bigint[];
BEGIN
    SELECT * INTO s FROM pggcl.sessions x WHERE x.id = target;
    IF NOT FOUND THEN
        RETURN false;
    ELSIF target IS DISTINCT FROM mine AND s.token IS DISTINCT FROM close_session.token THEN
        RAISE EXCEPTION USING ERRCODE = 'GC007', MESSAGE = format('wrong token for session %s', s.id);
    END IF;
    ids := pggcl._lock(array(
        SELECT limit_id FROM pggcl.leases WHERE leases.session_id = target
        UNION SELECT limit_id FROM pggcl.waiters WHERE waiters.session_id = target));
    PERFORM pggcl._drop_session_claims(target, ids, at, false);
    PERFORM pggcl._grant(ids, at);
    DELETE FROM pggcl.sessions x WHERE x.id = target;
    DELETE FROM pggcl.sightings x WHERE x.session_id = target;
    IF target = mine THEN
        PERFORM pg_advisory_unlock(pggcl._lock_space(), target);
        PERFORM set_config('pggcl.session_id', '', false);
        PERFORM set_config('pggcl.session_key', '', false);
    END IF;
    RETURN true;
END
$$;

-- The usual acquire, shared by pggcl.acquire and pggcl.take: one name, concurrency mode, room
-- and nobody queued. One conditional UPDATE locks the limit row and re-checks the condition on
-- its latest version; then the lease row. False (and nothing changed) when it does not apply.
CREATE OR REPLACE FUNCTION pggcl._take_one(name text, occupy integer, session_id integer, holder text,
                                lease_id uuid, ttl_seconds double precision, at timestamptz)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    taken_id bigint;
BEGIN
    UPDATE pggcl.limit_state s SET held = s.held + occupy, grants = s.grants + 1
    WHERE s.name = _take_one.name AND s.active AND s.queued = 0
      AND s.held + occupy <= s."limit" + 1e-9 - pggcl._decayed(s.level, s.slot_decay_per_second, s.level_at, at)
    RETURNING s.id INTO taken_id;
    IF taken_id IS NULL THEN
        RETURN false;
    END IF;
    INSERT INTO pggcl.leases (id, limit_id, occupy, session_id, holder, acquired_at, expires_at, owner_role)
    SELECT lease_id, taken_id, occupy, session_id, holder, at, at + make_interval(secs => ttl_seconds),
           CASE WHEN session_id IS NULL THEN session_user END
    WHERE session_id IS NULL
       OR EXISTS (SELECT FROM pggcl.sessions x WHERE x.id = _take_one.session_id AND NOT x.reclaimed
                  AND coalesce(x.owner_role = session_user, true));
    IF NOT FOUND THEN
        PERFORM pggcl._require_session(session_id);  -- raises: the UPDATE is undone
    END IF;
    RETURN true;
END
$$;

-- The usual rate-limit acquire: one name, an active limit with decay, room and nobody queued.
-- One conditional UPDATE locks the row, re-checks the condition on its latest version and
-- raises the bucket. False (and nothing changed) when it does not apply.
CREATE OR REPLACE FUNCTION pggcl._take_one_rate(name text, occupy integer, at timestamptz) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE pggcl.limit_state s
    SET level = pggcl._decayed(s.level, s.slot_decay_per_second, s.level_at, at) + occupy, level_at = at,
        grants = s.grants + 1
    WHERE s.name = _take_one_rate.name AND s.active AND s.queued = 0 AND s.slot_decay_per_second > 0
      AND pggcl._fits(true, s."limit", s.held, s.level, s.slot_decay_per_second, s.level_at, occupy, at);
    RETURN FOUND;
END
$$;

-- Take `occupy` slots on every limit in `names` now, or queue the request (when `wait`) and
-- return its waiter_id: the session is notified on its channel when it is granted (see the
-- protocol in 30_sessions.sql). When granted at once, waiter_id is NULL. lease_id is the lease
-- the request holds or will hold (concurrency mode). created_limits names the limits created
-- inactive. `request_id`, a fresh UUID of the caller's choosing, becomes that lease id: a
-- caller who lost the answer (interrupted, disconnected) can still cancel(NULL, request_id).
-- All names or none. pggcl.try_acquire is this without waiting.
CREATE OR REPLACE FUNCTION pggcl.acquire(names text[], occupy integer DEFAULT 1, mode text DEFAULT 'concurrency',
                              strict boolean DEFAULT false, ttl_seconds double precision DEFAULT NULL,
                              holder text DEFAULT NULL, session_id integer DEFAULT NULL,
                              wait boolean DEFAULT true, request_id uuid DEFAULT NULL,
                              OUT granted boolean, OUT lease_id uuid, OUT waiter_id bigint,
                              OUT retry_after double precision, OUT created_limits text[])
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at timestamptz := clock_timestamp();
    wanted text[];
    locked pggcl.limit_state[];
    lim pggcl.limit_state;
    ids bigint[] := '{}';
    active_ids bigint[] := '{}';
    fits boolean := true;
    behind_others boolean := true;
    next_at timestamptz;
BEGIN
    -- 1. Input (GC003 names the parameter that is wrong).
    wanted := pggcl._checked_request(names, occupy, mode, ttl_seconds);
    IF length(holder) > 1000 THEN  -- (the holder bound: _holder_bound)
        PERFORM pggcl._check_holder(holder);
    END IF;
    granted := cardinality(wanted) = 0;
    IF granted THEN
        RETURN;
    END IF;

    -- 2. Whose request this is. A concurrency lease without a TTL, and any waiter, must belong
    -- to a session; plain SQL callers get this connection's session.
    IF session_id IS NULL AND (wait OR (mode = 'concurrency' AND ttl_seconds IS NULL)) THEN
        session_id := (SELECT s.session_id FROM pggcl.open_session() s);
    END IF;

    -- 3. The usual case, one name with room and nobody queued: one conditional UPDATE (and, in
    -- concurrency mode, the lease row).
    IF cardinality(wanted) = 1 THEN
        IF mode = 'concurrency' THEN
            lease_id := coalesce(request_id, gen_random_uuid());
            granted := pggcl._take_one(wanted[1], occupy, session_id, holder, lease_id, ttl_seconds, at);
        ELSE
            granted := pggcl._take_one_rate(wanted[1], occupy, at);
        END IF;
        IF granted THEN
            RETURN;
        END IF;
        lease_id := NULL;
    END IF;

    IF session_id IS NOT NULL THEN
        PERFORM pggcl._require_session(session_id);
    END IF;

    -- 4. Lock the limits, in id order. Missing ones are created inactive (they never block),
    -- unless strict. Created rows have higher ids than the rows already locked, so locking
    -- them next keeps the id order.
    locked := pggcl._lock_named(wanted);
    IF cardinality(locked) < cardinality(wanted) THEN
        created_limits := pggcl._create_missing(wanted, locked, strict);
        locked := pggcl._lock_named(wanted);
        IF cardinality(locked) <> cardinality(wanted) THEN
            RAISE EXCEPTION USING ERRCODE = 'GC001', MESSAGE = format(
                'a limit among %s was deleted while acquiring it; try again', array_to_string(wanted, ', '));
        END IF;
    END IF;

    -- 5. Refuse what can never be granted; see whether there is room now.
    FOREACH lim IN ARRAY locked LOOP
        ids := ids || lim.id;
        CONTINUE WHEN NOT lim.active;
        active_ids := active_ids || lim.id;
        IF occupy > lim."limit" THEN
            RAISE EXCEPTION USING ERRCODE = 'GC004', MESSAGE = format(
                'cannot occupy %s slots on limit %L: its limit is %s', occupy, lim.name, lim."limit");
        ELSIF mode = 'rate_limit' AND lim.slot_decay_per_second = 0 THEN
            RAISE EXCEPTION USING ERRCODE = 'GC005', MESSAGE = format(
                'cannot rate limit on %L: its slot_decay_per_second is 0', lim.name);
        END IF;
        fits := fits AND lim.queued = 0 AND pggcl._has_room(lim, occupy, at);
        behind_others := behind_others AND lim.queued > 0;
    END LOOP;

    -- 6. No room: reclaim what died here, serve those queued ahead of us, and look again. A
    -- request that will queue behind others on every limit skips this: it cannot pass them,
    -- and they keep the queue moving (each release grants; their heartbeats reclaim). This
    -- keeps the limit rows locked for a few statements while many workers queue and release.
    IF NOT fits AND NOT (wait AND behind_others) THEN
        next_at := pggcl._reap(ids, at);
        PERFORM pggcl._grant(ids, at);
        fits := pggcl._fits_now(ids, occupy, at);
    END IF;

    -- 7. Room on every active limit and nobody queued there: take it.
    IF fits THEN
        granted := true;
        lease_id := CASE WHEN mode = 'concurrency' THEN coalesce(request_id, gen_random_uuid()) END;
        PERFORM pggcl._take(ids, active_ids, occupy, mode, lease_id, session_id, holder, ttl_seconds, at);
        RETURN;
    END IF;

    -- 8. Refused: say when to look again, and queue when asked to (counted in `enqueued`), or
    -- count the refusal (`denied`) on the limits that stood in the way: full, or queued on.
    -- (A rate-limit waiter has no lease; its row keeps the request id, so that cancel can find
    -- it by that.)
    retry_after := pggcl._retry_after(ids, occupy, NULL, at, next_at);
    IF wait THEN
        lease_id := CASE WHEN mode = 'concurrency' THEN coalesce(request_id, gen_random_uuid()) END;
        waiter_id := pggcl._enqueue(ids, occupy, mode, coalesce(lease_id, request_id, gen_random_uuid()),
                                    session_id, holder, ttl_seconds, at);
    ELSE
        UPDATE pggcl.limit_state l SET denied = l.denied + 1
        WHERE l.id = ANY(active_ids)
          AND (l.queued > 0 OR NOT pggcl._fits(true, l."limit", l.held, l.level, l.slot_decay_per_second,
                                               l.level_at, occupy, at));
    END IF;
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
        RETURN CASE WHEN EXISTS (SELECT FROM pggcl.leases x WHERE x.id = cancel.lease_id
                                 AND pggcl._may_act_for(x.session_id)) THEN 'granted' ELSE 'gone' END;
    END IF;
    ids := pggcl._lock(array(SELECT limit_id FROM pggcl.waiters x WHERE x.id = cancel.waiter_id));
    IF pggcl._dequeue_waiter(cancel.waiter_id, 'gave_up', at) THEN
        PERFORM pggcl._grant(ids, at);
        RETURN 'cancelled';
    END IF;
    RETURN CASE WHEN EXISTS (SELECT FROM pggcl.leases x WHERE x.id = cancel.lease_id) THEN 'granted' ELSE 'gone' END;
END
$$;

-- Give back a lease's slots and serve the queue. False when the lease is not held (already
-- released, or reclaimed) or is another role's (only managers release any lease; a lease
-- without a session is the role's that took it), and then nothing changes.
CREATE OR REPLACE FUNCTION pggcl.release(lease_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at timestamptz := clock_timestamp();
    freed_limits bigint[];
    freed_slots integer[];
    held_since timestamptz;  -- when it was granted: the same on each of its rows
    held_for double precision;
    bucket integer;
    lim pggcl.limit_state;
BEGIN
    -- The lease rows go first; everyone who deletes lease rows under a limit lock skips rows
    -- that are locked, so taking the limit locks afterwards cannot deadlock.
    WITH gone AS (
        DELETE FROM pggcl.leases x
        WHERE x.id = release.lease_id AND pggcl._may_act_on(x.session_id, x.owner_role)
        RETURNING x.limit_id, x.occupy, x.acquired_at
    )
    -- (min, not array_agg: one more array here measured 4 % of a take+release cycle's server
    -- time, SQL loop of 2,000 cycles, 20 alternating rounds.)
    SELECT array_agg(gone.limit_id), array_agg(gone.occupy), min(gone.acquired_at)
      INTO freed_limits, freed_slots, held_since FROM gone;
    IF freed_limits IS NULL THEN
        RETURN false;
    ELSIF cardinality(freed_limits) = 1 THEN
        -- The usual case: one limit. Its slots go straight to the head of its queue; the hold
        -- is counted in the same UPDATE (as _give_back does).
        -- (The bucket in a variable: 2 % of the cycle's server time less than _bucket in the
        -- UPDATE twice, measured as above.)
        held_for := pggcl._seconds(held_since, at);
        bucket := pggcl._bucket(held_for);
        UPDATE pggcl.limit_state
        SET held = held - freed_slots[1], hold_seconds_sum = hold_seconds_sum + held_for,
            hold_buckets[bucket] = hold_buckets[bucket] + 1
        WHERE id = freed_limits[1]
        RETURNING * INTO lim;
        IF lim.queued > 0 THEN
            PERFORM pggcl._serve(lim, at);
        END IF;
    ELSE
        PERFORM pggcl._lock(freed_limits);
        PERFORM pggcl._give_back(freed_limits, freed_slots, array_fill(held_since, ARRAY[cardinality(freed_limits)]),
                                 at, false);
        PERFORM pggcl._grant(freed_limits, at);
    END IF;
    RETURN true;
END
$$;

-- Every limit with its occupancy now (never a stale stored number). Waiters of dead sessions
-- are not counted in `waiting`, nor the slots of dead sessions past their grace in
-- `held_slots` (whether or not anyone reclaimed them yet: see _dead_since): they are gone the
-- moment anyone next locks the limit.
-- active_slots = held_slots + decaying_slots.
-- Then the counters, which only grow (docs/protocol.md says what each counts): grants,
-- enqueued, denied, gave_up, rejected, reclaimed_slots; the wait time of every grant (0 s for
-- one granted at once) and the hold time of every lease row that ended, in seconds, each as a
-- count, a sum and cumulative buckets: element i counts those of at most the i-th bound of
-- 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 600 s and +Inf (the 12th equals the count),
-- as Prometheus histograms have them. They are read from the limit's row as it stands, without
-- a lock: reading never holds up an acquire.
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
       h.hold_seconds_buckets
FROM pggcl.limit_state l,
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

DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'pggcl.acquire(text[], integer, text, boolean, double precision, text, integer, boolean, uuid)',
        'pggcl.cancel(bigint, uuid)',
        'pggcl.release(uuid)'
    ]::regprocedure[] LOOP
        EXECUTE format('ALTER FUNCTION %s SET plan_cache_mode = force_generic_plan '
                       'SET enable_seqscan = off SET jit = off', f);
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION pggcl._bucket(double precision), pggcl._seconds(timestamptz, timestamptz), pggcl._counted(bigint[], integer[]), pggcl._give_back(bigint[], integer[], timestamptz[], timestamptz, boolean), pggcl._drop_leases(bigint[], integer, timestamptz, timestamptz, boolean), pggcl._dequeue_waiter(bigint, text, timestamptz), pggcl._drop_session_claims(integer, bigint[], timestamptz, boolean) FROM PUBLIC;

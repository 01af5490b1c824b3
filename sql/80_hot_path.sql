-- The hot path's planner settings, in one place. These public functions run for every
-- acquire and release, so they pin: generic plans (planned once per connection, never
-- re-planned per call), no sequential scans (the first plan is made while the tables are
-- small, and must stay right as they grow), and no JIT (a plan costed high by the seqscan
-- penalty must not trigger a compile). Each function's own SET search_path stays on its
-- definition; these settings are added to it here, and pg_get_functiondef shows them all.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'pggcl.take(text, integer, integer, text, uuid)',
        'pggcl.acquire(text[], integer, text, boolean, double precision, text, integer, boolean, uuid, double precision)',
        'pggcl.try_acquire(text[], integer, text, boolean, double precision, text, integer, double precision)',
        'pggcl.recheck(bigint, uuid)',
        'pggcl.cancel(bigint, uuid)',
        'pggcl.release(uuid)',
        'pggcl.renew(uuid, double precision)'
    ]::regprocedure[] LOOP
        EXECUTE format('ALTER FUNCTION %s SET plan_cache_mode = force_generic_plan '
                       'SET enable_seqscan = off SET jit = off', f);
    END LOOP;
END
$$;

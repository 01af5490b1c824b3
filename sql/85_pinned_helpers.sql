-- Every PL/pgSQL function pins its search_path (issue #13 point 4, to the letter): the
-- public ones on their definitions, the helpers here, by the catalog, so that a helper added
-- later cannot be missed (tests/sql/test_hardening.py fails on any that is not pinned). The
-- helpers ran only under a pinned caller's search_path before as well, since no pggcl role
-- may call them; pinned, a helper is also safe when its owner or a superuser calls it
-- directly on a hostile path, and its safety no longer rests on who may call it.
-- The SQL helpers stay unpinned (a SET would stop their inlining into the hot path's
-- queries): they schema-qualify every function and operator instead.
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

-- Revision 0011, upgrade from 0010. Frozen once released: never edit this file; a change
-- to the engine is a new revision.
-- What 0011 changes (issue #13 point 4, to the letter): every PL/pgSQL helper pins its
-- search_path to pg_catalog, pg_temp, as the public functions do. Before, the helpers ran
-- only under a pinned caller's search_path because no pggcl role may call them; now their
-- safety does not rest on who may call them. Nothing else changes.
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

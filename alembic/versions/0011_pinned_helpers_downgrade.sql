-- Revision 0011, downgrade to 0010: the PL/pgSQL helpers (every PL/pgSQL function that is not
-- SECURITY DEFINER) pin no search_path again. Frozen once released.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure
        FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
        WHERE p.pronamespace = 'pggcl'::regnamespace AND l.lanname = 'plpgsql'
          AND NOT p.prosecdef
        ORDER BY 1
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s RESET search_path', f);
    END LOOP;
END
$$;

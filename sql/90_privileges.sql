-- Who may do what. pggcl_user acquires, releases and reads; pggcl_admin also manages limits.
-- Public functions are SECURITY DEFINER with a pinned search_path; tables stay private.

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pggcl FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA pggcl FROM PUBLIC;
GRANT USAGE ON SCHEMA pggcl TO pggcl_user, pggcl_admin;

GRANT SELECT ON pggcl.limits, pggcl.holders, pggcl.queue, pggcl.templates, pggcl.template_totals
TO pggcl_user;
-- The limits view computes each bucket's level with this (pure) function.
GRANT EXECUTE ON FUNCTION pggcl._decayed(double precision, double precision, timestamptz, timestamptz)
TO pggcl_user;
-- And each session's liveness with these: _same_backend (SQL, every function and operator
-- schema-qualified) and _dead_since (SECURITY DEFINER, pinned; it records first sightings of
-- dead sessions and checks that they are dead).
GRANT EXECUTE ON FUNCTION pggcl._same_backend(integer, timestamptz), pggcl._dead_since(integer)
TO pggcl_user;
GRANT EXECUTE ON FUNCTION
    pggcl.try_acquire(text[], integer, text, boolean, double precision, text, integer, double precision),
    pggcl.acquire(text[], integer, text, boolean, double precision, text, integer, boolean, uuid, double precision),
    pggcl.take(text, integer, integer, text, uuid),
    pggcl.recheck(bigint, uuid),
    pggcl.cancel(bigint, uuid),
    pggcl.release(uuid),
    pggcl.renew(uuid, double precision),
    pggcl.open_session(double precision),
    pggcl.resume_session(integer, uuid),
    pggcl.close_session(integer, uuid),
    pggcl.heartbeat(integer),
    pggcl.reclaim(),
    pggcl.explain(bigint, integer)
TO pggcl_user;

GRANT EXECUTE ON FUNCTION
    pggcl.create_limit(text, integer, double precision, boolean, double precision),
    pggcl.update_limit(text, integer, double precision, boolean, text, double precision),
    pggcl.delete_limit(text)
TO pggcl_admin;

"""No trojans (issue #13, point 4). A tenant who may create objects in `public` (the default
before PostgreSQL 15, kept on upgrade) and in a schema on the reader's path plants functions and
operators that shadow what the engine uses. A superuser and a manager then read every view and
call every public function under hostile search_paths. Nothing planted may run: no marker row,
and the tenant does not become SUPERUSER."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pggcl import schema
from tests.security.conftest import Cast, Role, _create_role
from tests.security.helpers import Connect, RawSession, attempt, describe, one, rows, value

#: (operator, left type, right type, result type)
OPERATORS = [
    ("=", "float8", "int4", "boolean"),
    ("=", "float8", "float8", "boolean"),
    ("=", "int4", "int4", "boolean"),
    ("=", "int8", "int8", "boolean"),
    ("=", "int4", "int8", "boolean"),
    ("=", "text", "text", "boolean"),
    ("=", "uuid", "uuid", "boolean"),
    ("<>", "text", "text", "boolean"),
    ("<>", "int4", "int4", "boolean"),
    ("<", "float8", "float8", "boolean"),
    ("<=", "float8", "float8", "boolean"),
    ("<=", "float8", "numeric", "boolean"),
    (">", "float8", "float8", "boolean"),
    (">=", "float8", "float8", "boolean"),
    (">", "int4", "int4", "boolean"),
    ("<", "int4", "int4", "boolean"),
    ("<=", "timestamptz", "timestamptz", "boolean"),
    ("-", "float8", "float8", "float8"),
    ("*", "float8", "float8", "float8"),
    ("+", "float8", "float8", "float8"),
    ("+", "int4", "int4", "int4"),
    ("+", "int4", "float8", "float8"),
    ("-", "int4", "int4", "int4"),
    ("-", "timestamptz", "timestamptz", "interval"),
    ("+", "timestamptz", "interval", "timestamptz"),
    ("||", "text", "text", "text"),
    ("~", "text", "text", "boolean"),
    ("!~", "text", "text", "boolean"),
    ("&&", "int8[]", "int8[]", "boolean"),
    ("<@", "int8[]", "int8[]", "boolean"),
]

#: (name, argument list, result type, call of the real one)
FUNCTIONS = [
    ("date_part", "f text, i interval", "float8", "pg_catalog.date_part(f, i)"),
    ("date_part", "f text, t timestamptz", "float8", "pg_catalog.date_part(f, t)"),
    ("extract", "f text, i interval", "numeric", "pg_catalog.extract(f, i)"),
    ("length", "t text", "int4", "pg_catalog.length(t)"),
    ("left", "t text, n int4", "text", "pg_catalog.left(t, n)"),
    ("now", "", "timestamptz", "pg_catalog.now()"),
    ("clock_timestamp", "", "timestamptz", "pg_catalog.clock_timestamp()"),
    ("gen_random_uuid", "", "uuid", "pg_catalog.gen_random_uuid()"),
    ("pg_backend_pid", "", "int4", "pg_catalog.pg_backend_pid()"),
    ("pg_notify", "c text, p text", "void", "pg_catalog.pg_notify(c, p)"),
    ("current_setting", "n text, m boolean", "text", "pg_catalog.current_setting(n, m)"),
    ("quote_literal", "t text", "text", "pg_catalog.quote_literal(t)"),
    ("array_to_string", "a anyarray, s text", "text", "pg_catalog.array_to_string(a, s)"),
    ("cardinality", "a anyarray", "int4", "pg_catalog.cardinality(a)"),
    ("floor", "x float8", "float8", "pg_catalog.floor(x)"),
    (
        "make_interval",
        "years int4 DEFAULT 0, months int4 DEFAULT 0, weeks int4 DEFAULT 0, days int4 DEFAULT 0, "
        "hours int4 DEFAULT 0, mins int4 DEFAULT 0, secs float8 DEFAULT 0",
        "interval",
        "pg_catalog.make_interval(years, months, weeks, days, hours, mins, secs)",
    ),
    (
        "pg_try_advisory_xact_lock",
        "a int4, b int4",
        "boolean",
        "pg_catalog.pg_try_advisory_xact_lock(a, b)",
    ),
    ("pg_try_advisory_lock", "a int4, b int4", "boolean", "pg_catalog.pg_try_advisory_lock(a, b)"),
]


def plant(conn: psycopg.Connection[Any], schemas: list[str], tenant: str) -> None:
    """As the tenant: a marker table, a mark function that also tries to make the tenant a
    superuser, and shadows of operators and functions in each of `schemas`."""
    conn.execute(
        """CREATE TABLE public.trojan_marks (what text, who text);
           GRANT INSERT, SELECT ON public.trojan_marks TO PUBLIC"""
    )
    conn.execute(
        sql.SQL(
            """CREATE FUNCTION public.trojan_mark(what text) RETURNS boolean
               LANGUAGE plpgsql VOLATILE AS $f$
               BEGIN
                   INSERT INTO public.trojan_marks VALUES (what, current_user);
                   BEGIN
                       EXECUTE {};
                   EXCEPTION WHEN OTHERS THEN NULL;
                   END;
                   RETURN true;
               END $f$"""
        ).format(sql.Literal(f'ALTER ROLE "{tenant}" SUPERUSER'))
    )
    for nsp in schemas:
        for i, (op, left, right, result) in enumerate(OPERATORS):
            fn = sql.Identifier(nsp, f"trojan_op_{i}")
            ret = "NULL" if result == "void" else f"a OPERATOR(pg_catalog.{op}) b"
            conn.execute(
                sql.SQL(
                    """CREATE FUNCTION {fn}(a {l}, b {r}) RETURNS {res} LANGUAGE plpgsql VOLATILE
                       AS $f$ BEGIN PERFORM public.trojan_mark({what}); RETURN {ret}; END $f$"""
                ).format(
                    fn=fn,
                    l=sql.SQL(left),
                    r=sql.SQL(right),
                    res=sql.SQL(result),
                    what=sql.Literal(f"{nsp}.{op}({left},{right})"),
                    ret=sql.SQL(ret),
                )
            )
            conn.execute(
                sql.SQL(
                    "CREATE OPERATOR {}.{} (LEFTARG = {}, RIGHTARG = {}, FUNCTION = {})"
                ).format(sql.Identifier(nsp), sql.SQL(op), sql.SQL(left), sql.SQL(right), fn)
            )
        for name, args, result, real in FUNCTIONS:
            body = "PERFORM public.trojan_mark({what}); " + (
                f"PERFORM {real}; RETURN;" if result == "void" else f"RETURN {real};"
            )
            conn.execute(
                sql.SQL(
                    "CREATE FUNCTION {fn}({args}) RETURNS {res} LANGUAGE plpgsql VOLATILE "
                    "AS $f$ BEGIN " + body + " END $f$"
                ).format(
                    fn=sql.Identifier(nsp, name),
                    args=sql.SQL(args),
                    res=sql.SQL(result),
                    what=sql.Literal(f"{nsp}.{name}({args})"),
                )
            )


def give_the_tenant_schemas(admin: psycopg.Connection[Any], tenant: Role) -> None:
    dbname = admin.info.dbname
    admin.execute(
        sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(tenant.name))
    )
    admin.execute(
        sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(dbname), sql.Identifier(tenant.name)
        )
    )


def plant_everywhere(connect: Connect, admin: psycopg.Connection[Any], tenant: Role) -> None:
    give_the_tenant_schemas(admin, tenant)
    conn = connect(tenant.dsn)
    conn.execute("CREATE SCHEMA evil; GRANT USAGE ON SCHEMA evil TO PUBLIC")
    plant(conn, ["public", "evil"], tenant.name)


def assert_nothing_ran(admin: psycopg.Connection[Any], tenant: Role) -> None:
    admin.execute("RESET search_path")
    marks = rows(admin, "SELECT DISTINCT what, who FROM public.trojan_marks ORDER BY 1, 2")
    superuser = value(admin, "SELECT rolsuper FROM pg_roles WHERE rolname = %s", tenant.name)
    assert (marks, superuser) == ([], False), f"planted code ran: {marks}; superuser: {superuser}"


PATHS = [
    '"$user", public',
    "public, pggcl, pg_catalog",
    "evil, public, pggcl, pg_catalog",
    "pggcl, evil, pg_catalog, public",
]


def read_everything_and_call_everything(conn: psycopg.Connection[Any], manager: bool) -> None:
    """Every view, and every public function, with arguments that make them work."""
    for view in ("pggcl.limits", "pggcl.holders", "pggcl.queue"):
        conn.execute(f"SELECT * FROM {view}").fetchall()
    conn.execute("SELECT * FROM pggcl.create_limit('trojan-a', 1)")
    conn.execute("SELECT * FROM pggcl.create_limit('trojan-r', 3, 0.5)")
    s = one(conn, "SELECT * FROM pggcl.open_session(5)")
    sid = s["session_id"]
    lease = one(conn, "SELECT * FROM pggcl.try_acquire('{trojan-a}', ttl_seconds => 60)")
    assert lease["granted"], lease
    conn.execute("SELECT * FROM pggcl.try_acquire('{trojan-r}', 1, 'rate_limit')")
    conn.execute("SELECT * FROM pggcl.acquire('{trojan-r,trojan-missing}', 1, 'rate_limit')")
    w = one(conn, "SELECT * FROM pggcl.acquire('{trojan-a}', session_id => %s)", sid)
    assert w["waiter_id"] is not None, w
    conn.execute("SELECT pggcl.take('trojan-r', 1, %s, 'me', %s)", (sid, uuid.uuid4()))
    conn.execute("SELECT * FROM pggcl.recheck(%s, %s)", (w["waiter_id"], w["lease_id"]))
    conn.execute("SELECT pggcl.heartbeat(%s)", (sid,))
    conn.execute("SELECT pggcl.renew(%s, 30)", (lease["lease_id"],))
    conn.execute("SELECT pggcl.reclaim()")
    for view in ("pggcl.limits", "pggcl.holders", "pggcl.queue"):
        conn.execute(f"SELECT * FROM {view}").fetchall()
    conn.execute("SELECT pggcl.cancel(%s, %s)", (w["waiter_id"], w["lease_id"]))
    conn.execute("SELECT pggcl.release(%s)", (lease["lease_id"],))
    conn.execute("SELECT * FROM pggcl.update_limit('trojan-a', 2, 1.0, true, 'trojan-b')")
    conn.execute("SELECT pggcl.resume_session(%s, %s)", (sid, s["token"]))
    conn.execute("SELECT pggcl.close_session()")
    conn.execute("SELECT pggcl.delete_limit('trojan-b')")
    conn.execute("SELECT pggcl.delete_limit('trojan-r')")
    conn.execute("SELECT pggcl.delete_limit('trojan-missing')")


def _limits_have_a_decaying_level(cast: Cast, connect: Connect) -> None:
    admin = connect(cast.admin.dsn)
    admin.execute("SELECT pggcl.create_limit('lvl', 5, 0.001)")
    admin.execute("SELECT * FROM pggcl.try_acquire('{lvl}', 2, 'rate_limit')")
    other = RawSession(connect(cast.other.dsn))
    other.hold("lvl")
    admin.execute("SELECT pggcl.create_limit('full', 1)")
    admin.execute("SELECT pggcl.try_acquire('{full}', ttl_seconds => 600)")
    other.wait_for("full")


@pytest.mark.parametrize("path", PATHS)
def test_the_superuser_reads_the_views_safely(cast: Cast, connect: Connect, path: str) -> None:
    _limits_have_a_decaying_level(cast, connect)
    admin = connect(cast.admin.dsn)
    plant_everywhere(connect, admin, cast.tenant)
    reader = connect(cast.admin.dsn)
    reader.execute(f"SET search_path = {path}")
    for view in ("pggcl.limits", "pggcl.holders", "pggcl.queue"):
        reader.execute(f"SELECT * FROM {view}").fetchall()
    assert_nothing_ran(admin, cast.tenant)


@pytest.mark.parametrize("path", PATHS[1:3])
def test_the_superuser_calls_every_function_safely(cast: Cast, connect: Connect, path: str) -> None:
    admin = connect(cast.admin.dsn)
    plant_everywhere(connect, admin, cast.tenant)
    caller = connect(cast.admin.dsn)
    caller.execute(f"SET search_path = {path}")
    read_everything_and_call_everything(caller, manager=True)
    assert_nothing_ran(admin, cast.tenant)


@pytest.mark.parametrize("path", PATHS[1:3])
def test_a_manager_calls_every_function_safely(cast: Cast, connect: Connect, path: str) -> None:
    admin = connect(cast.admin.dsn)
    plant_everywhere(connect, admin, cast.tenant)
    caller = connect(cast.manager.dsn)
    caller.execute(f"SET search_path = {path}")
    read_everything_and_call_everything(caller, manager=True)
    assert_nothing_ran(admin, cast.tenant)


def test_installing_into_a_database_with_planted_objects(
    empty_dsn: str, connect: Connect, pggcl_template: str
) -> None:
    """`pggcl db upgrade` run by a superuser where a tenant already planted shadows in public:
    no installed object depends on what the tenant planted, and nothing ran."""
    tenant = _create_role(empty_dsn, "tenant", "pggcl_user")
    try:
        admin = connect(empty_dsn)
        give_the_tenant_schemas(admin, tenant)
        plant(connect(tenant.dsn), ["public"], tenant.name)
        schema.upgrade(empty_dsn)
        foreign = rows(
            admin,
            """SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid) AS obj,
                      pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid) AS uses
               FROM pg_depend d
               JOIN pg_proc rp ON d.refclassid = 'pg_proc'::regclass AND rp.oid = d.refobjid
               WHERE rp.pronamespace = 'public'::regnamespace
               UNION
               SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid),
                      pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid)
               FROM pg_depend d
               JOIN pg_operator ro ON d.refclassid = 'pg_operator'::regclass
                                  AND ro.oid = d.refobjid
               WHERE ro.oprnamespace = 'public'::regnamespace""",
        )
        assert [f"{f['obj']} uses {f['uses']}" for f in foreign if "pggcl" in f["obj"]] == []
        assert_nothing_ran(admin, tenant)
        reader = connect(empty_dsn)
        reader.execute("SELECT pggcl.create_limit('x', 1)")
        _, error = attempt(reader, "SELECT * FROM pggcl.limits")
        assert error is None, describe(error) if error else ""
        assert_nothing_ran(admin, tenant)
    finally:
        with psycopg.connect(empty_dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (tenant.name,),
            )
            conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(tenant.name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(tenant.name)))

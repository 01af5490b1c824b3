"""No trojans: a superuser reads the views in a database where a tenant planted operators and
functions on the superuser's search_path, and nothing planted runs (issue #13, point 4).

`pggcl.limits` calls pggcl._decayed as the reader, and PostgreSQL inlines that SQL function into
the reader's query, parsed with the reader's search_path: an unqualified `level = 0` (float8 =
int4) would find the tenant's `public.=`. Every SQL helper qualifies its operators instead."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

# (operator, left, right, result): what the engine's SQL helpers compute with.
OPERATORS = [
    ("=", "float8", "int4", "boolean"),
    ("=", "float8", "float8", "boolean"),
    ("=", "text", "text", "boolean"),
    ("=", "int4", "int4", "boolean"),
    ("=", "int8", "int8", "boolean"),
    ("-", "float8", "float8", "float8"),
    ("*", "float8", "float8", "float8"),
    ("+", "float8", "float8", "float8"),
    ("+", "int4", "float8", "float8"),
    ("-", "timestamptz", "timestamptz", "interval"),
    ("<=", "float8", "float8", "boolean"),
    ("<=", "float8", "numeric", "boolean"),
    ("<>", "text", "text", "boolean"),
    ("||", "text", "text", "text"),
]
FUNCTIONS = [
    ("date_part", "f text, i interval", "float8", "pg_catalog.date_part(f, i)"),
    ("clock_timestamp", "", "timestamptz", "pg_catalog.clock_timestamp()"),
    ("length", "t text", "int4", "pg_catalog.length(t)"),
]
# The reads use no operator of their own: the reader's own `decaying_slots = 0` would find the
# shadow, and that is the reader's query, not the engine's.
READS = [
    "SELECT * FROM pggcl.limits",
    "SELECT * FROM pggcl.holders",
    "SELECT * FROM pggcl.queue",
    "SELECT name, active_slots, decaying_slots, waiting FROM pggcl.limits",
]


@pytest.fixture
def tenant(pggcl_dsn: str, pggcl_role_dsn: Callable[[str], str]) -> Iterator[str]:
    """A pggcl_user login role that may create objects in public (as before PostgreSQL 15)."""
    dsn = pggcl_role_dsn("pggcl_user")
    with psycopg.connect(pggcl_dsn, autocommit=True) as conn:
        conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    yield dsn


def _plant(conn: psycopg.Connection[Any]) -> str:
    """As the tenant: a marker table, and shadows that mark it and try to make the tenant a
    superuser (which succeeds only if a superuser runs them). Returns the tenant's name."""
    row = conn.execute("SELECT current_user::text").fetchone()
    assert row is not None
    tenant: str = row[0]
    conn.execute("CREATE TABLE public.marks (what text, who text)")
    conn.execute("GRANT INSERT ON public.marks TO PUBLIC")
    conn.execute(
        sql.SQL(
            """CREATE FUNCTION public.mark(what text) RETURNS void LANGUAGE plpgsql AS $f$
               BEGIN
                   INSERT INTO public.marks VALUES (what, current_user);
                   BEGIN
                       EXECUTE {};
                   EXCEPTION WHEN insufficient_privilege THEN NULL;
                   END;
               END $f$"""
        ).format(sql.Literal(f'ALTER ROLE "{tenant}" SUPERUSER'))
    )
    for i, (op, left, right, result) in enumerate(OPERATORS):
        fn = sql.Identifier(f"trojan_{i}")
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION public.{fn}(a {l}, b {r}) RETURNS {res} LANGUAGE plpgsql AS "
                "$f$ BEGIN PERFORM public.mark({what}); RETURN a OPERATOR(pg_catalog.{op}) b; "
                "END $f$"
            ).format(
                fn=fn,
                l=sql.SQL(left),
                r=sql.SQL(right),
                res=sql.SQL(result),
                what=sql.Literal(f"{left} {op} {right}"),
                op=sql.SQL(op),
            )
        )
        conn.execute(
            sql.SQL(
                "CREATE OPERATOR public.{op} (LEFTARG = {l}, RIGHTARG = {r}, FUNCTION = {fn})"
            ).format(
                op=sql.SQL(op), l=sql.SQL(left), r=sql.SQL(right), fn=sql.SQL(f"public.trojan_{i}")
            )
        )
    for name, args, result, real in FUNCTIONS:
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION public.{name}({args}) RETURNS {res} LANGUAGE plpgsql AS "
                "$f$ BEGIN PERFORM public.mark({what}); RETURN {real}; END $f$"
            ).format(
                name=sql.Identifier(name),
                args=sql.SQL(args),
                res=sql.SQL(result),
                what=sql.Literal(name),
                real=sql.SQL(real),
            )
        )
    return tenant


@pytest.mark.parametrize("path", ["public", "public, pg_catalog", '"$user", public, pg_catalog'])
def test_a_superuser_reading_the_views_runs_no_tenant_code(
    pggcl_dsn: str, tenant: str, path: str
) -> None:
    with psycopg.connect(pggcl_dsn, autocommit=True) as su:
        su.execute("SELECT pggcl.create_limit('db', 5, 2.0)")
        su.execute("SELECT pggcl.create_limit('idle', 5, 0)")
    with psycopg.connect(tenant, autocommit=True) as conn:
        tenant_name = _plant(conn)
        # Something to show: a decaying level, a lease, a waiter.
        conn.execute("SELECT * FROM pggcl.try_acquire('{db}', 2, 'rate_limit')")
        conn.execute("SELECT * FROM pggcl.acquire('{idle}', 5)")
        conn.execute("SELECT * FROM pggcl.acquire('{idle}', 1)")
        with psycopg.connect(pggcl_dsn, autocommit=True) as su:
            su.execute(sql.SQL("SET search_path = {}").format(sql.SQL(path)))
            assert su.execute("SELECT current_setting('is_superuser')").fetchone() == ("on",)
            for read in READS:
                su.execute(read).fetchall()
            # The public functions pin their search_path.
            su.execute("SELECT pggcl.update_limit('db', 6)")
            su.execute("SELECT pggcl.reclaim()")
            su.execute("SELECT * FROM pggcl.try_acquire('{db}', 1, 'rate_limit')")
            marks = su.execute("SELECT what, who FROM public.marks").fetchall()
            rolsuper = su.execute(
                "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = %s", (tenant_name,)
            ).fetchone()
    assert marks == [], f"the tenant's code ran: {marks}"
    assert rolsuper == (False,), "the tenant became a superuser"


def test_the_attack_works_without_the_qualification(pggcl_dsn: str, tenant: str) -> None:
    """The test's own check: the same shadows do run when a function compares unqualified, as
    pggcl._decayed did before revision 0003 (a copy of it here, outside schema pggcl)."""
    with psycopg.connect(pggcl_dsn, autocommit=True) as su:
        su.execute(
            """CREATE FUNCTION pg_temp.old_decayed(level float8) RETURNS float8
               LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN level = 0 THEN 0 ELSE level END $$"""
        )
        with psycopg.connect(tenant, autocommit=True) as conn:
            tenant_name = _plant(conn)
        su.execute("SET search_path = public, pg_catalog")
        su.execute("SELECT pg_temp.old_decayed(1.5)")
        marks = su.execute("SELECT what FROM public.marks").fetchall()
        became = su.execute(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = %s", (tenant_name,)
        ).fetchone()
        su.execute(sql.SQL("ALTER ROLE {} NOSUPERUSER").format(sql.Identifier(tenant_name)))
    assert ("float8 = int4",) in marks
    assert became == (True,)

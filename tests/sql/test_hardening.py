"""What keeps the engine's functions safe on any caller's search_path, checked on the catalog:
the rules of "No trojans" in sql/10_internals.sql."""

from __future__ import annotations

import re
from typing import Any

import psycopg

FUNCTIONS = """
SELECT p.proname, l.lanname, p.prosecdef, coalesce(p.proconfig, '{}'), p.prosrc,
       has_function_privilege('pggcl_user', p.oid, 'EXECUTE')
           OR has_function_privilege('pggcl_admin', p.oid, 'EXECUTE')
           OR coalesce(p.proacl::text ~ '(^|[{,])=X', true) AS callable
FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
WHERE p.pronamespace = 'pggcl'::regnamespace
ORDER BY p.proname
"""
PINNED = "search_path=pg_catalog, pg_temp"
# Syntax that looks like a call but is not looked up on the search_path.
SYNTAX = {"CASE", "WHEN", "coalesce", "greatest", "least", "extract", "ANY", "NOT", "AND", "OR"}


def _unqualified(body: str) -> list[str]:
    """Operators and function calls in an SQL function's body that are not schema-qualified."""
    text = re.sub(r"'(?:[^']|'')*'", "''", body)  # string literals
    text = re.sub(r"OPERATOR\(pg_catalog\.[^)]+\)", " § ", text)
    text = re.sub(r"::\s*(double precision|integer|text|bigint)", " ", text)  # casts
    text = re.sub(r"\b\d+(\.\d+)?e-?\d+\b|\b\d+\b", " ", text)  # numbers (1e-9)
    found = re.findall(r"[-+*/<>=~!|&%^@#]+", text)
    # Syntax whose operators are looked up on the search_path.
    found += re.findall(r"\bDISTINCT\s+FROM\b|\bBETWEEN\b|\bIN\s*\(|\bI?LIKE\b", text, re.I)
    for name in re.findall(r"(?<![.\w])(\w+)\s*\(", text):
        if name not in SYNTAX and name.upper() not in SYNTAX:
            found.append(f"{name}(")
    return found


def test_every_function_is_safe_on_a_hostile_search_path(db: psycopg.Connection[Any]) -> None:
    rows = db.execute(FUNCTIONS).fetchall()
    assert len(rows) > 40
    problems = []
    for name, language, definer, config, body, callable_ in rows:
        pinned = PINNED in config
        if definer and not pinned:
            problems.append(f"{name}: SECURITY DEFINER without a pinned search_path")
        if language == "sql" and not pinned and (bad := _unqualified(body)):
            problems.append(f"{name}: unqualified {bad}")
        if language == "plpgsql" and not pinned:
            # Revision 0011: helpers too (sql/85_pinned_helpers.sql), whoever may call them.
            problems.append(f"{name}: PL/pgSQL without a pinned search_path")
        if language == "plpgsql" and not definer and callable_:
            problems.append(f"{name}: a PL/pgSQL helper callable by a role")
    assert problems == []


def test_the_check_finds_an_unqualified_body() -> None:
    assert _unqualified("SELECT CASE WHEN level = 0 THEN 0 ELSE level END") == ["="]
    assert _unqualified("SELECT date_part('epoch', a OPERATOR(pg_catalog.-) b)") == ["date_part("]
    assert _unqualified("SELECT pg_catalog.length(x) OPERATOR(pg_catalog.<=) 255") == []
    assert _unqualified("SELECT x IS NOT DISTINCT FROM y") == ["DISTINCT FROM"]
    assert _unqualified("SELECT nullif(x, '')") == ["nullif("]
    assert _unqualified("SELECT a OPERATOR(pg_catalog.-) (b OPERATOR(pg_catalog.*) c)") == []


# Issue #13 point 4, from the side of what a role may run: everything another role may
# execute, directly or through a view, is pinned (SECURITY DEFINER or a pinned helper,
# search_path = pg_catalog, pg_temp) or an SQL helper that schema-qualifies every function and
# operator and calls no pggcl function but such helpers; and no role but the schema owner may
# execute a PL/pgSQL helper (a second wall since revision 0011 pinned them all).
GRANTEES = """
SELECT p.oid::regprocedure::text, l.lanname, p.prosecdef, coalesce(p.proconfig, '{}'), p.prosrc,
       array(SELECT coalesce(r.rolname, 'PUBLIC') FROM aclexplode(p.proacl) a
             LEFT JOIN pg_roles r ON r.oid = a.grantee
             WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner)
FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
WHERE p.pronamespace = 'pggcl'::regnamespace
"""
VIEW_FUNCTIONS = """
SELECT DISTINCT v.relname, d.refobjid::regprocedure::text
FROM pg_depend d JOIN pg_rewrite w ON w.oid = d.objid JOIN pg_class v ON v.oid = w.ev_class
WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_proc'::regclass
  AND v.relnamespace = 'pggcl'::regnamespace
  AND d.refobjid IN (SELECT oid FROM pg_proc WHERE pronamespace = 'pggcl'::regnamespace)
"""


def test_no_unpinned_helper_is_reachable_but_through_pinned_functions(
    db: psycopg.Connection[Any],
) -> None:
    functions = {
        signature: (language, definer, PINNED in config, body, grantees)
        for signature, language, definer, config, body, grantees in db.execute(GRANTEES)
    }
    by_name: dict[str, list[str]] = {}
    for signature in functions:
        by_name.setdefault(signature.split("(")[0], []).append(signature)

    def safe(signature: str, seen: frozenset[str] = frozenset()) -> list[str]:
        """Why running `signature` on a hostile search_path is unsafe ([] when it is safe)."""
        language, _, pinned, body, _ = functions[signature]
        if pinned:
            return []
        if language != "sql":
            return [f"{signature}: {language} without a pinned search_path"]
        problems = [f"{signature}: unqualified {bad}" for bad in [_unqualified(body)] if bad]
        for callee in re.findall(r"\bpggcl\.(\w+)\s*\(", body):
            for target in by_name.get(f"pggcl.{callee}", []):
                if target not in seen:
                    problems += safe(target, seen | {signature})
        return problems

    problems = []
    callable_by_others = [s for s, f in functions.items() if f[4]]
    assert len(callable_by_others) > 15
    for signature in callable_by_others:
        problems += safe(signature)
    views = db.execute(VIEW_FUNCTIONS).fetchall()
    assert {v for v, _ in views} >= {"limits", "_sessions_seen"}
    for view, signature in views:
        problems += [f"view {view}: {p}" for p in safe(signature)]
    # And the PL/pgSQL helpers are executable by the owner alone.
    for signature, (language, _, pinned, _, grantees) in functions.items():
        if language == "plpgsql" and not pinned and grantees:
            problems.append(f"{signature}: executable by {grantees}")
    assert problems == []

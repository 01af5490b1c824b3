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
        if language == "plpgsql" and not pinned and callable_:
            # A PL/pgSQL helper runs with its caller's search_path: only the public functions
            # (pinned) may call it, so no pggcl role may.
            problems.append(f"{name}: PL/pgSQL without a pinned search_path, callable by a role")
    assert problems == []


def test_the_check_finds_an_unqualified_body() -> None:
    assert _unqualified("SELECT CASE WHEN level = 0 THEN 0 ELSE level END") == ["="]
    assert _unqualified("SELECT date_part('epoch', a OPERATOR(pg_catalog.-) b)") == ["date_part("]
    assert _unqualified("SELECT pg_catalog.length(x) OPERATOR(pg_catalog.<=) 255") == []
    assert _unqualified("SELECT x IS NOT DISTINCT FROM y") == ["DISTINCT FROM"]
    assert _unqualified("SELECT nullif(x, '')") == ["nullif("]
    assert _unqualified("SELECT a OPERATOR(pg_catalog.-) (b OPERATOR(pg_catalog.*) c)") == []

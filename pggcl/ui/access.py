"""What the DSN's database role may do in the UI: manage limits, or only look.

The public client has no call for this (privileges are not part of its API), so this module
runs one read-only query of its own on a short-lived asyncpg connection. It asks PostgreSQL
whether the role may execute the three management functions, which is exactly what decides
whether a change from the UI would succeed. That is more precise than asking for membership
of ``pggcl_admin``: a superuser, the owner of the schema and a member of ``pggcl_admin`` all
pass, and a role without the grant does not, whatever its name. The database still enforces
it; the answer only decides which buttons the pages show (and a change refused all the same,
a :class:`~pggcl.errors.PermissionDeniedError`, makes the UI ask again).

Its errors are mapped as the clients' are, by :func:`pggcl.core.failures.translate_error`: a
database without pggcl raises :class:`~pggcl.errors.SchemaNotInstalledError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from pggcl.core.failures import translate_error
from pggcl.errors import PggclError

MANAGE_FUNCTIONS = (
    "pggcl.create_limit(text, integer, double precision, boolean, double precision)",
    "pggcl.update_limit(text, integer, double precision, boolean, text, double precision)",
    "pggcl.delete_limit(text)",
)

_QUERY = (
    "SELECT current_user::text,"
    " coalesce(bool_and(has_function_privilege(f, 'EXECUTE')), false)"
    " FROM unnest($1::text[]) AS f"
)


@dataclass(frozen=True, slots=True)
class Access:
    """The DSN's role and whether it may create, change and delete limits."""

    role: str
    can_manage: bool


def _translate(exc: BaseException, connection_lost: bool) -> PggclError:
    sqlstate = getattr(exc, "sqlstate", None)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return translate_error(sqlstate, message, connection_lost)


async def check_access(dsn: str, timeout: float = 10.0) -> Access:
    """Ask the database what the DSN's role may do. Raises DatabaseUnavailableError when it
    cannot be reached, SchemaNotInstalledError when pggcl is not installed there."""
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _translate(exc, connection_lost=True) from exc
    try:
        row = await conn.fetchrow(_QUERY, list(MANAGE_FUNCTIONS), timeout=timeout)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        lost = not isinstance(exc, asyncpg.PostgresError) or conn.is_closed()
        raise _translate(exc, connection_lost=lost) from exc
    finally:
        await conn.close()
    assert row is not None
    return Access(role=str(row[0]), can_manage=bool(row[1]))

"""Driver errors to pggcl errors, decided once for both drivers. Pure.

A driver reports what it saw (the SQLSTATE, the server's message, whether the connection is
gone, the COLUMN the error names); :func:`translate_error` says which
:class:`~pggcl.errors.PggclError` that is. Nothing else in pggcl inspects a driver error, and
nothing reads an error's message text to decide what it is.
"""

from __future__ import annotations

from typing import Final

from pggcl.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    PermissionDeniedError,
    PggclError,
    SchemaNotInstalledError,
    ValidationError,
    error_for_sqlstate,
)

# SQLSTATE classes that mean the connection is gone: connection exception, operator
# intervention (admin shutdown, crash shutdown, cannot connect now).
_LOST_CLASSES: Final = ("08", "57")

# Invalid schema name, undefined function, undefined table, undefined column. pggcl's clients
# only ever name pggcl's own objects, so any of these means the schema is missing or older than
# the client (a function or a view's column added by a later revision): `pggcl db upgrade` is
# the answer to both.
_NOT_INSTALLED: Final = frozenset({"3F000", "42883", "42P01", "42703"})

_INSUFFICIENT_PRIVILEGE: Final = "42501"
# A named prepared statement that is missing, or already there: a transaction pooler moved the
# connection between server sessions (asyncpg names the statements it caches).
_PREPARED_STATEMENT_MOVED: Final = ("26000", "42P05")
_OUT_OF_RANGE: Final = "22003"  # numeric value out of range: a limit above 2**31 - 1, say


def translate_error(
    sqlstate: str | None, message: str, connection_lost: bool, field: str | None = None
) -> PggclError:
    """The pggcl error for a driver error, with ``sqlstate`` and ``field`` set on it.

    ``message`` is the server's (primary) message; ``connection_lost`` is whether the driver
    saw the connection go; ``field`` is the error's COLUMN diagnostic, which the engine sets to
    the parameter an invalid-argument error (GC003) is about (None when it names none).
    """
    if (mapped := error_for_sqlstate(sqlstate, message, field)) is not None:
        return mapped
    if connection_lost or (sqlstate or "")[:2] in _LOST_CLASSES:
        text = f"the database is unreachable: {message}".strip()
        return DatabaseUnavailableError(text, sqlstate=sqlstate)
    if sqlstate in _PREPARED_STATEMENT_MOVED:
        return ConfigurationError(
            f"{message}: a connection pooler in transaction or statement mode is between pggcl"
            " and PostgreSQL; give pggcl a direct connection for its session (session_dsn=...,"
            " or PGGCL_SESSION_DSN) and send only its calls through the pooler",
            sqlstate=sqlstate,
        )
    if sqlstate == _OUT_OF_RANGE:
        return ValidationError(
            f"a value is out of range: {message}", sqlstate=sqlstate, field=field
        )
    if sqlstate in _NOT_INSTALLED:
        return SchemaNotInstalledError(
            f"pggcl is not installed in this database (run `pggcl db upgrade`): {message}",
            sqlstate=sqlstate,
        )
    if sqlstate == _INSUFFICIENT_PRIVILEGE:
        return PermissionDeniedError(
            f"{message} (the database role needs pggcl_admin to manage limits,"
            " pggcl_user to use them)",
            sqlstate=sqlstate,
        )
    return PggclError(message, sqlstate=sqlstate, field=field)

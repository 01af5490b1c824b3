"""Driver errors to pggcl errors, decided once for both drivers. Pure.

A driver reports what it saw (the SQLSTATE, the server's message, whether the connection is
gone); this module says which :class:`~pggcl.errors.PggclError` that is.
"""

from __future__ import annotations

from typing import Final

from pggcl.errors import (
    DatabaseUnavailableError,
    PggclError,
    ValidationError,
    error_for_sqlstate,
)

# SQLSTATE classes that mean the connection is gone: connection exception, operator
# intervention (admin shutdown, crash shutdown, cannot connect now).
_LOST_CLASSES: Final = ("08", "57")


def translate_error(sqlstate: str | None, message: str, connection_lost: bool) -> PggclError:
    """The pggcl error for a driver error: the engine's own, unreachable, or a generic one."""
    if (mapped := error_for_sqlstate(sqlstate, message)) is not None:
        return mapped
    if connection_lost or (sqlstate or "")[:2] in _LOST_CLASSES:
        return DatabaseUnavailableError(f"the database is unreachable: {message}".strip())
    if sqlstate == "22003":  # numeric value out of range: a limit above 2**31 - 1, say
        return ValidationError(f"a value is out of range: {message}")
    if sqlstate in ("3F000", "42883", "42P01"):
        return PggclError(f"{message} (is the pggcl schema installed? run `pggcl db upgrade`)")
    return PggclError(message)

"""Errors raised by pggcl.

Every error pggcl raises derives from :class:`PggclError`::

    PggclError
    ├── ValidationError                      a bad name or value (GC003; 22003 out of range)
    ├── LimitNotFoundError                   no limit by that name (GC001)
    ├── LimitExistsError                     the name is taken (GC002)
    ├── ConcurrencySlotAcquisitionError      a request that can never be granted:
    │                                        occupy above a limit (GC004), rate_limit on a
    │                                        limit without decay (GC005), strict and
    │                                        missing (GC006), dequeued because the limit
    │                                        was lowered below the request
    ├── AcquireConcurrencySlotTimeoutError   timeout_seconds passed (also a TimeoutError)
    ├── SessionLostError                     the client's session was reclaimed (GC007/GC008)
    ├── SchemaNotInstalledError              the database has no pggcl schema, or an older
    │                                        one (3F000, 42883, 42P01, 42703): run
    │                                        `pggcl db upgrade`
    ├── PermissionDeniedError                the DSN's role lacks a grant (42501)
    ├── DatabaseUnavailableError             the database cannot be reached (08xxx, 57xxx)
    ├── PoolTimeoutError                     every pool connection stayed busy for
    │                                        pool_timeout (also a TimeoutError)
    ├── ClientClosedError                    the client was used after close()
    └── ConfigurationError                   the client is not set up (PGGCL_DSN unset)

An error that comes from the database carries its SQLSTATE (:attr:`PggclError.sqlstate`) and
the server's message (its text); an invalid argument also names the parameter at fault
(:attr:`PggclError.field`, e.g. ``"limit"``) when the engine reports it. Code that handles an
error reads its type and these attributes, never its message text.

Which class an engine error becomes is decided once, for both drivers, by
:func:`pggcl.core.failures.translate_error`; the engine's own codes (class ``GC``) are
registered here, beside their classes.
"""

from __future__ import annotations

from typing import Final


class PggclError(Exception):
    """A pggcl operation failed."""

    #: The SQLSTATE of the database error this is, or None when it did not come from one.
    sqlstate: str | None
    #: The parameter an invalid-argument error is about (``name``, ``limit``,
    #: ``slot_decay_per_second``, ``occupy``, ...), from the error's COLUMN field; None when
    #: the engine names none.
    field: str | None

    def __init__(
        self, message: str | None = None, *, sqlstate: str | None = None, field: str | None = None
    ) -> None:
        super().__init__(message or (self.__doc__ or "").strip())
        self.sqlstate = sqlstate
        self.field = field


class ValidationError(PggclError, ValueError):
    """A limit name or value is invalid."""


class LimitNotFoundError(PggclError, LookupError):
    """No limit has that name."""


class LimitExistsError(PggclError):
    """A limit with that name already exists."""


class ConcurrencySlotAcquisitionError(PggclError):
    """The slots can never be acquired as requested."""


class AcquireConcurrencySlotTimeoutError(PggclError, TimeoutError):
    """The slots could not be acquired before the timeout."""

    #: Why the request waited, in one line (read by ``pggcl.explain`` at the timeout: how
    #: full each limit that blocked it was, who held it, how many requests were ahead); also
    #: in the message. None when it did not wait (``timeout_seconds=0``) or that could not
    #: be read (the database away, a schema older than revision 0012).
    waiting: str | None = None


class SessionLostError(PggclError):
    """The client's session was closed or reclaimed; its leases are gone."""


class SchemaNotInstalledError(PggclError):
    """pggcl is not installed in this database (run `pggcl db upgrade`)."""


class PermissionDeniedError(PggclError):
    """The database role may not do this."""


class DatabaseUnavailableError(PggclError):
    """The database cannot be reached."""


class PoolTimeoutError(PggclError, TimeoutError):
    """Every connection of the client's pool stayed busy for ``pool_timeout`` seconds."""


class ClientClosedError(PggclError):
    """The client is closed: make a new one."""


class ConfigurationError(PggclError):
    """The client is not configured: give a DSN or set PGGCL_DSN."""


#: The engine's own SQLSTATEs (class ``GC``, raised by the functions in ``sql/``) and their
#: classes. ``sql/10_internals.sql`` lists the same codes.
ENGINE_SQLSTATES: Final[dict[str, type[PggclError]]] = {
    "GC001": LimitNotFoundError,
    "GC002": LimitExistsError,
    "GC003": ValidationError,
    "GC004": ConcurrencySlotAcquisitionError,
    "GC005": ConcurrencySlotAcquisitionError,
    "GC006": ConcurrencySlotAcquisitionError,
    "GC007": SessionLostError,
    "GC008": SessionLostError,
}


def error_for_sqlstate(
    sqlstate: str | None, message: str, field: str | None = None
) -> PggclError | None:
    """The pggcl error for one of the engine's own SQLSTATEs, or None for any other.

    Drivers call :func:`pggcl.core.failures.translate_error`, which also maps the server's
    codes (a lost connection, a missing schema, a missing grant)."""
    cls = ENGINE_SQLSTATES.get(sqlstate or "")
    return cls(message, sqlstate=sqlstate, field=field) if cls else None

"""Errors raised by pggcl.

Every error pggcl raises derives from :class:`PggclError`::

    PggclError
    ├── ValidationError                      a bad name or value (GC003)
    ├── LimitNotFoundError                   no limit by that name (GC001)
    ├── LimitExistsError                     the name is taken (GC002)
    ├── ConcurrencySlotAcquisitionError      a request that can never be granted:
    │                                        occupy above a limit (GC004), rate_limit on a
    │                                        limit without decay (GC005), strict and
    │                                        missing (GC006), dequeued because the limit
    │                                        was lowered below the request
    ├── AcquireConcurrencySlotTimeoutError   timeout_seconds passed (also a TimeoutError)
    ├── SessionLostError                     the client's session was reclaimed (GC007/GC008)
    ├── DatabaseUnavailableError             the database cannot be reached
    ├── PoolTimeoutError                     every pool connection stayed busy for
    │                                        pool_timeout (also a TimeoutError)
    ├── ClientClosedError                    the client was used after close()
    └── ConfigurationError                   the client is not set up (PGGCL_DSN unset)

The engine raises SQLSTATEs of class ``GC``; :func:`error_for_sqlstate` maps them to these
classes for both drivers, in one place.
"""

from __future__ import annotations


class PggclError(Exception):
    """A pggcl operation failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


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


class SessionLostError(PggclError):
    """The client's session was closed or reclaimed; its leases are gone."""


class DatabaseUnavailableError(PggclError):
    """The database cannot be reached."""


class PoolTimeoutError(PggclError, TimeoutError):
    """Every connection of the client's pool stayed busy for ``pool_timeout`` seconds."""


class ClientClosedError(PggclError):
    """The client is closed: make a new one."""


class ConfigurationError(PggclError):
    """The client is not configured: give a DSN or set PGGCL_DSN."""


_BY_SQLSTATE: dict[str, type[PggclError]] = {
    "GC001": LimitNotFoundError,
    "GC002": LimitExistsError,
    "GC003": ValidationError,
    "GC004": ConcurrencySlotAcquisitionError,
    "GC005": ConcurrencySlotAcquisitionError,
    "GC006": ConcurrencySlotAcquisitionError,
    "GC007": SessionLostError,
    "GC008": SessionLostError,
}


def error_for_sqlstate(sqlstate: str | None, message: str) -> PggclError | None:
    """The pggcl error for an engine error, or None when the SQLSTATE is not pggcl's."""
    cls = _BY_SQLSTATE.get(sqlstate or "")
    return cls(message) if cls else None

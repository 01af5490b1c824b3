"""pggcl: global concurrency limits and rate limits inside PostgreSQL."""

from pggcl.asyncio import AsyncClient
from pggcl.errors import (
    AcquireConcurrencySlotTimeoutError,
    ClientClosedError,
    ConcurrencySlotAcquisitionError,
    ConfigurationError,
    DatabaseUnavailableError,
    LimitExistsError,
    LimitNotFoundError,
    PermissionDeniedError,
    PggclError,
    PoolTimeoutError,
    SchemaNotInstalledError,
    SessionLostError,
    ValidationError,
)
from pggcl.models import ConcurrencyLimit, Holder, Waiter
from pggcl.sync import Client

__version__ = "0.1.0"

__all__ = [
    "AcquireConcurrencySlotTimeoutError",
    "AsyncClient",
    "Client",
    "ClientClosedError",
    "ConcurrencyLimit",
    "ConcurrencySlotAcquisitionError",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "Holder",
    "LimitExistsError",
    "LimitNotFoundError",
    "PermissionDeniedError",
    "PggclError",
    "PoolTimeoutError",
    "SchemaNotInstalledError",
    "SessionLostError",
    "ValidationError",
    "Waiter",
    "__version__",
]

"""pggcl: global concurrency limits and rate limits inside PostgreSQL.

``pggcl.concurrency`` and ``pggcl.rate_limit`` are the sync functions of :mod:`pggcl.sync`
(``from pggcl import concurrency``, as ``from prefect import concurrency`` is written in
Prefect's docs); their async twins are ``pggcl.asyncio.concurrency`` and
``pggcl.asyncio.rate_limit``. Importing pggcl never imports Prefect.
"""

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
from pggcl.models import (
    ConcurrencyLimit,
    Explanation,
    Holder,
    Holding,
    LimitTemplate,
    TemplateTotals,
    Waiter,
)
from pggcl.sync import Client, concurrency, rate_limit

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
    "Explanation",
    "Holder",
    "Holding",
    "LimitExistsError",
    "LimitNotFoundError",
    "LimitTemplate",
    "PermissionDeniedError",
    "PggclError",
    "PoolTimeoutError",
    "SchemaNotInstalledError",
    "SessionLostError",
    "TemplateTotals",
    "ValidationError",
    "Waiter",
    "__version__",
    "concurrency",
    "rate_limit",
]

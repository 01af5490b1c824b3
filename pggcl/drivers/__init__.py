"""The drivers: the only code that talks to a database library, and only in primitives.

Each driver offers the same few operations, one world each: ``connect`` and, on a connection,
``execute`` (one autocommit statement, ``$n`` placeholders, rows as tuples), ``listen``,
``notifications`` (the payloads that arrive within a timeout), ``usable``, ``close`` and
``terminate``. A driver reports what happened (errors go through
:func:`pggcl.core.failures.translate_error`); it decides nothing: retries, sessions and pools
are the I/O layer's (``pggcl.client``).

- :mod:`~pggcl.drivers.asyncpg_driver`: asyncpg, for the async client;
- :mod:`~pggcl.drivers.psycopg_driver`: psycopg 3, for the sync client.
"""

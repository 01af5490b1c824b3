"""The pure core: what the clients decide, with no driver and no I/O.

- :mod:`~pggcl.core.requests`: a caller's request, checked;
- :mod:`~pggcl.core.ops` and :mod:`~pggcl.core.flows`: every operation as a generator of
  calls and waits, the same for sync and async;
- :mod:`~pggcl.core.notifications`: notification payloads and their routing to waiters;
- :mod:`~pggcl.core.policy`: reconnect backoff, heartbeat timing, session failures;
- :mod:`~pggcl.core.failures`: driver errors to pggcl errors;
- :mod:`~pggcl.core.queries`: every SQL statement the clients run;
- :mod:`~pggcl.core.options`: client options and defaults.

Nothing here imports a driver; ``tests/unit`` drives it without a database.
"""

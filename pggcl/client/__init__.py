"""The I/O layer and the client API, written once as async and generated for sync.

``*_async.py`` are the sources; ``*_sync.py`` are generated from them by
``tools/async_to_sync.py`` (a test checks they are current). What differs between the two
worlds in behaviour lives in ``_acompat`` / ``_compat`` and in the drivers (``pggcl.drivers``).
"""

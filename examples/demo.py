"""pggcl demo (stub): install the schema into $PGGCL_DSN or a throwaway server."""

from __future__ import annotations

import contextlib
import os

from pggcl import schema
from pggcl.testing import TempPostgres


def main() -> None:
    with contextlib.ExitStack() as stack:
        dsn = os.environ.get("PGGCL_DSN")
        if not dsn:
            dsn = stack.enter_context(TempPostgres()).dsn
            print(f"started a throwaway PostgreSQL at {dsn}")
        schema.upgrade(dsn)
        print(f"schema installed (revision {schema.current(dsn)})")


if __name__ == "__main__":
    main()

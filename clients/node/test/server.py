"""A PostgreSQL server of its own for the Node client's fault tests (faults.test.ts), which
restart it and put PgBouncer in front of it. One JSON line out per JSON command in:

- start: {"dsn": superuser DSN of database postgres, pggcl installed}
- {"cmd": "restart"}: `pg_ctl restart -m fast`, then {"restarted": true}
- {"cmd": "bouncer", "mode": "transaction", "settings": {...}}: {"dsn": the DSN through a new
  PgBouncer} or {"error": why} (pgbouncer not installed)

Stops everything when stdin closes. PGGCL_TEST_REVISION (default: head) picks the engine
revision to install.
"""

from __future__ import annotations

import json
import os
import sys

from pggcl import schema
from pggcl.testing import PgBouncerNotFound, TempPgBouncer, TempPostgres


def say(what: dict[str, object]) -> None:
    print(json.dumps(what), flush=True)


def main() -> None:
    with TempPostgres(settings={"synchronous_commit": "on"}) as pg:
        schema.upgrade(pg.dsn, os.environ.get("PGGCL_TEST_REVISION") or "head")
        say({"dsn": pg.dsn})
        bouncers: list[TempPgBouncer] = []
        try:
            for line in sys.stdin:
                cmd = json.loads(line)
                if cmd["cmd"] == "restart":
                    pg.restart("fast")
                    say({"restarted": True})
                elif cmd["cmd"] == "bouncer":
                    try:
                        bouncer = TempPgBouncer(
                            pg, pool_mode=cmd["mode"], settings=cmd.get("settings")
                        ).start()
                    except PgBouncerNotFound as exc:
                        say({"error": str(exc)})
                        continue
                    bouncers.append(bouncer)
                    say({"dsn": bouncer.dsn})
        finally:
            for bouncer in bouncers:
                bouncer.stop()


if __name__ == "__main__":
    main()

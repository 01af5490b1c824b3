"""Which PostgreSQL servers pggcl supports, decided without I/O (issue #18).

The caller reads the server's version number, as PostgreSQL's `server_version_num` gives it
(150018 for 15.18, 90624 for 9.6.24), and asks :func:`check_server_version`:

- psycopg: ``check_server_version(conn.info.server_version)`` (libpq has it from the
  connection's start: no round trip);
- asyncpg: ``check_server_version(version_num(*conn.get_server_version()[:3]))`` (the same,
  from asyncpg's parsed ``server_version``);
- SQL: ``SHOW server_version_num``.

The oldest supported major is the oldest one CI tests (docs/postgresql-versions.md); a server
newer than the newest tested is let through: PostgreSQL keeps what pggcl uses.
"""

from __future__ import annotations

from typing import Final

from pggcl.errors import ConfigurationError

#: The oldest server pggcl supports: PostgreSQL 15.0.
MIN_SERVER_VERSION_NUM: Final = 150000
#: The majors CI runs the suite on (.ci/run).
TESTED_MAJORS: Final = (15, 18)


class UnsupportedServerVersionError(ConfigurationError):
    """The PostgreSQL server is older than pggcl supports."""


def version_num(major: int, minor: int, micro: int = 0) -> int:
    """`server_version_num` from a version's parts as asyncpg reports them: 18.6 is
    (18, 0, 6), 9.6.24 is (9, 6, 24)."""
    return major * 10000 + minor * 100 + micro


def format_version(server_version_num: int) -> str:
    """150018 -> "15.18"; 90624 -> "9.6.24" (before 10, the major had two parts)."""
    major, rest = divmod(server_version_num, 10000)
    if major >= 10:
        return f"{major}.{rest}"
    minor, micro = divmod(rest, 100)
    return f"{major}.{minor}.{micro}"


def supported_range() -> str:
    """The supported versions, in words."""
    tested = " and ".join(str(m) for m in TESTED_MAJORS)
    return f"PostgreSQL {MIN_SERVER_VERSION_NUM // 10000} or newer (tested: {tested})"


def check_server_version(server_version_num: int) -> None:
    """Raise UnsupportedServerVersionError, naming the server's version and the supported
    range, when the server is older than pggcl supports."""
    if server_version_num < MIN_SERVER_VERSION_NUM:
        raise UnsupportedServerVersionError(
            f"the database server runs PostgreSQL {format_version(server_version_num)}, "
            f"which pggcl does not support: it needs {supported_range()}"
        )

"""Which servers pggcl supports (pggcl.core.versions), without a database."""

from __future__ import annotations

import pytest

from pggcl.core.versions import (
    MIN_SERVER_VERSION_NUM,
    UnsupportedServerVersionError,
    check_server_version,
    format_version,
    supported_range,
    version_num,
)
from pggcl.errors import ConfigurationError, PggclError


def test_a_server_older_than_the_oldest_supported_is_refused_by_version() -> None:
    with pytest.raises(UnsupportedServerVersionError) as caught:
        check_server_version(140000)
    assert str(caught.value) == (
        "the database server runs PostgreSQL 14.0, which pggcl does not support: it needs "
        "PostgreSQL 15 or newer (tested: 15 and 18)"
    )
    assert isinstance(caught.value, ConfigurationError) and isinstance(caught.value, PggclError)
    assert caught.value.sqlstate is None


@pytest.mark.parametrize(("num", "shown"), [(149999, "14.9999"), (90624, "9.6.24"), (0, "0.0.0")])
def test_every_older_server_is_refused_naming_its_version(num: int, shown: str) -> None:
    with pytest.raises(UnsupportedServerVersionError, match=f"PostgreSQL {shown}, which"):
        check_server_version(num)


@pytest.mark.parametrize("num", [MIN_SERVER_VERSION_NUM, 150018, 160004, 170006, 180006, 190000])
def test_supported_and_newer_servers_pass(num: int) -> None:
    check_server_version(num)


def test_version_numbers_as_asyncpg_reports_versions() -> None:
    assert version_num(18, 0, 6) == 180006  # asyncpg: ServerVersion(major=18, minor=0, micro=6)
    assert version_num(9, 6, 24) == 90624
    assert format_version(180006) == "18.6"
    assert format_version(150018) == "15.18"


def test_the_supported_range_in_words() -> None:
    assert supported_range() == "PostgreSQL 15 or newer (tested: 15 and 18)"

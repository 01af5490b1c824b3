"""Numbers and times for people: one rule, the same in the CLI's tables and the UI's pages."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from pggcl.formatting import moment, per_second, slots
from pggcl.models import ConcurrencyLimit, Holder

pytest.importorskip("starlette", reason="the ui extra is not installed (pip install -e '.[ui]')")

from pggcl.cli._output import holders_table, limits_table
from pggcl.ui.present import holder_view, limit_view


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.5, "1.5"),
        (2.0, "2"),
        (2, "2"),
        (0.0, "0"),
        (-0.0, "0"),
        (-0.001, "0"),  # float noise below zero in a decayed level
        (0.3333, "0.33"),
        (0.25, "0.25"),
        (1.999, "2"),
        (1.004, "1"),
        (12345678.5, "12345678.5"),
    ],
)
def test_slots_have_at_most_two_decimals_without_trailing_zeros(value: float, text: str) -> None:
    assert slots(value) == text


@pytest.mark.parametrize(
    ("value", "text"), [(0.5, "0.5"), (2.0, "2"), (0.001, "0.001"), (0.0, "0"), (2.5, "2.5")]
)
def test_rates_are_as_short_as_they_are_exact(value: float, text: str) -> None:
    assert per_second(value) == text


def test_moments_are_utc_iso_8601_to_the_second() -> None:
    paris = timezone(timedelta(hours=1))
    assert moment(datetime(2026, 12, 2, 0, 29, 47, 900_000, tzinfo=paris)) == (
        "2026-12-01T23:29:47Z"
    )
    assert datetime.fromisoformat(moment(datetime.now(UTC))).tzinfo == UTC
    assert moment(None) == "-"
    assert moment(None, missing="never") == "never"


AT = datetime(2026, 12, 1, 23, 29, 47, tzinfo=UTC)
LIMIT = ConcurrencyLimit(
    name="api",
    limit=4,
    active=True,
    active_slots=2.5,
    slot_decay_per_second=0.125,
    waiting=0,
    created=AT,
    updated=AT,
    held_slots=1,
    decaying_slots=1.5,
)


def test_the_cli_and_the_ui_show_a_limit_alike() -> None:
    [row] = [line.split() for line in limits_table([LIMIT]).splitlines()[1:]]
    assert row == ["api", "4", "yes", "2.5", "0.125", "0"]
    view = limit_view(LIMIT)
    assert (view["decaying"], view["decay"], view["updated"]) == ("1.5", "0.125", moment(AT))
    assert view["bar"]["text"] == "2.5 / 4"


def test_the_cli_and_the_ui_show_a_holders_times_alike() -> None:
    holder = Holder(uuid.uuid4(), "api", 1, "job", 7, AT, AT + timedelta(seconds=30))
    [row] = [line.split() for line in holders_table([holder]).splitlines()[1:]]
    view = holder_view(holder)
    expected = ["2026-12-01T23:29:47Z", "2026-12-01T23:30:17Z"]
    assert row[-2:] == [view["since"], view["expires"]] == expected

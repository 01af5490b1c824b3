"""How numbers and times look to people: one rule each, for the CLI's tables and the UI's pages.

- A number of slots or a level (:func:`slots`): at most two decimals, trailing zeros dropped
  (``1.5`` -> ``"1.5"``, ``2.0`` -> ``"2"``, ``0.3333`` -> ``"0.33"``). A decaying rate-limit
  level is fractional; two decimals are finer than anything a person acts on.
- A rate in slots per second (:func:`per_second`): as short as it is exact (``0.5``, ``2``,
  ``0.001``): a rate is what someone typed, and rounding it would show a different limit.
- A moment (:func:`moment`): UTC, ISO 8601 to the second (``2026-12-01T23:29:47Z``), the same
  wherever the command runs or the page is opened, so two people comparing output agree.
- A duration (:func:`duration`), a head start (:func:`head_start`), a count of things
  (:func:`plural`) and a place in a queue (:func:`ordinal`): the words the CLI, the UI and the
  timeout message share.

Programs get exact values instead: the CLI's ``--output json`` keeps full numbers and ISO 8601
timestamps with their offset (see :mod:`pggcl.cli._output`).
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime


def slots(value: float) -> str:
    """A number of slots or a level: at most two decimals, trailing zeros dropped."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def per_second(value: float) -> str:
    """A rate in slots per second, as short as it is exact."""
    return f"{value:g}"


def duration(seconds: float) -> str:
    """A duration for people: ``3600`` -> ``1h``, ``90`` -> ``1m30s``, ``0.5`` -> ``0.5s``."""
    if seconds < 60:
        return f"{seconds:g}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts)


def head_start(priority: float) -> str:
    """A waiter's priority, a head start in seconds: ``30`` -> ``+30 s``, ``0`` -> ``0``."""
    return f"{priority:+g} s" if priority else "0"


def plural(n: int, word: str) -> str:
    """``n`` and ``word``, with an s unless ``n`` is 1: ``3 leases``, ``1 lease``."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``21st``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def moment(value: datetime | None, missing: str = "-") -> str:
    """A timestamp in UTC, ISO 8601 to the second; ``missing`` for none."""
    if value is None:
        return missing
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def printable(text: str) -> str:
    """``text`` safe to print to a terminal: control and format characters (escape sequences,
    newlines, bidi overrides) shown as ``\\x1b``-style escapes. A holder is free text from any
    pggcl_user, and an operator's terminal must not run what it contains."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch == " " or not unicodedata.category(ch).startswith("C") else _escaped(ch)
        for ch in text
    )


def _escaped(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

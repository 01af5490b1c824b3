"""What a caller's values must be before they are sent, the same for both drivers. Pure.

The two drivers encode arguments differently (psycopg adapts to text and lets the server cast;
asyncpg encodes in the client by the parameter's type), so a value the engine never sees
would otherwise fail in two different ways, or be rounded in one and truncated in the other.
These checks make both refuse it alike, as a ValidationError naming the parameter; the engine
still checks everything it is sent (its bounds are in README's SQL API).
"""

from __future__ import annotations

from typing import Any

from pggcl.errors import ValidationError

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: The engine's bound on a limit and on occupy (sql/10_internals.sql): sums stay in int4.
MOST_SLOTS = 1_000_000_000


def whole(field: str, value: Any, least: int) -> int:
    """``value`` as a whole number the engine's integer parameter can carry. Within that range
    the engine checks the value itself (its messages name its bounds); beyond it, which
    the two drivers would refuse differently, this says the same as the engine."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"invalid {field}: {value!r}; it must be a whole number", field=field)
    if value > INT32_MAX:
        raise ValidationError(
            f"invalid {field}: {value}; it must be at most {MOST_SLOTS} slots", field=field
        )
    if value < INT32_MIN:
        raise ValidationError(
            f"invalid {field}: {value}; it must be {least} or more slots", field=field
        )
    return value


def big(field: str, value: Any) -> int:
    """``value`` as a whole number the engine's bigint parameter (a waiter id) can carry."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"invalid {field}: {value!r}; it must be a whole number", field=field)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValidationError(f"invalid {field}: {value}; it must be a 64-bit integer", field=field)
    return value


def text(field: str, value: Any) -> str:
    """``value`` as text PostgreSQL can store: no NUL character, valid Unicode."""
    if not isinstance(value, str):
        raise ValidationError(f"invalid {field}: {value!r}; it must be a string", field=field)
    if "\x00" in value:
        raise ValidationError(
            f"invalid {field} {value!r}: it must not contain a NUL character", field=field
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            f"invalid {field} {value!r}: it is not valid Unicode (a lone surrogate)", field=field
        ) from None
    return value

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

INT32_MAX = 2**31 - 1


def whole(field: str, value: Any, least: int) -> int:
    """``value`` as a whole number from ``least`` to 2**31 - 1 (the engine's integer)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"invalid {field}: {value!r}; it must be a whole number", field=field)
    if not least <= value <= INT32_MAX:
        raise ValidationError(
            f"invalid {field}: {value}; it must be from {least} to {INT32_MAX}", field=field
        )
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

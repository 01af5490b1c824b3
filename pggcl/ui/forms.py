"""The create and edit forms: the CLI's fields and rules, with errors put next to their field.

The rules are the engine's (a name of 1 to 255 characters without ``/ % & > <``, a limit of 0
or more slots, a finite decay of 0 or more): the form only turns text into numbers, as click
does for the CLI, and sends the rest to the engine. The engine's error names the parameter at
fault (:attr:`pggcl.PggclError.field`); an error that names none, or one the form has no
field for, is shown at the top of the form. Nothing is saved unless every field is right: the
engine checks all before it writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.requests import Request

from pggcl.errors import LimitExistsError, PggclError
from pggcl.formatting import per_second
from pggcl.models import ConcurrencyLimit

INT4_MAX = 2**31 - 1
MAX_FORM_BYTES = 64 * 1024

#: Form field name -> the label people see (the seed's words).
LABELS = {
    "name": "Name",
    "limit": "Concurrency Limit",
    "slot_decay_per_second": "Slot Decay Per Second",
    "active": "Active",
}

#: The engine's parameter an error is about -> the form field that shows it. Renaming sends
#: the form's name as update_limit's ``new_name``; the active checkbox has no error of its own.
FIELD_OF_PARAMETER = {
    "name": "name",
    "new_name": "name",
    "limit": "limit",
    "slot_decay_per_second": "slot_decay_per_second",
}


class FormRejected(Exception):
    """The request is not a form of this UI (too large, wrong type, bad CSRF token)."""


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a urlencoded form (the last value of each), at most 64 KiB."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        raise FormRejected("expected a form (application/x-www-form-urlencoded)")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormRejected("the form is too large")
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError as exc:
        raise FormRejected("the form is not UTF-8") from exc


@dataclass
class LimitForm:
    """What the form shows: the values as typed, and an error per field (or for the form)."""

    name: str = ""
    limit: str = ""
    slot_decay_per_second: str = "0"
    active: bool = True
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, limit: ConcurrencyLimit) -> LimitForm:
        return cls(
            limit.name, str(limit.limit), per_second(limit.slot_decay_per_second), limit.active
        )

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> LimitForm:
        return cls(
            name=fields.get("name", ""),
            limit=fields.get("limit", "").strip(),
            slot_decay_per_second=fields.get("slot_decay_per_second", "").strip(),
            active=fields.get("active") == "on",
        )

    def values(self) -> tuple[int, float] | None:
        """(limit, slot_decay_per_second), or None with the errors recorded."""
        limit = decay = None
        try:
            limit = int(self.limit)
        except ValueError:
            what = repr(self.limit) if self.limit else "nothing"
            self.errors["limit"] = f"must be a whole number of slots, 0 or more; got {what}"
        else:
            if limit > INT4_MAX:
                self.errors["limit"] = f"{limit} is too large; at most {INT4_MAX} slots"
        try:
            decay = float(self.slot_decay_per_second or "0")
        except ValueError:
            got = self.slot_decay_per_second
            self.errors["slot_decay_per_second"] = (
                f"must be a number of slots per second, 0 or more; got {got!r}"
            )
        else:
            if not math.isfinite(decay):
                self.errors["slot_decay_per_second"] = f"must be a finite number; got {decay}"
        if self.errors or limit is None or decay is None:
            return None
        return limit, decay

    def reject(self, exc: PggclError) -> None:
        """Put the engine's refusal next to the field it names (at the top when none)."""
        self.errors[field_of(exc)] = str(exc)


def field_of(exc: PggclError) -> str:
    """The form field an engine error is about: from its type and its ``field``, never from
    its text; "form" when it names no field of this form."""
    if isinstance(exc, LimitExistsError):
        return "name"
    return FIELD_OF_PARAMETER.get(exc.field or "", "form")

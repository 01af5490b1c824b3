"""Where the forms put an engine refusal: read from the error's type and ``field``, never its
text. Without a database or a browser."""

from __future__ import annotations

import pytest

from pggcl.core.failures import translate_error
from pggcl.errors import (
    ConcurrencySlotAcquisitionError,
    DatabaseUnavailableError,
    LimitExistsError,
    PggclError,
    ValidationError,
)
from pggcl.ui.forms import LimitForm, field_of
from pggcl.ui.views import templates


@pytest.mark.parametrize(
    ("field", "shown_at"),
    [
        ("name", "name"),
        ("new_name", "name"),  # renaming: the form's Name is update_limit's new_name
        ("limit", "limit"),
        ("slot_decay_per_second", "slot_decay_per_second"),
        ("active", "form"),  # a checkbox without an error line of its own
        ("occupy", "form"),  # a parameter this form has no field for
        (None, "form"),  # the engine named none
    ],
)
def test_an_invalid_argument_goes_to_the_field_it_names(field: str | None, shown_at: str) -> None:
    assert field_of(translate_error("GC003", "bad", False, field=field)) == shown_at


def test_the_message_text_does_not_decide_the_field() -> None:
    # Worded as the engine words a bad name, but it names no field: the top of the form.
    assert field_of(ValidationError("invalid limit name '': it must not be empty")) == "form"
    assert field_of(ValidationError("invalid limit for 'x': -1", field="limit")) == "limit"


@pytest.mark.parametrize(
    ("error", "shown_at"),
    [
        (LimitExistsError("global concurrency limit 'x' already exists"), "name"),
        (ConcurrencySlotAcquisitionError("never"), "form"),
        (DatabaseUnavailableError("the database is unreachable: refused"), "form"),
        (PggclError("something else"), "form"),
    ],
)
def test_other_refusals_by_their_type(error: PggclError, shown_at: str) -> None:
    assert field_of(error) == shown_at


def test_an_error_naming_no_field_is_shown_at_the_top_of_the_form() -> None:
    form = LimitForm(name="x", limit="1")
    form.reject(ValidationError("something is wrong"))
    assert form.errors == {"form": "something is wrong"}
    html = templates.get_template("limit_form.html").render(
        form=form,
        labels={"name": "Name", "limit": "Limit", "slot_decay_per_second": "Decay", "active": "A"},
        heading="New limit",
        action="/limits/new",
        cancel="/",
        submit="Create",
        original=None,
        access=None,
        csrf="0",
        notice=None,
    )
    assert '<p class="banner error" id="form-error">something is wrong</p>' in html
    assert 'class="field-error"' not in html

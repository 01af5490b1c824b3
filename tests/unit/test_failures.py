"""The one mapping from driver errors to pggcl errors, without a database."""

from __future__ import annotations

import pickle

import pytest

import pggcl
import pggcl.errors
from pggcl.core.failures import translate_error
from pggcl.errors import (
    ConcurrencySlotAcquisitionError,
    DatabaseUnavailableError,
    LimitExistsError,
    LimitNotFoundError,
    PermissionDeniedError,
    PggclError,
    SchemaNotInstalledError,
    SessionLostError,
    ValidationError,
)

# Every SQLSTATE the engine raises (sql/10_internals.sql lists them) and its class.
ENGINE = [
    ("GC001", LimitNotFoundError),
    ("GC002", LimitExistsError),
    ("GC003", ValidationError),
    ("GC004", ConcurrencySlotAcquisitionError),
    ("GC005", ConcurrencySlotAcquisitionError),
    ("GC006", ConcurrencySlotAcquisitionError),
    ("GC007", SessionLostError),
    ("GC008", SessionLostError),
]


@pytest.mark.parametrize(("sqlstate", "cls"), ENGINE, ids=[s for s, _ in ENGINE])
def test_every_engine_sqlstate_maps_to_its_class(sqlstate: str, cls: type[PggclError]) -> None:
    error = translate_error(sqlstate, "the engine's words", False, field="limit")
    assert type(error) is cls
    assert (error.sqlstate, error.field, str(error)) == (sqlstate, "limit", "the engine's words")


def test_the_engine_codes_are_exactly_those_listed() -> None:
    assert dict(ENGINE) == pggcl.errors.ENGINE_SQLSTATES


def test_the_positional_signature_still_works_and_field_defaults_to_none() -> None:
    error = translate_error("GC003", "invalid limit for 'x': it must be 0 or more slots", False)
    assert isinstance(error, ValidationError) and isinstance(error, ValueError)
    assert (error.sqlstate, error.field) == ("GC003", None)


@pytest.mark.parametrize(
    ("sqlstate", "lost"),
    [(None, True), ("08006", False), ("08001", True), ("57P01", False), ("57P03", False)],
)
def test_a_lost_connection_is_database_unavailable(sqlstate: str | None, lost: bool) -> None:
    error = translate_error(sqlstate, "server closed the connection", lost)
    assert type(error) is DatabaseUnavailableError
    assert error.sqlstate == sqlstate
    assert str(error) == "the database is unreachable: server closed the connection"


def test_a_lost_connection_wins_over_what_the_statement_was() -> None:
    # The connection died mid-statement: whatever code came with it, the database is gone.
    assert type(translate_error("42P01", "x", True)) is DatabaseUnavailableError


@pytest.mark.parametrize(
    ("sqlstate", "message"),
    [
        ("3F000", 'schema "pggcl" does not exist'),
        ("42883", "function pggcl.take(text, integer, uuid, text, uuid) does not exist"),
        ("42P01", 'relation "pggcl.limits" does not exist'),
        ("42703", 'column "grants" does not exist'),  # a schema older than the client
    ],
)
def test_a_missing_schema_is_schema_not_installed(sqlstate: str, message: str) -> None:
    error = translate_error(sqlstate, message, False)
    assert type(error) is SchemaNotInstalledError
    assert error.sqlstate == sqlstate
    assert str(error).startswith("pggcl is not installed in this database")
    assert "pggcl db upgrade" in str(error) and message in str(error)


def test_insufficient_privilege_is_permission_denied() -> None:
    error = translate_error("42501", "permission denied for function create_limit", False)
    assert type(error) is PermissionDeniedError
    assert error.sqlstate == "42501"
    assert str(error).startswith("permission denied for function create_limit")
    assert "pggcl_admin" in str(error)


def test_out_of_range_is_a_validation_error_about_its_field() -> None:
    error = translate_error("22003", 'value "3000000000" is out of range', False, "limit")
    assert type(error) is ValidationError
    assert (error.sqlstate, error.field) == ("22003", "limit")


def test_any_other_error_is_a_plain_pggcl_error_with_its_sqlstate() -> None:
    error = translate_error("XX000", "internal error", False)
    assert type(error) is PggclError
    assert (error.sqlstate, str(error)) == ("XX000", "internal error")


def test_errors_raised_by_the_client_itself_carry_no_sqlstate() -> None:
    error = pggcl.ClientClosedError()
    assert (error.sqlstate, error.field) == (None, None)
    assert str(error) == "The client is closed: make a new one."


def test_the_attributes_survive_pickling() -> None:
    # Errors cross process boundaries (multiprocessing, pytest-xdist): keep what they say.
    error = pickle.loads(pickle.dumps(translate_error("GC003", "bad", False, "occupy")))
    assert (type(error), error.sqlstate, error.field, str(error)) == (
        ValidationError,
        "GC003",
        "occupy",
        "bad",
    )


def test_the_new_classes_are_public() -> None:
    for name in ("SchemaNotInstalledError", "PermissionDeniedError"):
        assert getattr(pggcl, name) is getattr(pggcl.errors, name)
        assert name in pggcl.__all__
        assert name in (pggcl.errors.__doc__ or "")

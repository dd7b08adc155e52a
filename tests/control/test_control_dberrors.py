"""Every SQLAlchemy error maps to a store error (as httpx's test that every httpcore
exception has a mapping), and the store raises them at its seam, chained to the cause."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import exc as sa

from gpucaas.control import (
    AlreadyExists,
    BadStoreUrl,
    Store,
    StoreConflict,
    StoreQueryError,
    StoreUnavailable,
    StoreUnreachable,
    TenantCreate,
)
from gpucaas.control._dberrors import ERROR_FOR_SQLALCHEMY, error_for, map_db_errors
from gpucaas.errors import GpucaasError, exit_code

URL = "postgresql+psycopg://gpucaas:***@db:5432/gpucaas"

ALL_CLASSES = sorted(
    (
        cls
        for cls in vars(sa).values()
        if inspect.isclass(cls) and issubclass(cls, sa.SQLAlchemyError)
    ),
    key=lambda cls: cls.__name__,
)

# The errors the store can meet: from the driver (the DBAPIError family), the pool, the
# engine's URL parsing and statement execution; each with the store error it must become.
EXPECTED = {
    sa.IntegrityError: StoreConflict,
    sa.OperationalError: StoreUnavailable,
    sa.InterfaceError: StoreUnavailable,
    sa.InternalError: StoreUnavailable,
    sa.DatabaseError: StoreUnavailable,
    sa.DBAPIError: StoreUnavailable,
    sa.DisconnectionError: StoreUnavailable,
    sa.TimeoutError: StoreUnavailable,
    sa.ArgumentError: BadStoreUrl,
    sa.NoSuchModuleError: BadStoreUrl,
    sa.DataError: StoreQueryError,
    sa.ProgrammingError: StoreQueryError,
    sa.NotSupportedError: StoreQueryError,
    sa.StatementError: StoreQueryError,
    sa.PendingRollbackError: StoreQueryError,
    sa.ResourceClosedError: StoreQueryError,
    sa.CompileError: StoreQueryError,
    sa.InvalidRequestError: StoreQueryError,
}


def instance(cls: type[sa.SQLAlchemyError]) -> sa.SQLAlchemyError:
    """An instance of ``cls``, whatever its constructor wants."""
    if issubclass(cls, sa.DBAPIError):
        return cls("INSERT INTO tenants ...", {}, Exception("the driver's reason"))
    if issubclass(cls, sa.StatementError):
        return cls("bad bind", "SELECT 1", {}, Exception("the driver's reason"))
    try:
        return cls("the reason")
    except TypeError:
        error: Any = Exception.__new__(cls)
        error.args = ("the reason",)
        return error  # type: ignore[no-any-return]


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_every_sqlalchemy_error_maps_to_a_store_error(cls: type[sa.SQLAlchemyError]) -> None:
    original = instance(cls)
    with pytest.raises(GpucaasError) as caught, map_db_errors(URL):
        raise original
    assert caught.value.__cause__ is original
    assert URL in str(caught.value)
    if cls in EXPECTED:
        assert type(caught.value) is EXPECTED[cls]
    assert isinstance(caught.value, (StoreConflict, StoreUnavailable, StoreQueryError, BadStoreUrl))


def test_the_table_names_only_sqlalchemy_errors_and_its_root_catches_the_rest() -> None:
    assert sa.SQLAlchemyError in ERROR_FOR_SQLALCHEMY
    assert all(issubclass(cls, sa.SQLAlchemyError) for cls in ERROR_FOR_SQLALCHEMY)


def test_the_reason_is_the_drivers_message() -> None:
    error = error_for(instance(sa.OperationalError), URL)
    assert str(error) == f"store {URL} is unavailable: the driver's reason"
    assert exit_code(error) == 1


def test_other_errors_pass_through_untouched() -> None:
    with pytest.raises(ValueError, match="not ours"), map_db_errors(URL):
        raise ValueError("not ours")


def test_a_duplicate_tenant_is_a_store_conflict_then_already_exists(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        # model_validate: mypy does not see the defaults given in Annotated[..., Field(default=...)]
        store.create_tenant(TenantCreate.model_validate({"name": "vision"}))
        with pytest.raises(AlreadyExists) as caught:
            store.create_tenant(TenantCreate.model_validate({"name": "vision"}))
        assert isinstance(caught.value.__cause__, StoreConflict)
        assert isinstance(caught.value.__cause__.__cause__, sa.IntegrityError)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("url", "cls"),
    [(URL, StoreUnreachable), ("sqlite:////var/lib/gpucaas/gpucaas.db", StoreUnavailable)],
    ids=["server", "sqlite-file"],
)
def test_a_failed_connection_to_a_server_is_unreachable(url: str, cls: type) -> None:
    failed = sa.OperationalError(None, None, Exception("connection refused"))  # no statement
    assert type(error_for(failed, url)) is cls


def test_an_unreachable_database_is_unreachable_without_its_password() -> None:
    with pytest.raises(StoreUnreachable) as caught:
        Store("postgresql+psycopg://gpucaas:secret@127.0.0.1:1/gpucaas")
    assert "secret" not in str(caught.value) and "gpucaas:***@127.0.0.1:1" in str(caught.value)
    assert isinstance(caught.value, StoreUnavailable) and exit_code(caught.value) == 3
    assert isinstance(caught.value.__cause__, sa.OperationalError)


def test_a_url_sqlalchemy_cannot_parse_is_a_bad_store_url() -> None:
    with pytest.raises(BadStoreUrl, match="not supported"):
        Store("postgresql+psycopg://gpucaas:secret@db:port/gpucaas")

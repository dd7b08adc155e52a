"""SQLAlchemy's errors become the store's, at the one seam where the store meets the
database (as httpx's ``map_httpcore_exceptions`` does for httpcore).

Every :class:`sqlalchemy.exc.SQLAlchemyError` maps to the most specific entry of
:data:`ERROR_FOR_SQLALCHEMY` along its class's MRO, so none leaks out of the store
(``tests/control/test_control_dberrors.py`` checks each class SQLAlchemy defines)::

    IntegrityError                                   -> StoreConflict      (Conflict)
    OperationalError, InterfaceError before any
    statement, on a database server (not SQLite)     -> StoreUnreachable   (Unreachable)
    OperationalError, InterfaceError, InternalError,
    DatabaseError, DBAPIError, DisconnectionError,
    TimeoutError (no pooled connection in time)      -> StoreUnavailable   (Unavailable)
    ArgumentError (a URL SQLAlchemy cannot parse)    -> BadStoreUrl        (InvalidRequest)
    DataError, ProgrammingError, NotSupportedError,
    StatementError and every other SQLAlchemyError   -> StoreQueryError    (MisuseError)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa

from gpucaas.errors import GpucaasError

from ._errors import (
    BadStoreUrl,
    StoreConflict,
    StoreQueryError,
    StoreUnavailable,
    StoreUnreachable,
)

_Build = Callable[[str, str], GpucaasError]
"""Builds our error from the store's URL (password hidden) and the database's reason."""


def _bad_url(url: str, _reason: str) -> GpucaasError:
    return BadStoreUrl(url)


ERROR_FOR_SQLALCHEMY: dict[type[sa.SQLAlchemyError], _Build] = {
    sa.IntegrityError: StoreConflict,
    sa.OperationalError: StoreUnavailable,
    sa.InterfaceError: StoreUnavailable,
    sa.InternalError: StoreUnavailable,
    sa.DatabaseError: StoreUnavailable,
    sa.DBAPIError: StoreUnavailable,
    sa.DisconnectionError: StoreUnavailable,
    sa.TimeoutError: StoreUnavailable,
    sa.ArgumentError: _bad_url,
    sa.DataError: StoreQueryError,
    sa.ProgrammingError: StoreQueryError,
    sa.NotSupportedError: StoreQueryError,
    sa.StatementError: StoreQueryError,
    sa.SQLAlchemyError: StoreQueryError,
}
"""The store error for each SQLAlchemy error class; lookup walks the MRO."""


def error_for(exc: sa.SQLAlchemyError, url: str) -> GpucaasError:
    """The store error for ``exc`` (not raised): the database's own message as the reason."""
    if (
        isinstance(exc, (sa.OperationalError, sa.InterfaceError))
        and exc.statement is None  # the connection itself failed, before any SQL
        and not url.startswith("sqlite")
    ):
        return StoreUnreachable(url, str(exc.orig))
    for cls in type(exc).__mro__:
        build = ERROR_FOR_SQLALCHEMY.get(cls)
        if build is not None:
            orig = getattr(exc, "orig", None)
            return build(url, str(orig if orig is not None else exc))
    raise AssertionError(f"{type(exc).__name__} is no SQLAlchemyError")  # pragma: no cover


@contextmanager
def map_db_errors(url: str) -> Iterator[None]:
    """Raise the store error for any SQLAlchemy error inside, chained ``from`` it.

    ``url`` names the store in messages; pass it with the password hidden.
    """
    try:
        yield
    except sa.SQLAlchemyError as exc:
        raise error_for(exc, url) from exc

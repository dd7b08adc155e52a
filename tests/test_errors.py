"""The error tree's base: messages built from fields, exit statuses from the branch."""

from __future__ import annotations

import pickle
from collections.abc import Sequence

import pytest

from gpucaas.client import (
    ApiConflict,
    ApiInvalidRequest,
    ApiRefused,
    ApiUnavailable,
    ApiUnreachable,
)
from gpucaas.control import Forbidden, QuotaExceeded, StoreQueryError
from gpucaas.errors import (
    EXIT_BAD_INPUT,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    Conflict,
    GpucaasError,
    InvalidRequest,
    MisuseError,
    Refused,
    Unavailable,
    Unreachable,
    errorclass,
    exit_code,
)
from gpucaas.fabric import (
    FabricBadRequest,
    FabricManagerDown,
    FabricManagerNotReady,
    FmControllerDown,
    FMReturn,
    NvfmLibraryMissing,
    PartitionInUse,
)
from gpucaas.placement import NoFit, UnknownPolicy
from gpucaas.sim import TraceError


@errorclass
class Sample(InvalidRequest):
    """A leaf as a package writes one."""

    template = "board {board!r} has no partition {partition_id}; known: {known:, } ({count})"
    board: str
    partition_id: int
    known: Sequence[int] = ()

    @property
    def count(self) -> int:
        return len(self.known)


def test_the_message_is_the_template_with_fields_properties_and_joined_sequences() -> None:
    error = Sample("hgx-07", 15, (0, 1, 2))
    assert str(error) == "board 'hgx-07' has no partition 15; known: 0, 1, 2 (3)"
    assert (error.board, error.partition_id, error.known) == ("hgx-07", 15, (0, 1, 2))
    assert repr(error) == "Sample(board='hgx-07', partition_id=15, known=(0, 1, 2))"


def test_errors_compare_by_identity_and_hash() -> None:
    first, second = Sample("a", 1), Sample("a", 1)
    assert first != second and len({first, second}) == 2


@pytest.mark.parametrize(
    "error",
    [
        Sample("hgx-07", 15, (0, 1)),
        PartitionInUse(FMReturn.IN_USE, "activate", partition_id=3, board="hgx-07"),
        TraceError("pods.csv", 3, "gpus", "x", "is not an integer"),
        InvalidRequest("a plain message"),
    ],
    ids=["fields", "keyword-only-fields", "own-str", "plain"],
)
def test_errors_survive_pickling(error: GpucaasError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
    assert vars(copy) == vars(error)


def test_a_base_on_its_own_takes_one_message() -> None:
    assert str(Unavailable("try later")) == "try later"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidRequest("x"), EXIT_BAD_INPUT),
        (NoFit("r1", ["too big"]), EXIT_BAD_INPUT),
        (UnknownPolicy("x", ["best-fit"]), EXIT_BAD_INPUT),
        (Forbidden("admin only"), EXIT_BAD_INPUT),
        (ApiInvalidRequest(422, "ValidationError", "gpus"), EXIT_BAD_INPUT),
        (Refused("x"), EXIT_REFUSED),
        (Conflict("x"), EXIT_REFUSED),
        (QuotaExceeded("demo", "GPUs", 8, 8, 1), EXIT_REFUSED),
        (ApiRefused(429, "QuotaExceeded", "quota"), EXIT_REFUSED),
        (ApiConflict(409, "AlreadyExists", "exists"), EXIT_REFUSED),
        (PartitionInUse(FMReturn.IN_USE, "activate"), EXIT_REFUSED),
        (FabricBadRequest(FMReturn.BADPARAM, "activate"), EXIT_REFUSED),
        (FabricManagerNotReady(FMReturn.NOT_READY, "activate"), EXIT_REFUSED),
        (Unavailable("x"), EXIT_REFUSED),
        (ApiUnavailable(503, "StoreUnavailable", "down"), EXIT_REFUSED),
        (MisuseError("x"), EXIT_REFUSED),
        (StoreQueryError("sqlite:///x", "no such table"), EXIT_REFUSED),
        (Unreachable("x"), EXIT_UNREACHABLE),
        (ApiUnreachable(0, "ConnectError", "cannot reach"), EXIT_UNREACHABLE),
        (FabricManagerDown(FMReturn.TIMEOUT, "activate"), EXIT_UNREACHABLE),
        (FmControllerDown(FMReturn.CONNECTION_NOT_VALID, "list"), EXIT_UNREACHABLE),
        (NvfmLibraryMissing("cannot load libnvfm", "install it"), EXIT_UNREACHABLE),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_exit_codes_follow_the_tree(error: GpucaasError, code: int) -> None:
    assert exit_code(error) == code


def test_the_branches_keep_their_old_relations() -> None:
    assert issubclass(Conflict, Refused) and issubclass(Unreachable, Unavailable)
    assert issubclass(MisuseError, RuntimeError)
    assert issubclass(QuotaExceeded, InvalidRequest)  # still a 4xx for the API
    assert issubclass(ApiRefused, ApiInvalidRequest)
    assert issubclass(FabricManagerDown, Unavailable)

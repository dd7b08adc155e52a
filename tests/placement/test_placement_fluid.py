"""FluidPool: the no-boards lower bound."""

from __future__ import annotations

import pytest

from gpucaas.errors import MisuseError
from gpucaas.placement import Code, FluidPool, Placement, Request, Status, make_allocator
from gpucaas.topology import get_model

H100 = get_model("hgx-h100-8")


def test_fluid_rounds_like_the_boards_and_ignores_board_boundaries() -> None:
    pool = FluidPool(H100, 16)
    assert (pool.capacity, pool.free_gpus, pool.allocated_gpus) == (16, 16, 0)
    assert pool.monotone
    three = pool.place(Request("a", 3))
    assert isinstance(three, Placement)
    assert (three.gpus, three.node, three.partition_id, three.mask) == (4, None, None, 0)
    assert three.valid  # no board, so nothing for Fabric Manager to refuse
    five = pool.place(Request("b", 5, tenant="t", exclusive=True))
    assert isinstance(five, Placement)
    assert (five.gpus, five.tenant, five.exclusive) == (8, "t", True)
    assert (pool.free_gpus, pool.allocated_gpus) == (4, 12)
    # Four GPUs left "across boards": a board fleet could not give 4 contiguous here.
    assert isinstance(pool.place(Request("c", 4)), Placement)
    full = pool.place(Request("d", 1))
    assert isinstance(full, Status) and full.code is Code.NO_FIT
    assert "0 GPUs free, 1 asked" in str(full)
    assert {p.request_id for p in pool.placements()} == {"a", "b", "c"}


@pytest.mark.parametrize("gpus", [0, 9], ids=["zero", "nine"])
def test_fluid_never_fits(gpus: int) -> None:
    status = FluidPool(H100, 64).place(Request("x", gpus))
    assert isinstance(status, Status)
    assert status.code is Code.NEVER_FITS
    assert "ask for 1 to 8 GPUs" in str(status)


def test_fluid_release_is_idempotent_and_double_place_is_misuse() -> None:
    pool = FluidPool(H100, 8)
    p = pool.place(Request("a", 2))
    assert isinstance(p, Placement)
    with pytest.raises(MisuseError):
        pool.place(Request("a", 2))
    assert pool.release(p)
    assert not pool.release(p)
    assert pool.free_gpus == 8


def test_fluid_has_nothing_to_reserve() -> None:
    pool = FluidPool(H100, 8)
    status = pool.reserve(Request("a", 8))
    assert isinstance(status, Status) and status.code is Code.NO_FIT
    assert not pool.cancel_reservation("a")


def test_make_allocator_fluid_has_the_fleet_capacity() -> None:
    pool = make_allocator("fluid", H100, 5)
    assert isinstance(pool, FluidPool)
    assert pool.capacity == 40

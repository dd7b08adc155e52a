"""Fleet: board choice per policy, constraints, health, cordons, reservations, bookkeeping."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from gpucaas.errors import InvalidRequest, MisuseError
from gpucaas.placement import (
    POLICIES,
    Code,
    DuplicateNode,
    Fleet,
    Placement,
    Request,
    Status,
    UnknownNode,
    make_allocator,
)
from gpucaas.topology import BoardModel, get_model, mask_of

H100 = get_model("hgx-h100-8")
B200 = get_model("hgx-b200-8")
BOARD_POLICIES = sorted(POLICIES)


def fleet(
    policy: str = "best-fit",
    nodes: int = 2,
    model: BoardModel = H100,
    labels: list[Mapping[str, str]] | None = None,
    **kwargs: object,
) -> Fleet:
    f = Fleet(policy, **kwargs)  # type: ignore[arg-type]
    for n in range(nodes):
        f.add_node(f"node-{n}", model, None if labels is None else labels[n])
    return f


def placed(outcome: Placement | Status) -> Placement:
    assert isinstance(outcome, Placement), outcome
    return outcome


def refused(outcome: Placement | Status, code: Code) -> Status:
    assert isinstance(outcome, Status), outcome
    assert outcome.code is code, outcome
    return outcome


def req(rid: object, gpus: int, **kwargs: object) -> Request:
    return Request(rid, gpus, **kwargs)  # type: ignore[arg-type]


# -- board choice per policy ----------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "node"),
    [("best-fit", "node-1"), ("first-fit", "node-0"), ("spread", "node-0")],
    ids=[
        "best-fit fills the used board before the empty one",
        "first-fit takes the lowest index",
        "spread takes the emptiest board",
    ],
)
def test_second_single_goes_where_the_policy_says(policy: str, node: str) -> None:
    f = fleet(policy)
    f.cordon_node("node-0")
    assert placed(f.place(req("a", 1))).node == "node-1"
    f.cordon_node("node-0", False)
    assert placed(f.place(req("b", 1))).node == node


def test_best_fit_prefers_the_half_used_block() -> None:
    f = fleet("best-fit")
    f.cordon_node("node-0")
    half = placed(f.place(req("half", 4)))
    assert (half.node, half.module_ids) == ("node-1", (1, 2, 3, 4))
    f.cordon_node("node-0", False)
    other = placed(f.place(req("other", 4)))
    assert (other.node, other.module_ids, other.partition_id) == ("node-1", (5, 6, 7, 8), 2)


def test_best_fit_keeps_whole_boards_for_whole_board_asks() -> None:
    f = fleet("best-fit", nodes=3)
    for n in range(8):
        assert placed(f.place(req(f"s{n}", 1))).node == "node-0"
    assert placed(f.place(req("big", 8))).node == "node-1"
    assert placed(f.place(req("pair", 2))).node == "node-2"
    refused(f.place(req("big2", 8)), Code.NO_FIT)  # node-2 is broken, the others full


def test_first_fit_uses_the_lowest_index_with_a_free_partition() -> None:
    f = fleet("first-fit", nodes=3)
    assert placed(f.place(req("a", 4))).node == "node-0"
    assert placed(f.place(req("b", 8))).node == "node-1"
    assert placed(f.place(req("c", 2))).node == "node-0"
    assert placed(f.place(req("d", 4))).node == "node-2"


def test_spread_goes_to_the_emptiest_board() -> None:
    f = fleet("spread", nodes=3)
    nodes = [placed(f.place(req(n, 1))).node for n in range(6)]
    assert nodes == ["node-0", "node-1", "node-2", "node-0", "node-1", "node-2"]


def _random_nodes(seed: int, decisions: int = 60) -> list[str | None]:
    f = fleet("random", nodes=16, seed=seed)
    return [placed(f.place(req(n, 1))).node for n in range(decisions)]


def test_random_is_deterministic_per_seed() -> None:
    assert _random_nodes(7) == _random_nodes(7)
    assert _random_nodes(7) != _random_nodes(8)
    assert len(set(_random_nodes(7))) > 4  # it does spread its choices


def test_random_still_respects_fit() -> None:
    f = fleet("random", nodes=4, seed=3)
    for n in range(4):
        placed(f.place(req(f"b{n}", 8)))
    refused(f.place(req("x", 1)), Code.NO_FIT)


# -- count-only -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "used", "gpus", "ids", "partition_id"),
    [
        (H100, 0, 1, (1,), 7),
        (H100, 0, 2, (1, 2), None),
        (H100, 0, 3, (1, 2, 3), None),
        (H100, 0, 4, (1, 2, 3, 4), 1),
        (H100, 1, 2, (2, 3), None),
        (H100, 1, 7, (2, 3, 4, 5, 6, 7, 8), None),
        (B200, 0, 2, (1, 2), 4),
        (B200, 0, 8, tuple(range(1, 9)), 1),
    ],
    ids=[
        "one GPU is a partition",
        "h100 1,2 is no partition",
        "three GPUs are never a partition",
        "four lowest GPUs are the lower half",
        "next two after GPU 1 straddle pairs",
        "seven is granted as seven",
        "b200 1,2 happens to be a partition",
        "whole b200 board",
    ],
)
def test_count_only_takes_the_lowest_numbered_free_gpus(
    model: BoardModel, used: int, gpus: int, ids: tuple[int, ...], partition_id: int | None
) -> None:
    f = fleet("count-only", nodes=1, model=model)
    if used:
        placed(f.place(req("first", used)))
    p = placed(f.place(req("x", gpus)))
    assert p.module_ids == ids
    assert p.gpus == gpus  # exactly the ask, never rounded up
    assert p.partition_id == partition_id
    assert p.valid is (partition_id is not None)


def test_count_only_ignores_partitions_when_choosing_a_board() -> None:
    f = fleet("count-only", nodes=2)
    placed(f.place(req("a", 5)))
    p = placed(f.place(req("b", 3)))
    assert (p.node, p.module_ids, p.partition_id) == ("node-0", (6, 7, 8), None)
    refused(f.place(req("c", 9)), Code.NEVER_FITS)


# -- fit and never-fit --------------------------------------------------------------------


@pytest.mark.parametrize("policy", BOARD_POLICIES, ids=BOARD_POLICIES)
@pytest.mark.parametrize(
    ("gpus", "selector"),
    [(9, {}), (0, {}), (-1, {}), (1, {"zone": "mars"})],
    ids=["nine GPUs", "zero GPUs", "negative GPUs", "selector matches no node"],
)
def test_never_fits(policy: str, gpus: int, selector: dict[str, str]) -> None:
    f = fleet(policy, labels=[{"zone": "a"}, {"zone": "b"}])
    status = refused(f.place(req("x", gpus, node_selector=selector)), Code.NEVER_FITS)
    assert status.reasons
    assert not status.ok
    assert f.allocated_gpus == 0
    assert list(f.placements()) == []


def test_never_fits_reasons_name_the_limit_and_the_selector() -> None:
    f = fleet(labels=[{"zone": "a"}, {"zone": "b"}])
    assert "hgx-h100-8 holds at most 8" in str(f.place(req("x", 9)))
    assert "zone=mars" in str(f.place(req("y", 1, node_selector={"zone": "mars"})))
    assert "no nodes" in str(Fleet().place(req("z", 1)))


@pytest.mark.parametrize("policy", BOARD_POLICIES, ids=BOARD_POLICIES)
def test_no_fit_when_full(policy: str) -> None:
    f = fleet(policy)
    placed(f.place(req("a", 8)))
    placed(f.place(req("b", 8)))
    status = refused(f.place(req("c", 1)), Code.NO_FIT)
    assert "1 free GPUs" in str(status)
    assert f.free_gpus == 0


def test_no_fit_when_gpus_are_free_but_no_partition_is() -> None:
    f = fleet(nodes=1)
    for rid in "abcd":
        placed(f.place(req(rid, 1)))
    used = f.board("node-0").used
    assert used == mask_of([1, 2, 3, 4])
    # Four free GPUs remain; after one more single no 4-partition is left.
    placed(f.place(req("e", 1)))
    refused(f.place(req("f", 4)), Code.NO_FIT)
    assert f.free_gpus == 3


# -- labels and node selectors ------------------------------------------------------


def test_node_selector_picks_matching_labels() -> None:
    f = fleet(
        "first-fit",
        nodes=3,
        labels=[{"zone": "a"}, {"zone": "b", "nic": "cx7"}, {"zone": "b"}],
    )
    assert placed(f.place(req("x", 8, node_selector={"zone": "b"}))).node == "node-1"
    assert placed(f.place(req("y", 1, node_selector={"zone": "b"}))).node == "node-2"
    # Only node-1 has both labels, and it is full: wait, do not spill to node-2.
    refused(f.place(req("z", 1, node_selector={"zone": "b", "nic": "cx7"})), Code.NO_FIT)
    refused(f.place(req("v", 1, node_selector={"nic": "cx7"})), Code.NO_FIT)
    assert placed(f.place(req("w", 1))).node == "node-0"
    assert f.board("node-1").labels == {"zone": "b", "nic": "cx7"}


def test_node_selector_waits_instead_of_spilling() -> None:
    f = fleet(labels=[{"zone": "a"}, {"zone": "b"}])
    placed(f.place(req("x", 8, node_selector={"zone": "a"})))
    refused(f.place(req("y", 1, node_selector={"zone": "a"})), Code.NO_FIT)


def test_ties_across_label_pools_go_to_the_lowest_index() -> None:
    for index in (True, False):
        f = fleet(
            "first-fit",
            nodes=4,
            labels=[{"z": "a"}, {"z": "b"}, {"z": "a"}, {"z": "b"}],
            index=index,
        )
        f.cordon_node("node-0")
        assert placed(f.place(req("x", 1))).node == "node-1", f"index={index}"


# -- exclusive tenants --------------------------------------------------------------


def test_no_other_tenant_lands_beside_an_exclusive_placement() -> None:
    f = fleet("best-fit")
    ex = placed(f.place(req("ex", 1, tenant="acme", exclusive=True)))
    assert ex.exclusive and ex.tenant == "acme"
    # best-fit would fill the used board first; the claim sends the single elsewhere.
    assert placed(f.place(req("other", 1, tenant="globex"))).node != ex.node
    refused(f.place(req("other2", 8, tenant="globex")), Code.NO_FIT)
    for rid, gpus in (("other3", 4), ("other4", 2), ("other5", 1)):
        assert placed(f.place(req(rid, gpus, tenant="globex"))).node != ex.node
    assert f.free_gpus == 7  # all on the claimed board
    refused(f.place(req("other6", 1, tenant="globex")), Code.NO_FIT)
    # The tenant's non-exclusive work does not share the claimed board either.
    refused(f.place(req("mine", 1, tenant="acme")), Code.NO_FIT)
    # Its exclusive work does.
    again = placed(f.place(req("ex2", 4, tenant="acme", exclusive=True)))
    assert again.node == ex.node


def test_exclusive_needs_an_idle_board() -> None:
    f = fleet("best-fit")
    placed(f.place(req("a", 1, tenant="globex")))
    placed(f.place(req("b", 1, tenant="globex")))
    first = f.board("node-0").placements
    assert len(first) == 2
    ex = placed(f.place(req("ex", 1, tenant="acme", exclusive=True)))
    assert ex.node == "node-1"
    refused(f.place(req("ex2", 1, tenant="initech", exclusive=True)), Code.NO_FIT)


def test_claim_ends_when_the_last_exclusive_placement_leaves() -> None:
    f = fleet("first-fit", nodes=1)
    ex = placed(f.place(req("ex", 1, tenant="acme", exclusive=True)))
    refused(f.place(req("o", 1, tenant="globex")), Code.NO_FIT)
    assert f.release(ex)
    assert placed(f.place(req("o", 1, tenant="globex"))).node == "node-0"


def test_a_hold_waits_for_young_placements_rather_than_an_old_one() -> None:
    """Run times are heavy-tailed: the board whose running GPU started last is likely to
    drain first, so the 8-GPU hold goes there, not to the lower-indexed board."""
    f = fleet("spread", nodes=2)
    old = placed(f.place(req("old", 1)))
    assert old.node == "node-0"
    for filler in ("x", "y"):
        f.release(placed(f.place(req(filler, 1))))
    young = placed(f.place(req("young", 1)))
    assert young.node == "node-1"
    hold = placed(f.reserve(req("head", 8)))
    assert (hold.node, hold.partition_id) == ("node-1", 0)
    f.release(young)
    p = placed(f.place(req("head", 8)))
    assert (p.node, p.mask) == ("node-1", hold.mask)


def test_exclusive_request_does_not_land_on_a_board_held_for_someone_else() -> None:
    f = fleet("best-fit", nodes=1)
    a = placed(f.place(req("a", 1, tenant="t1")))
    b = placed(f.place(req("b", 4, tenant="t1")))
    c = placed(f.place(req("c", 2, tenant="t1")))
    held = placed(f.reserve(req("head", 4, tenant="t2")))
    for p in (a, b, c):
        f.release(p)
    # GPUs outside the hold are free and the board has no placements, but it is not idle:
    # an exclusive tenant landing here would lock the starving request out.
    refused(f.place(req("ex", 1, tenant="t3", exclusive=True)), Code.NO_FIT)
    p = placed(f.place(req("head", 4, tenant="t2")))
    assert p.mask == held.mask
    assert {q.tenant for q in f.board("node-0").placements} == {"t2"}


# -- health and cordons -------------------------------------------------------------


def test_unhealthy_gpu_is_excluded_until_it_recovers() -> None:
    f = fleet(nodes=1)
    f.set_gpu_health("node-0", 1, False)
    assert f.board("node-0").unhealthy == mask_of([1])
    assert f.free_gpus == 7
    refused(f.place(req("whole", 8)), Code.NO_FIT)
    half = placed(f.place(req("half", 4)))
    assert half.module_ids == (5, 6, 7, 8)
    single = placed(f.place(req("single", 1)))
    assert single.module_ids == (3,)  # GPU 1's buddy, never GPU 1
    f.set_gpu_health("node-0", 1, True)
    assert f.free_gpus == 3
    assert placed(f.place(req("s2", 1))).module_ids == (1,)


def test_a_gpu_that_fails_in_use_stays_allocated_and_out_after_release() -> None:
    f = fleet(nodes=1)
    p = placed(f.place(req("a", 1)))
    f.set_gpu_health("node-0", 1, False)
    assert f.board("node-0").used == mask_of([1])
    assert f.allocated_gpus == 1
    assert f.release(p)
    assert f.free_gpus == 7
    assert placed(f.place(req("b", 1))).module_ids != (1,)
    refused(f.place(req("c", 8)), Code.NO_FIT)


def test_cordoned_gpu_and_node() -> None:
    f = fleet("first-fit")
    f.cordon_gpu("node-0", 8)
    assert f.board("node-0").cordoned_gpus == mask_of([8])
    assert placed(f.place(req("a", 8))).node == "node-1"
    assert placed(f.place(req("b", 4))).module_ids == (1, 2, 3, 4)
    refused(f.place(req("c", 4)), Code.NO_FIT)
    f.cordon_gpu("node-0", 8, False)
    assert placed(f.place(req("c", 4))).module_ids == (5, 6, 7, 8)

    g = fleet("first-fit")
    g.cordon_node("node-0")
    assert g.board("node-0").cordoned
    assert g.free_gpus == 8
    assert placed(g.place(req("a", 1))).node == "node-1"
    g.cordon_node("node-0", False)
    assert placed(g.place(req("b", 1))).node == "node-0"


def test_cordon_leaves_running_work_alone() -> None:
    f = fleet(nodes=1)
    p = placed(f.place(req("a", 4)))
    f.cordon_node("node-0")
    assert f.board("node-0").placements == (p,)
    assert f.allocated_gpus == 4
    assert f.release(p)


@pytest.mark.parametrize("module_id", [0, 9], ids=["module zero", "module nine"])
def test_gpu_out_of_range(module_id: int) -> None:
    f = fleet(nodes=1)
    with pytest.raises(InvalidRequest, match=r"module IDs 1\.\.8"):
        f.set_gpu_health("node-0", module_id, False)
    with pytest.raises(InvalidRequest):
        f.cordon_gpu("node-0", module_id)


# -- nodes ------------------------------------------------------------------------------


def test_remove_node_returns_the_lost_placements() -> None:
    f = fleet("first-fit")
    a = placed(f.place(req("a", 4)))
    b = placed(f.place(req("b", 2)))
    c = placed(f.place(req("c", 8)))
    assert (a.node, b.node, c.node) == ("node-0", "node-0", "node-1")
    lost = f.remove_node("node-0")
    assert set(lost) == {a, b}
    assert f.capacity == 8
    assert f.allocated_gpus == 8
    assert f.free_gpus == 0
    assert len(f) == 1 and "node-0" not in f and "node-1" in f
    assert [s.name for s in f.boards()] == ["node-1"]
    assert list(f.placements()) == [c]
    assert not f.release(a)  # already gone with its board
    with pytest.raises(UnknownNode, match="no node 'node-0' in the fleet"):
        f.board("node-0")
    refused(f.place(req("a", 1)), Code.NO_FIT)  # a lost request may be placed again
    f.add_node("node-0", H100)  # and the name may come back
    assert placed(f.place(req("a", 4))).node == "node-0"
    assert [s.index for s in f.boards()] == [1, 2]


def test_remove_node_drops_its_reservations() -> None:
    f = fleet(nodes=1)
    placed(f.place(req("a", 8)))
    held = placed(f.reserve(req("h", 4)))
    assert held.node == "node-0"
    f.remove_node("node-0")
    assert f.reservation("h") is None


def test_duplicate_and_unknown_nodes() -> None:
    f = fleet(nodes=1)
    with pytest.raises(DuplicateNode, match="already in the fleet"):
        f.add_node("node-0", H100)
    for call in (
        lambda: f.remove_node("ghost"),
        lambda: f.set_gpu_health("ghost", 1, False),
        lambda: f.cordon_gpu("ghost", 1),
        lambda: f.cordon_node("ghost"),
        lambda: f.board("ghost"),
    ):
        with pytest.raises(UnknownNode):
            call()


def test_mixed_models_in_one_fleet() -> None:
    f = Fleet("first-fit")
    f.add_node("h", H100)
    f.add_node("b", B200)
    f.cordon_node("h")
    p = placed(f.place(req("x", 2)))
    assert (p.node, p.module_ids, p.partition_id) == ("b", (1, 2), 4)
    assert f.board("b").model == "hgx-b200-8"
    assert f.monotone


# -- release and misuse -----------------------------------------------------------------


def test_release_is_idempotent() -> None:
    f = fleet(nodes=1)
    p = placed(f.place(req("a", 2)))
    assert f.release(p)
    assert not f.release(p)
    assert f.allocated_gpus == 0
    assert f.free_gpus == 8
    assert f.board("node-0").used == 0


def test_release_of_a_stale_handle_leaves_the_new_placement_alone() -> None:
    f = fleet("first-fit")
    old = placed(f.place(req("r", 8)))
    assert f.release(old)
    f.cordon_node("node-0")
    new = placed(f.place(req("r", 4)))
    assert new.node == "node-1"
    assert not f.release(old)
    assert f.board("node-1").used == new.mask
    assert f.allocated_gpus == 4
    assert list(f.placements()) == [new]
    assert f.release(new)


def test_placing_a_placed_request_is_misuse() -> None:
    f = fleet()
    placed(f.place(req("a", 1)))
    with pytest.raises(MisuseError, match="already placed; release it first"):
        f.place(req("a", 1))
    assert isinstance(MisuseError("x"), RuntimeError)


# -- reservations -------------------------------------------------------------------


def _busy_board() -> tuple[Fleet, list[Placement]]:
    """One H100 board with GPUs 1-4 used by four singles and GPU 5 by a fifth."""
    f = fleet(nodes=1)
    singles = [placed(f.place(req(f"s{n}", 1))) for n in range(4)]
    assert f.board("node-0").used == mask_of([1, 2, 3, 4])
    fifth = placed(f.place(req("s4", 1)))
    assert fifth.module_ids == (5,)
    return f, [*singles, fifth]


def test_reserve_holds_the_partition_with_least_to_drain() -> None:
    f, running = _busy_board()
    head = req("head", 4, tenant="t")
    held = placed(f.reserve(head))
    assert (held.node, held.module_ids, held.partition_id) == ("node-0", (5, 6, 7, 8), 2)
    assert f.board("node-0").reserved == mask_of([5, 6, 7, 8])
    assert f.reservation("head") == Placement("head", "node-0", 4, held.mask, held.partition_id)
    assert f.reserve(head) == held  # idempotent: the same hold
    # Held GPUs take no new work, even though 6, 7 and 8 are free.
    refused(f.place(req("young", 1)), Code.NO_FIT)
    status = refused(f.place(head), Code.NO_FIT)
    assert "waiting for reserved GPUs on node-0" in str(status)
    assert f.free_gpus == 3  # held GPUs still count as free
    f.release(running[4])
    p = placed(f.place(head))
    assert (p.node, p.mask, p.partition_id, p.tenant) == ("node-0", held.mask, 2, "t")
    assert f.reservation("head") is None
    assert f.board("node-0").reserved == 0


def test_cancel_reservation_gives_the_gpus_back() -> None:
    f, _ = _busy_board()
    placed(f.reserve(req("head", 4)))
    assert f.cancel_reservation("head")
    assert not f.cancel_reservation("head")
    assert f.board("node-0").reserved == 0
    assert placed(f.place(req("young", 1))).module_ids == (7,)


def test_reserved_gpus_that_fail_are_given_up() -> None:
    f, running = _busy_board()
    placed(f.reserve(req("head", 4)))
    f.set_gpu_health("node-0", 6, False)
    f.release(running[4])
    # The drained hold now holds an unhealthy GPU: it is let go, never used.
    refused(f.place(req("head", 4)), Code.NO_FIT)
    assert f.reservation("head") is None
    assert f.board("node-0").reserved == 0
    assert f.board("node-0").used == mask_of([1, 2, 3, 4])
    f.set_gpu_health("node-0", 6, True)
    assert placed(f.place(req("head", 4))).module_ids == (5, 6, 7, 8)


def test_reserved_request_takes_another_fit_that_turns_up_first() -> None:
    f = fleet(nodes=2)
    a = placed(f.place(req("a", 8)))
    b = placed(f.place(req("b", 4)))
    held = placed(f.reserve(req("head", 8)))
    assert held.node == b.node
    f.release(a)
    p = placed(f.place(req("head", 8)))
    assert p.node == a.node
    assert f.reservation("head") is None
    assert f.board(b.node or "").reserved == 0


def test_exclusive_reservation_holds_the_whole_board() -> None:
    f = fleet(nodes=2)
    placed(f.place(req("a", 8, tenant="x")))
    b = placed(f.place(req("b", 1, tenant="x")))
    held = placed(f.reserve(req("ex", 1, tenant="acme", exclusive=True)))
    assert held.node == b.node
    assert held.mask == 0xFF
    # Nobody lands on the held board, not even on its free GPUs.
    refused(f.place(req("other", 1, tenant="globex")), Code.NO_FIT)
    refused(f.place(req("ex", 1, tenant="acme", exclusive=True)), Code.NO_FIT)
    assert f.reservation("ex") is not None
    f.release(b)
    p = placed(f.place(req("ex", 1, tenant="acme", exclusive=True)))
    assert p.node == b.node and p.gpus == 1 and p.exclusive


@pytest.mark.parametrize(
    ("gpus", "selector"),
    [(9, {}), (1, {"zone": "mars"})],
    ids=["too large", "selector matches nothing"],
)
def test_reserve_never_fits(gpus: int, selector: dict[str, str]) -> None:
    f = fleet()
    refused(f.reserve(req("x", gpus, node_selector=selector)), Code.NEVER_FITS)


def test_reserve_no_fit_when_every_gpu_is_unusable() -> None:
    f = fleet(nodes=1)
    for m in range(1, 9):
        f.cordon_gpu("node-0", m)
    refused(f.reserve(req("x", 1)), Code.NO_FIT)


# -- bookkeeping ----------------------------------------------------------------------


def test_capacity_free_and_allocated() -> None:
    f = fleet(nodes=3)
    assert (f.capacity, f.free_gpus, f.allocated_gpus) == (24, 24, 0)
    a = placed(f.place(req("a", 3)))
    assert a.gpus == 4  # rounded up to the partition size
    assert (f.free_gpus, f.allocated_gpus) == (20, 4)
    placed(f.place(req("b", 5)))
    assert (f.free_gpus, f.allocated_gpus) == (12, 12)
    f.set_gpu_health("node-2", 3, False)
    f.cordon_gpu("node-2", 4)
    assert f.free_gpus == 10
    f.cordon_node("node-2")
    assert f.free_gpus == 4
    f.release(a)
    assert (f.capacity, f.free_gpus, f.allocated_gpus) == (24, 8, 8)


def test_make_allocator_builds_a_named_fleet() -> None:
    allocator = make_allocator("spread", H100, 3, seed=1)
    assert isinstance(allocator, Fleet)
    assert [b.name for b in allocator.boards()] == ["node-0000", "node-0001", "node-0002"]
    assert allocator.capacity == 24
    assert allocator.policy.name == "spread"


def test_board_snapshot_is_read_only() -> None:
    f = fleet(nodes=1)
    state = f.board("node-0")
    with pytest.raises(AttributeError):
        state.used = 3  # type: ignore[misc]
    placed(f.place(req("a", 1)))
    assert state.used == 0
    assert f.board("node-0").blocked == 1


def test_a_hold_never_lands_on_a_board_another_tenant_claimed_meanwhile() -> None:
    f = fleet(nodes=1)
    a = placed(f.place(req("a", 1, tenant="x")))
    pair = placed(f.reserve(req("pair", 2, tenant="t1")))
    assert pair.module_ids == (2, 4)
    whole = placed(f.reserve(req("ex", 1, tenant="t2", exclusive=True)))
    assert whole.mask == 0xFF & ~pair.mask
    f.release(a)
    ex = placed(f.place(req("ex", 1, tenant="t2", exclusive=True)))
    assert ex.module_ids == (1,)
    # The pair's GPUs are free, but the board now belongs to t2 alone: the hold waits.
    refused(f.place(req("pair", 2, tenant="t1")), Code.NO_FIT)
    assert {p.tenant for p in f.board("node-0").placements} == {"t2"}
    f.release(ex)
    assert placed(f.place(req("pair", 2, tenant="t1"))).node == "node-0"
    assert f.board("node-0").reserved == 0


# --- adopt: rebuilding a fleet after a restart ---------------------------------------------


def test_adopt_records_an_earlier_placement_and_blocks_its_gpus() -> None:
    fleet = Fleet("best-fit")
    fleet.add_node("b0", H100)
    p = fleet.adopt(Request("c1", 2, tenant="t"), "b0", mask_of([1, 3]))
    assert p.node == "b0" and p.module_ids == (1, 3) and p.tenant == "t"
    assert p.partition_id == H100.partition_for([1, 3]).id
    assert fleet.allocated_gpus == 2
    # Best-fit now places next to it, never on it.
    q = fleet.place(Request("c2", 2))
    assert isinstance(q, Placement) and not q.mask & p.mask
    assert fleet.release(p)


def test_adopt_refuses_a_double_allocation() -> None:
    fleet = Fleet("best-fit")
    fleet.add_node("b0", H100)
    fleet.adopt(Request("c1", 2), "b0", mask_of([1, 3]))
    with pytest.raises(MisuseError, match="held by c1"):
        fleet.adopt(Request("c2", 4), "b0", mask_of([1, 2, 3, 4]))
    with pytest.raises(MisuseError, match="already placed"):
        fleet.adopt(Request("c1", 2), "b0", mask_of([5, 7]))
    with pytest.raises(UnknownNode):
        fleet.adopt(Request("c3", 2), "nope", mask_of([5, 7]))


def test_adopt_keeps_cordons_and_health_of_the_adopted_gpus() -> None:
    fleet = Fleet("best-fit")
    fleet.add_node("b0", H100)
    fleet.cordon_gpu("b0", 1)
    fleet.set_gpu_health("b0", 3, False)
    p = fleet.adopt(Request("c1", 2), "b0", mask_of([1, 3]))
    fleet.release(p)
    board = fleet.board("b0")
    assert board.cordoned_gpus == mask_of([1]) and board.unhealthy == mask_of([3])

"""Placement policies as pure functions of (model, ask, blocked mask), and their registry."""

from __future__ import annotations

import pytest

from gpucaas.errors import InvalidRequest
from gpucaas.placement import (
    DEFAULT_POLICY,
    FLUID,
    POLICIES,
    POLICY_NAMES,
    STOCK_NODE_RANKS,
    WHOLE_BOARD_SHARE,
    AdaptiveFit,
    BestFit,
    CountOnly,
    FirstFit,
    Fleet,
    Placement,
    Random,
    Request,
    Spread,
    Stock,
    StockSpread,
    UnknownPolicy,
    get_policy,
)
from gpucaas.topology import get_model, mask_of

H100 = get_model("hgx-h100-8")
B200 = get_model("hgx-b200-8")
PARTITION_AWARE = [
    "adaptive-fit",
    "best-fit",
    "first-fit",
    "spread",
    "random",
    "stock",
    "stock-spread",
]


def test_registry_names_every_policy_and_fluid_last() -> None:
    assert set(POLICIES) == {
        "adaptive-fit",
        "best-fit",
        "first-fit",
        "spread",
        "random",
        "stock",
        "stock-spread",
        "count-only",
    }
    assert DEFAULT_POLICY == "adaptive-fit"
    assert Fleet().policy is get_policy(DEFAULT_POLICY)
    assert POLICY_NAMES[-1] == FLUID == "fluid"
    assert set(POLICY_NAMES) == {*POLICIES, FLUID}
    for name, policy in POLICIES.items():
        assert policy.name == name
        assert get_policy(name) is policy


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("best-fit", BestFit),
        ("first-fit", FirstFit),
        ("spread", Spread),
        ("random", Random),
        ("count-only", CountOnly),
        ("adaptive-fit", AdaptiveFit),
        ("stock", Stock),
        ("stock-spread", StockSpread),
    ],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
def test_policy_classes(name: str, cls: type) -> None:
    policy = get_policy(name)
    assert isinstance(policy, cls)
    assert policy.partition_aware is (name != "count-only")
    assert policy.randomized is (name in ("random", "stock"))
    assert bool(policy.node_ranks) is (name == "stock")


@pytest.mark.parametrize("name", ["fluid", "worst-fit", ""], ids=["fluid", "unknown", "empty"])
def test_unknown_policy_lists_the_choices(name: str) -> None:
    with pytest.raises(UnknownPolicy) as info:
        get_policy(name)
    message = str(info.value)
    assert repr(name) in message
    for known in POLICY_NAMES:
        assert known in message
    assert isinstance(info.value, InvalidRequest)


@pytest.mark.parametrize("name", PARTITION_AWARE, ids=PARTITION_AWARE)
def test_partition_aware_scores_none_exactly_when_no_partition_fits(name: str) -> None:
    policy = get_policy(name)
    for model in (H100, B200):
        for gpus in range(1, 9):
            size = model.size_for(gpus)
            for blocked in range(256):
                fits = model.best_partition(size, blocked) is not None
                assert (policy.score(model, gpus, blocked) is not None) is fits
                choice = policy.choose(model, gpus, blocked)
                if not fits:
                    assert choice is None
                    continue
                assert choice is not None
                mask, partition_id = choice
                assert partition_id is not None
                assert model.partition(partition_id).mask == mask
                assert not mask & blocked
                assert mask.bit_count() == size


def test_best_fit_prefers_less_damage_then_fewer_free_gpus() -> None:
    policy = get_policy("best-fit")
    idle = policy.score(H100, 1, 0)
    one_used = policy.score(H100, 1, mask_of([1]))
    broken = policy.score(H100, 1, mask_of([1, 3]))
    assert idle is not None and one_used is not None and broken is not None
    assert one_used > idle  # the buddy of a used GPU breaks nothing
    assert broken < one_used  # breaking pair 2,4 costs more than taking a buddy
    # Same (no) damage: the board left with fewer free GPUs wins.
    assert policy.score(H100, 4, mask_of([1, 2, 3, 4])) == 0
    assert policy.score(H100, 4, mask_of([1, 2, 3])) == -1


def test_spread_scores_free_gpus_and_first_fit_is_flat() -> None:
    spread, first = get_policy("spread"), get_policy("first-fit")
    assert spread.score(H100, 1, 0) == 8
    assert spread.score(H100, 1, mask_of([1, 2])) == 6
    assert spread.score(H100, 8, mask_of([1])) is None
    assert first.score(H100, 1, 0) == first.score(H100, 1, mask_of([1, 2])) == 0
    assert get_policy("random").score(H100, 2, mask_of([1, 2, 5, 6])) is None


@pytest.mark.parametrize(
    ("gpus", "blocked", "expected"),
    [
        (1, 0, (0b1, 7)),
        (2, 0, (0b11, None)),
        (2, mask_of([2]), (mask_of([1, 3]), 3)),
        (4, mask_of([1, 3]), (mask_of([2, 4, 5, 6]), None)),
        (7, mask_of([4]), (0xFF & ~mask_of([4]), None)),
        (8, mask_of([4]), None),
        (0, 0, None),
    ],
    ids=[
        "lowest single",
        "lowest pair is no partition",
        "skips a used GPU and happens to hit pair 1,3",
        "lowest four across the halves",
        "all seven free GPUs",
        "eight with one used",
        "zero GPUs is nothing to choose",
    ],
)
def test_count_only_choose(
    gpus: int, blocked: int, expected: tuple[int, int | None] | None
) -> None:
    policy = get_policy("count-only")
    assert policy.choose(H100, gpus, blocked) == expected
    assert (policy.score(H100, gpus, blocked) is not None) is (expected is not None)


def test_stock_takes_the_lowest_free_partition_id_not_buddy_best_fit() -> None:
    stock, spread = get_policy("stock"), get_policy("stock-spread")
    for policy in (stock, spread):
        # GPU 1 used: buddy best-fit takes its buddy (GPU 3 on H100, pair 1,3); the DRA
        # allocator takes the lowest free id, GPU 2, and breaks pair 2,4 as well.
        assert policy.choose(H100, 1, mask_of([1])) == (mask_of([2]), 8)
        assert get_policy("best-fit").choose(H100, 1, mask_of([1])) == (mask_of([3]), 9)
        # On B200 the pairs are adjacent: GPU 2 is GPU 1's buddy there.
        assert policy.choose(B200, 1, mask_of([1])) == (mask_of([2]), 9)
        assert policy.choose(H100, 2, mask_of([1])) == (mask_of([2, 4]), 4)
        assert policy.choose(H100, 8, mask_of([1])) is None
    assert stock.score(H100, 1, 0) == stock.score(H100, 1, mask_of([1, 2])) == 0
    assert spread.score(H100, 1, 0) == 8 and spread.score(H100, 1, mask_of([1, 2])) == 6


def test_stock_prefers_the_lowest_fitting_node_with_the_observed_odds() -> None:
    fleet = Fleet("stock", seed=7)
    for n in range(5):
        fleet.add_node(f"n{n}", H100)
    counts = {f"n{n}": 0 for n in range(5)}
    for i in range(3000):
        placed = fleet.place(Request(i, 8))
        assert isinstance(placed, Placement) and placed.node is not None
        counts[placed.node] += 1
        fleet.release(placed)
    assert counts["n3"] == counts["n4"] == 0
    for node, chance in zip(("n0", "n1", "n2"), STOCK_NODE_RANKS, strict=True):
        assert abs(counts[node] / 3000 - chance) < 0.03, counts


def test_adaptive_fit_packs_until_whole_boards_hold_their_share() -> None:
    """Packed mode is best-fit (fullest board among equal damage); once 8-GPU placements
    hold WHOLE_BOARD_SHARE of the allocated GPUs, ties go to the lowest node index."""
    fleet = Fleet("adaptive-fit")
    for n in range(4):
        fleet.add_node(f"n{n}", H100)
    # n1 holds 1 GPU, n2 holds 5 GPUs, n0 and n3 are idle.
    fleet.adopt(Request("x", 1), "n1", mask_of([1]))
    fleet.adopt(Request("y", 4), "n2", mask_of([1, 2, 3, 4]))
    fleet.adopt(Request("z", 1), "n2", mask_of([5]))
    # A 1-GPU ask: the buddies of x (n1) and z (n2) break nothing; packed takes n2.
    packed = fleet.place(Request("p", 1))
    assert isinstance(packed, Placement) and packed.node == "n2"
    fleet.release(packed)
    # Whole-board placements take over: n3 runs an 8-GPU container (8 of 14 GPUs).
    fleet.adopt(Request("w", 8), "n3", H100.full_mask)
    assert 8 >= WHOLE_BOARD_SHARE * fleet.allocated_gpus
    ordered = fleet.place(Request("o", 1))
    assert isinstance(ordered, Placement) and ordered.node == "n1"
    assert get_policy("adaptive-fit").score(H100, 1, 0) == get_policy("best-fit").score(H100, 1, 0)

"""Board models: the shipped tables, lookups and buddy best-fit (gpucaas.topology._model)."""

from __future__ import annotations

import itertools

import pytest

from gpucaas.errors import InvalidRequest
from gpucaas.topology import (
    MODELS,
    BoardModel,
    NotAPartition,
    Partition,
    SizeOutOfRange,
    UnknownModel,
    UnknownPartition,
    format_module_ids,
    get_model,
    mask_of,
    module_ids_of,
)

H100 = get_model("hgx-h100-8")
B200 = get_model("hgx-b200-8")

# DESIGN.md, "The one idea that shapes everything": id -> (module IDs, NVLinks).
H100_TABLE = {
    0: ((1, 2, 3, 4, 5, 6, 7, 8), 144),
    1: ((1, 2, 3, 4), 72),
    2: ((5, 6, 7, 8), 72),
    3: ((1, 3), 36),
    4: ((2, 4), 36),
    5: ((5, 7), 36),
    6: ((6, 8), 36),
    **{7 + i: ((1 + i,), 0) for i in range(8)},
}

B200_TABLE = {
    1: ((1, 2, 3, 4, 5, 6, 7, 8), 144),
    2: ((1, 2, 3, 4), 72),
    3: ((5, 6, 7, 8), 72),
    4: ((1, 2), 36),
    5: ((3, 4), 36),
    6: ((5, 6), 36),
    7: ((7, 8), 36),
    **{8 + i: ((1 + i,), 0) for i in range(8)},
}


def table_of(model: BoardModel) -> dict[int, tuple[tuple[int, ...], int]]:
    return {int(p.id): (tuple(p.module_ids), p.nvlinks) for p in model.partitions}


# -- the shipped tables -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "table"),
    [(H100, H100_TABLE), (B200, B200_TABLE)],
    ids=["hgx-h100-8 matches DESIGN.md", "hgx-b200-8 matches FM's default table"],
)
def test_partition_table_is_exactly_the_documented_one(
    model: BoardModel, table: dict[int, tuple[tuple[int, ...], int]]
) -> None:
    assert table_of(model) == table
    assert model.gpu_count == 8
    assert model.sizes == (1, 2, 4, 8)
    assert model.full_mask == 0xFF
    for p in model.partitions:
        assert p.mask == mask_of(p.module_ids)
        assert p.size == len(p.module_ids)


def test_partitions_are_sorted_by_id() -> None:
    for model in (H100, B200):
        ids = [p.id for p in model.partitions]
        assert ids == sorted(ids)


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("hgx-h100-8", "hgx-h100-8"),
        ("hgx-h200-8", "hgx-h100-8"),
        ("hgx-h800-8", "hgx-h100-8"),
        ("hgx-h20-8", "hgx-h100-8"),
        ("hgx-b200-8", "hgx-b200-8"),
        ("hgx-b300-8", "hgx-b200-8"),
    ],
    ids=lambda v: v,
)
def test_aliases_resolve_to_the_same_model_object(alias: str, name: str) -> None:
    assert get_model(alias) is get_model(name)
    assert get_model(alias).name == name
    assert alias in MODELS


def test_registry_names_are_canonical_and_sorted() -> None:
    assert MODELS.names() == ["hgx-b200-8", "hgx-h100-8"]


def test_unknown_model_lists_the_known_names() -> None:
    with pytest.raises(UnknownModel) as info:
        get_model("hgx-a100-8")
    message = str(info.value)
    assert "'hgx-a100-8'" in message
    assert "hgx-b200-8" in message and "hgx-h100-8" in message
    assert info.value.known == ("hgx-b200-8", "hgx-h100-8")
    assert isinstance(info.value, InvalidRequest)
    assert "nope" not in MODELS


def test_h100_pci_ids_and_bars() -> None:
    assert {d.name: d.device_id for d in H100.gpu_devices} == {
        "H100 SXM5": 0x2330,
        "H200": 0x2335,
    }
    assert H100.nvswitch is not None
    assert H100.nvswitch.device_id == 0x22A3
    assert H100.nvswitch.count == 4
    assert H100.bars is not None
    assert (H100.bars.bar0_mib, H100.bars.bar2_gib, H100.bars.bar4_mib) == (16, 128, 32)


def test_b200_leaves_bars_out_until_measured() -> None:
    assert B200.bars is None
    assert [d.device_id for d in B200.gpu_devices] == [0x2901]


# -- identifiers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "text"),
    [
        ((1, 2, 3, 4), "1-4"),
        ((1, 3), "1,3"),
        ((5, 6), "5,6"),
        ((8,), "8"),
        ((3, 1, 2), "1-3"),
        ((1, 2, 4), "1,2,4"),
        ((), ""),
    ],
    ids=["run of four", "pair", "adjacent pair", "single", "unsorted run", "gap", "empty"],
)
def test_format_module_ids(ids: tuple[int, ...], text: str) -> None:
    assert format_module_ids(ids) == text


def test_mask_round_trip() -> None:
    for r in range(9):
        for ids in itertools.combinations(range(1, 9), r):
            assert module_ids_of(mask_of(ids)) == ids
    assert mask_of([1]) == 1 and mask_of([8]) == 0x80


# -- size_for -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpus", "size"),
    [(1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (6, 8), (7, 8), (8, 8)],
    ids=lambda v: str(v),
)
@pytest.mark.parametrize("model", [H100, B200], ids=["h100", "b200"])
def test_size_for_rounds_up_to_a_partition_size(model: BoardModel, gpus: int, size: int) -> None:
    assert model.size_for(gpus) == size


@pytest.mark.parametrize("gpus", [0, 9, -1, 100], ids=["zero", "nine", "negative", "huge"])
def test_size_for_out_of_range_says_what_to_ask(gpus: int) -> None:
    with pytest.raises(SizeOutOfRange) as info:
        H100.size_for(gpus)
    message = str(info.value)
    assert f"{gpus} GPUs" in message
    assert "hgx-h100-8" in message
    assert "1, 2, 4, 8" in message
    assert "ask for 1 to 8 GPUs" in message
    assert info.value.gpus == gpus
    assert info.value.sizes == (1, 2, 4, 8)


# -- partition lookups --------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "ids", "partition_id"),
    [
        (H100, [1, 3], 3),
        (H100, [3, 1], 3),
        (H100, [8, 6], 6),
        (H100, [5, 6, 7, 8], 2),
        (H100, range(1, 9), 0),
        (H100, [4], 10),
        (B200, [1, 2], 4),
        (B200, [7, 8], 7),
        (B200, range(1, 9), 1),
    ],
    ids=[
        "h100 1,3",
        "h100 order does not matter",
        "h100 6,8",
        "h100 upper half",
        "h100 whole board",
        "h100 single",
        "b200 adjacent pair",
        "b200 last pair",
        "b200 whole board",
    ],
)
def test_partition_for_finds_the_exact_set(
    model: BoardModel, ids: object, partition_id: int
) -> None:
    assert model.partition_for(ids).id == partition_id  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "ids"),
    [
        (H100, [1, 2]),
        (H100, [1, 2, 3]),
        (H100, [2, 3, 4, 5]),
        (H100, [1, 1]),
        (H100, []),
        (H100, [9]),
        (H100, [0]),
        (B200, [1, 3]),
    ],
    ids=[
        "h100 adjacent pair is no partition",
        "three GPUs",
        "straddles the halves",
        "module listed twice",
        "empty set",
        "module beyond the board",
        "module zero",
        "b200 strided pair is no partition",
    ],
)
def test_partition_for_rejects_non_partitions(model: BoardModel, ids: list[int]) -> None:
    with pytest.raises(NotAPartition) as info:
        model.partition_for(ids)
    assert model.name in str(info.value)
    assert "not a partition" in str(info.value)


def test_not_a_partition_message_names_the_gpus() -> None:
    with pytest.raises(NotAPartition, match=r"GPUs 1,2 are not a partition of board model"):
        H100.partition_for([2, 1])


def test_partition_by_id_and_unknown_id() -> None:
    assert H100.partition(4).module_ids == (2, 4)
    with pytest.raises(UnknownPartition, match="has no partition 15"):
        H100.partition(15)
    with pytest.raises(UnknownPartition):
        B200.partition(0)


def test_partition_for_mask() -> None:
    assert H100.partition_for_mask(0b101) == H100.partition(3)
    assert H100.partition_for_mask(0b11) is None
    assert H100.partition_for_mask(0) is None


# -- conflicts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("partition_id", "conflicting"),
    [
        (0, set(range(1, 15))),
        (1, {0, 3, 4, 7, 8, 9, 10}),
        (3, {0, 1, 7, 9}),
        (6, {0, 2, 12, 14}),
        (9, {0, 1, 3}),
    ],
    ids=["whole board conflicts with all", "lower half", "pair 1,3", "pair 6,8", "single 3"],
)
def test_h100_conflicts(partition_id: int, conflicting: set[int]) -> None:
    assert {int(p.id) for p in H100.conflicts(partition_id)} == conflicting


def test_conflicts_agree_with_overlap_on_every_pair() -> None:
    for model in (H100, B200):
        for a in model.partitions:
            others = {p.id for p in model.conflicts(a.id)}
            assert a.id not in others
            for b in model.partitions:
                overlap = bool(a.mask & b.mask)
                assert model.overlaps(a.id, b.id) is overlap
                assert (b.id in others) is (overlap and a.id != b.id)


def test_conflicts_of_unknown_partition() -> None:
    with pytest.raises(UnknownPartition):
        H100.conflicts(99)


# -- available --------------------------------------------------------------------------


def ids_of(parts: object) -> set[int]:
    return {int(p.id) for p in parts}  # type: ignore[attr-defined]


def test_everything_is_available_on_an_idle_board() -> None:
    assert ids_of(H100.available()) == set(range(15))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"used": mask_of([1])}, {2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14}),
        ({"active": [1]}, {2, 5, 6, 11, 12, 13, 14}),
        ({"active": [3, 6]}, {4, 5, 8, 10, 11, 13}),
        ({"unhealthy": mask_of([8])}, {1, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13}),
        (
            {"used": mask_of([2]), "active": [5], "unhealthy": mask_of([6])},
            {3, 7, 9, 10, 14},
        ),
        ({"used": 0xFF}, set()),
        ({"unhealthy": 0x1FF}, set()),
    ],
    ids=[
        "used GPU blocks every partition holding it",
        "active half blocks what overlaps it",
        "two active pairs",
        "unhealthy GPU blocks like a used one",
        "used, active and unhealthy together",
        "full board",
        "bits beyond the board are ignored",
    ],
)
def test_available(kwargs: dict[str, object], expected: set[int]) -> None:
    assert ids_of(H100.available(**kwargs)) == expected  # type: ignore[arg-type]


def test_available_with_unknown_active_partition() -> None:
    with pytest.raises(UnknownPartition):
        H100.available(active=[42])


def test_free_bits_matches_available() -> None:
    for blocked in range(256):
        bits = H100.free_bits(blocked)
        from_bits = {int(p.id) for i, p in enumerate(H100.partitions) if bits >> i & 1}
        assert from_bits == ids_of(H100.available(blocked))


# -- best_partition -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "size", "used", "expected"),
    [
        (H100, 2, [1, 3], [2, 4]),
        (H100, 1, [1], [3]),
        (H100, 1, [], [1]),
        (H100, 2, [], [1, 3]),
        (H100, 4, [], [1, 2, 3, 4]),
        (H100, 4, [2], [5, 6, 7, 8]),
        (H100, 1, [1, 3], [2]),
        (H100, 1, [1, 2, 3], [4]),
        (H100, 2, [5], [6, 8]),
        (H100, 2, [1, 5], [2, 4]),
        (H100, 8, [], [1, 2, 3, 4, 5, 6, 7, 8]),
        (B200, 1, [1], [2]),
        (B200, 2, [1], [3, 4]),
        (B200, 2, [5, 6], [7, 8]),
        (B200, 4, [8], [1, 2, 3, 4]),
    ],
    ids=[
        "h100 pair after 1,3 used goes to 2,4",
        "h100 single with GPU 1 used takes its buddy 3 not 2",
        "h100 first single on an idle board",
        "h100 first pair on an idle board",
        "h100 first half on an idle board",
        "h100 half next to a used GPU",
        "h100 single fills the broken pair's half",
        "h100 last single of the broken half",
        "h100 pair stays in the already-broken half",
        "h100 both halves broken: lowest free pair",
        "h100 whole board",
        "b200 single takes its adjacent buddy",
        "b200 pair stays in the broken half",
        "b200 pair next to a used pair",
        "b200 half away from the used GPU",
    ],
)
def test_best_partition_is_buddy_best_fit(
    model: BoardModel, size: int, used: list[int], expected: list[int]
) -> None:
    best = model.best_partition(size, mask_of(used))
    assert best is not None
    assert list(best.module_ids) == expected


def test_best_partition_none_when_nothing_of_the_size_is_free() -> None:
    assert H100.best_partition(8, mask_of([1])) is None
    assert H100.best_partition(2, mask_of([1, 2, 5, 6])) is None
    assert H100.best_partition(1, 0xFF) is None
    assert H100.best_partition(3, 0) is None


def _lost(model: BoardModel, size: int, blocked: int, taken: Partition) -> tuple[int, ...]:
    """Free partitions of size >= ``size`` that taking ``taken`` destroys, counted per size,
    largest size first (so tuples compare as "fewest larger ones destroyed")."""
    after = {q.id for q in model.available(blocked | taken.mask)}
    lost = [
        q
        for q in model.available(blocked)
        if q.id not in after and q.size >= size and q.id != taken.id
    ]
    return tuple(sum(1 for q in lost if q.size == s) for s in reversed(model.sizes))


def test_best_partition_never_destroys_more_than_any_alternative() -> None:
    """Brute force over every board state: the choice is free, of the size, and no other free
    partition of that size would destroy a lexicographically smaller set of larger ones;
    ties go to the lowest id."""
    for model in (H100, B200):
        for size in model.sizes:
            for blocked in range(256):
                free = [p for p in model.available(blocked) if p.size == size]
                best = model.best_partition(size, blocked)
                if not free:
                    assert best is None
                    continue
                assert best is not None and best in free
                costs = {p.id: _lost(model, size, blocked, p) for p in free}
                least = min(costs.values())
                assert costs[best.id] == least
                assert best.id == min(pid for pid, c in costs.items() if c == least)
                assert (model.damage(size, blocked) == 0) is (least == (0, 0, 0, 0))


def test_best_partition_with_must_include_is_the_same_ranking_restricted() -> None:
    """Brute force: with must-include GPUs the choice is the least-damage free partition of
    the size that holds them all (lowest id on ties), or None when there is none; without
    them, it is the unrestricted choice."""
    for model in (H100, B200):
        for size in model.sizes:
            for blocked in range(256):
                for must in range(256):
                    if must & blocked:
                        continue
                    free = [
                        p
                        for p in model.available(blocked)
                        if p.size == size and must & ~p.mask == 0
                    ]
                    best = model.best_partition(size, blocked, must_include=must)
                    if not free:
                        assert best is None
                        continue
                    assert best is not None and best in free
                    costs = {p.id: _lost(model, size, blocked, p) for p in free}
                    least = min(costs.values())
                    assert best.id == min(pid for pid, c in costs.items() if c == least)
                assert model.best_partition(size, blocked, must_include=0) == (
                    model.best_partition(size, blocked)
                )


def test_damage_orders_larger_partitions_first() -> None:
    # A single on an idle board breaks the whole board, a half and a pair; once 1 and 3 are
    # used, the best single only breaks the pair 2,4; on 1,3,5,7 used it breaks nothing.
    idle = H100.damage(1, 0)
    one_pair = H100.damage(1, mask_of([1, 3]))
    assert idle > one_pair > 0
    assert H100.damage(1, mask_of([1])) == 0
    assert H100.damage(8, 0) == 0
    # A pair whose only choice breaks a half costs more than a single that breaks a pair.
    assert H100.damage(2, mask_of([5, 6, 7, 8])) > one_pair


def test_best_and_damage_tables_back_the_lookups() -> None:
    for size in H100.sizes:
        best = H100.best_table(size)
        damage = H100.damage_table(size)
        assert len(best) == len(damage) == 256
        for blocked in range(256):
            p = H100.best_partition(size, blocked)
            assert (p is None) == (best[blocked] == -1)
            assert damage[blocked] == H100.damage(size, blocked)


# -- nested -----------------------------------------------------------------------------


def test_shipped_models_are_nested() -> None:
    assert H100.nested
    assert B200.nested


def _model(partitions: list[list[int]], gpu_count: int = 4) -> BoardModel:
    from gpucaas.topology import ModuleId, PartitionId

    parts = tuple(
        Partition(PartitionId(i), tuple(ModuleId(m) for m in sorted(g)), 0, mask_of(g))
        for i, g in enumerate(partitions)
    )
    return BoardModel("test", (), "", gpu_count, parts)


def test_a_table_without_buddies_is_not_nested() -> None:
    # Pair 3,4 holds no single, so "no free single" does not imply "no free pair".
    flat = _model([[1, 2, 3, 4], [1, 2], [3, 4], [1], [2]])
    assert not flat.nested
    nested = _model([[1, 2, 3, 4], [1, 2], [3, 4], [1], [2], [3], [4]])
    assert nested.nested


def test_small_handmade_model_lookups() -> None:
    model = _model([[1, 2], [3], [1], [2]], gpu_count=3)
    assert model.sizes == (1, 2)
    assert model.size_for(2) == 2
    with pytest.raises(SizeOutOfRange):
        model.size_for(3)
    best = model.best_partition(1, 0)
    assert best is not None and best.module_ids == (3,)
    assert repr(model) == "BoardModel('test', 4 partitions)"
    assert str(model.partition(0)) == "partition 0 (GPUs 1,2)"

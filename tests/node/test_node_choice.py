"""The partition choice on its own: kubelet device IDs in, partitions of the H100 board out.

Device IDs "0".."7" are modules 1..8 (the fixture host's module map); the 2-GPU partitions
are modules {1,3}, {2,4}, {5,7}, {6,8}. The choice must be the board's one ranking,
:meth:`BoardModel.best_partition`, for every free set and must-include set.
"""

from __future__ import annotations

import itertools

import pytest

from gpucaas.errors import Conflict, InvalidRequest
from gpucaas.node import KubeletGpu, PartitionChoice
from gpucaas.topology import get_model, mask_of

MODEL = get_model("hgx-h100-8")


@pytest.fixture
def choice(gpus: tuple[KubeletGpu, ...]) -> PartitionChoice:
    return PartitionChoice(gpus, MODEL, "nvidia.com/gpu")


def _ids(modules: set[int]) -> list[str]:
    return sorted((str(m - 1) for m in modules), key=int)


@pytest.mark.parametrize(
    ("taken", "size", "must", "expected"),
    [
        (set(), 1, set(), {1}),
        ({1}, 1, set(), {3}),
        ({1, 3}, 2, set(), {2, 4}),
        ({1}, 4, set(), {5, 6, 7, 8}),
        (set(), 2, {5}, {5, 7}),
        ({1, 3}, 2, {8}, {6, 8}),
        ({1}, 1, {6}, {6}),
    ],
    ids=[
        "empty board, 1 GPU: lowest module",
        "module 1 used, 1 GPU: fills its pair",
        "modules 1,3 used, 2 GPUs: the other pair of the half",
        "module 1 used, 4 GPUs: the whole free half",
        "must include module 5",
        "must include module 8 although 2,4 is best",
        "must include module 6 although 3 is best",
    ],
)
def test_preferred_is_buddy_best_fit(
    choice: PartitionChoice, taken: set[int], size: int, must: set[int], expected: set[int]
) -> None:
    available = _ids(set(range(1, 9)) - taken)
    partition = choice.preferred(available, _ids(must), size)
    assert set(partition.module_ids) == expected
    assert choice.device_ids(partition) == _ids(expected)


def test_preferred_is_the_boards_one_ranking(choice: PartitionChoice) -> None:
    """Every free set and every must-include set of up to two GPUs, every size: the choice
    is exactly what the board's best_partition answers (placement calls the same)."""
    modules = range(1, 9)
    musts = [set(), *({m} for m in modules), *(set(p) for p in itertools.combinations(modules, 2))]
    for bits in range(1 << 8):
        free = {m for m in modules if bits >> (m - 1) & 1}
        blocked = MODEL.full_mask & ~mask_of(free)
        for size in MODEL.sizes:
            for must in musts:
                if not must <= free:
                    continue
                best = MODEL.best_partition(size, blocked, must_include=mask_of(must))
                if best is None:
                    with pytest.raises(Conflict, match=f"no free {size}-GPU partition"):
                        choice.preferred(_ids(free), _ids(must), size)
                else:
                    assert choice.preferred(_ids(free), _ids(must), size) == best


@pytest.mark.parametrize(
    ("available", "size", "error", "words"),
    [
        (_ids({2, 3, 4, 5, 6, 7, 8}), 8, Conflict, "no free 8-GPU partition"),
        (_ids({2, 3, 4, 5, 7, 8}), 4, Conflict, "no free 4-GPU partition"),
        (_ids(set(range(1, 9))), 3, InvalidRequest, "request 4 GPUs instead"),
        (["0", "9"], 1, InvalidRequest, "unknown device '9' for nvidia.com/gpu"),
    ],
    ids=["board partly used, 8 GPUs", "both halves broken, 4", "3 is no size", "unknown device"],
)
def test_preferred_explains_a_refusal(
    choice: PartitionChoice,
    available: list[str],
    size: int,
    error: type[Exception],
    words: str,
) -> None:
    with pytest.raises(error, match=words):
        choice.preferred(available, [], size)


def test_partition_of_names_the_valid_sets(choice: PartitionChoice) -> None:
    assert int(choice.partition_of(["2", "0"]).id) == 3
    with pytest.raises(InvalidRequest) as refused:
        choice.partition_of(["0", "1"])
    message = str(refused.value)
    assert "devices 0,1 (modules 1,2) are not one partition" in message
    for valid in ("devices 0,2 (partition 3", "devices 1,3 (partition 4", "devices 5,7"):
        assert valid in message
    with pytest.raises(InvalidRequest, match="partition sizes are 1, 2, 4, 8"):
        choice.partition_of(["0", "1", "2"])


def test_gpus_of_a_partition_in_module_order(
    choice: PartitionChoice, gpus: tuple[KubeletGpu, ...]
) -> None:
    partition = MODEL.partition(5)  # modules 5,7
    assert choice.gpus(partition) == [gpus[4], gpus[6]]
    assert choice.modules(["6", "4"]) == [7, 5]

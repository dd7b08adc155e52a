"""The wait queue: FIFO, backfill, the starvation guard, rejection and removal."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from gpucaas.errors import MisuseError
from gpucaas.placement import (
    DEFAULT_MAX_BYPASS,
    Code,
    Fleet,
    FluidPool,
    Placement,
    Queue,
    Request,
    RequestId,
    Status,
)
from gpucaas.topology import get_model

H100 = get_model("hgx-h100-8")


def fleet(nodes: int = 1, policy: str = "best-fit") -> Fleet:
    f = Fleet(policy)
    for n in range(nodes):
        f.add_node(f"node-{n}", H100)
    return f


def ids(placements: list[Placement]) -> list[object]:
    return [p.request_id for p in placements]


def test_fifo_order_within_a_pass_and_across_passes() -> None:
    f, q = fleet(), Queue()
    for rid in ("a", "b", "c"):
        q.push(Request(rid, 4))
    first = q.schedule(f)
    assert ids(first.placed) == ["a", "b"]
    assert list(q) == [Request("c", 4)]
    assert "c" in q and "a" not in q and len(q) == 1
    f.release(first.placed[0])
    assert ids(q.schedule(f).placed) == ["c"]
    assert len(q) == 0


def test_backfill_starts_small_requests_while_a_big_one_waits() -> None:
    f, q = fleet(), Queue()
    running = f.place(Request("running", 4))
    assert isinstance(running, Placement)
    q.push(Request("big", 8))
    q.push(Request("small", 2))
    q.push(Request("small2", 2))
    result = q.schedule(f)
    assert ids(result.placed) == ["small", "small2"]
    assert list(q) == [Request("big", 8)]
    assert result.reserved is None
    assert result.rejected == []


def test_never_fits_is_rejected_and_leaves_the_queue() -> None:
    f, q = fleet(), Queue()
    q.push(Request("huge", 9))
    q.push(Request("ok", 1))
    result = q.schedule(f)
    assert [(r.id, s.code) for r, s in result.rejected] == [("huge", Code.NEVER_FITS)]
    assert "holds at most 8" in str(result.rejected[0][1])
    assert ids(result.placed) == ["ok"]
    assert len(q) == 0


def test_remove_is_idempotent() -> None:
    q = Queue()
    q.push(Request("a", 1))
    q.push(Request("b", 2))
    assert q.remove("a") == Request("a", 1)
    assert q.remove("a") is None
    assert list(q) == [Request("b", 2)]
    assert q.waiting_sizes() == {2: 1}


def test_push_twice_and_bad_max_bypass_are_misuse() -> None:
    q = Queue()
    q.push(Request("a", 1))
    with pytest.raises(MisuseError, match="already queued"):
        q.push(Request("a", 1))
    with pytest.raises(MisuseError, match="max_bypass"):
        Queue(max_bypass=0)
    assert Queue().max_bypass == DEFAULT_MAX_BYPASS >= 1


def test_smallest_and_waiting_sizes() -> None:
    q = Queue()
    assert q.smallest() is None
    for rid, gpus in (("a", 4), ("b", 2), ("c", 4), ("d", 8)):
        q.push(Request(rid, gpus))
    assert q.smallest() == 2
    assert q.waiting_sizes() == {4: 2, 2: 1, 8: 1}
    q.remove("b")
    assert q.smallest() == 4
    q.schedule(fleet())  # a and c start on one board; d waits
    assert q.waiting_sizes() == {8: 1}


# -- the starvation guard -------------------------------------------------------------


@dataclass
class Churn:
    """One board, a stream of 1-GPU requests that each run two steps, and an 8-GPU head."""

    max_bypass: int
    steps: int = 40
    fleet: Fleet = field(default_factory=fleet)
    started: list[object] = field(default_factory=list)
    reservations: list[Placement] = field(default_factory=list)

    def run(self) -> tuple[Queue, int | None]:
        q = Queue(max_bypass=self.max_bypass)
        running: list[Placement] = []

        def schedule() -> None:
            result = q.schedule(self.fleet)
            running.extend(result.placed)
            self.started.extend(ids(result.placed))
            if result.reserved is not None:
                self.reservations.append(result.reserved)

        q.push(Request("s0", 1))
        q.push(Request("s1", 1))
        schedule()
        q.push(Request("head", 8))
        schedule()
        head_started: int | None = None
        for step in range(self.steps):
            small = next((p for p in running if p.request_id != "head"), None)
            if small is not None:
                running.remove(small)
                assert self.fleet.release(small)
            q.push(Request(f"y{step}", 1))
            schedule()
            if head_started is None and "head" in self.started:
                head_started = step
        return q, head_started


def test_without_an_effective_guard_the_big_head_starves() -> None:
    churn = Churn(max_bypass=10**6)
    q, head_started = churn.run()
    assert head_started is None
    assert "head" in q
    assert churn.reservations == []
    assert len(churn.started) == 2 + churn.steps  # every younger request started at once


def test_with_the_guard_the_head_gets_a_reservation_and_starts() -> None:
    churn = Churn(max_bypass=3)
    q, head_started = churn.run()
    assert head_started is not None
    assert "head" not in q
    assert len(churn.reservations) == 1
    held = churn.reservations[0]
    assert (held.request_id, held.mask, held.partition_id) == ("head", 0xFF, 0)
    # Exactly max_bypass younger requests started ahead of the head before it was held.
    head_at = churn.started.index("head")
    assert churn.started[:head_at] == ["s0", "s1", "y0", "y1", "y2"]
    # Younger requests pushed while the GPUs drained waited and start after the head.
    assert len(q) > 0
    assert all(str(r.id).startswith("y") for r in q)
    assert churn.fleet.board("node-0").reserved == 0


def test_a_reservation_lost_to_a_failed_gpu_is_made_again() -> None:
    """The head's hold goes bad (a GPU in it is cordoned): the queue reserves again
    instead of leaving the head to starve behind younger requests."""
    f = fleet()
    q = Queue(max_bypass=2)
    running: list[Placement] = []
    started: list[object] = []
    holds: list[Placement] = []

    def schedule() -> None:
        result = q.schedule(f)
        running.extend(result.placed)
        started.extend(ids(result.placed))
        if result.reserved is not None:
            holds.append(result.reserved)

    for n in range(5):
        q.push(Request(f"s{n}", 1))
    schedule()
    assert [p.module_ids for p in running] == [(1,), (3,), (2,), (4,), (5,)]
    q.push(Request("head", 4))
    schedule()
    for step in range(30):
        if step == 3:
            assert [h.module_ids for h in holds] == [(5, 6, 7, 8)]
            f.cordon_gpu("node-0", 6)
        small = next((p for p in running if p.request_id != "head"), None)
        if small is not None:
            running.remove(small)
            f.release(small)
        q.push(Request(f"y{step}", 1))
        schedule()
    assert "head" in started
    assert len(holds) == 2
    assert holds[1].module_ids == (1, 2, 3, 4)
    head = next(p for p in running if p.request_id == "head")
    assert head.module_ids == (1, 2, 3, 4)


def test_remove_drops_the_reservation() -> None:
    f = fleet()
    q = Queue(max_bypass=1)
    q.push(Request("s0", 1))
    q.schedule(f)
    q.push(Request("head", 8))
    q.push(Request("y", 1))
    result = q.schedule(f)
    assert ids(result.placed) == ["y"]
    assert result.reserved is not None and result.reserved.request_id == "head"
    assert f.reservation("head") is not None
    assert q.remove("head", f) == Request("head", 8)
    assert f.reservation("head") is None
    assert f.board("node-0").reserved == 0


def test_fluid_pool_cannot_reserve_and_the_queue_copes() -> None:
    pool = FluidPool(H100, 8)
    q = Queue(max_bypass=1)
    first = pool.place(Request("s0", 1))
    assert isinstance(first, Placement)
    q.push(Request("head", 8))
    q.push(Request("y", 1))
    result = q.schedule(pool)
    assert ids(result.placed) == ["y"]
    assert result.reserved is None
    assert "head" in q


# -- skipping asks that cannot fit --------------------------------------------------


@dataclass
class RecordingAllocator:
    """An allocator with room for ``free`` GPUs in total, recording every place call."""

    free: int
    monotone: bool = True
    calls: list[RequestId] = field(default_factory=list)

    @property
    def capacity(self) -> int:
        return 8

    @property
    def free_gpus(self) -> int:
        return self.free

    @property
    def allocated_gpus(self) -> int:
        return 8 - self.free

    def place(self, request: Request) -> Placement | Status:
        self.calls.append(request.id)
        if request.gpus > self.free:
            return Status(Code.NO_FIT, ("full",))
        self.free -= request.gpus
        return Placement(request.id, "n", request.gpus, 0, None)

    def release(self, placement: Placement) -> bool:
        return False

    def reserve(self, request: Request) -> Placement | Status:
        return Status(Code.NO_FIT, ("no",))

    def cancel_reservation(self, request_id: RequestId) -> bool:
        return False

    def placements(self) -> Iterator[Placement]:
        return iter(())


def test_larger_asks_with_the_same_constraints_are_skipped_after_a_failure() -> None:
    allocator = RecordingAllocator(free=3)
    q = Queue()
    q.push(Request("four", 4))
    q.push(Request("eight", 8))
    q.push(Request("two", 2))
    q.push(Request("four-zone", 4, node_selector={"zone": "a"}))
    q.push(Request("one", 1))
    q.push(Request("six", 6))
    result = q.schedule(allocator)
    assert ids(result.placed) == ["two", "one"]
    # "eight" and "six" were never tried: "four" failed first with the same constraints.
    assert allocator.calls == ["four", "two", "four-zone", "one"]


def test_nothing_is_skipped_when_the_allocator_is_not_monotone() -> None:
    allocator = RecordingAllocator(free=3, monotone=False)
    q = Queue()
    for rid, gpus in (("four", 4), ("eight", 8), ("two", 2)):
        q.push(Request(rid, gpus))
    q.schedule(allocator)
    assert allocator.calls == ["four", "eight", "two"]

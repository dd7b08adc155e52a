"""Placement invariants over random arrival/departure sequences (hypothesis).

Each sequence mixes arrivals (plain, exclusive, with node selectors, some never fitting),
departures, GPU health changes, GPU and node cordons, node removal, reservations and their
cancellation. After every step the fleet must be consistent; every decision must respect
the partition table and the constraints; the index must decide exactly as the plain scan.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpucaas.placement import POLICIES, Code, Fleet, Placement, Queue, Request, RequestId, Status
from gpucaas.topology import BoardModel, get_model

MODELS = [get_model("hgx-h100-8"), get_model("hgx-b200-8")]
MODEL_IDS = [m.name for m in MODELS]
BOARD_POLICIES = sorted(POLICIES)
DETERMINISTIC = ["adaptive-fit", "best-fit", "count-only", "first-fit", "spread", "stock-spread"]
TENANTS = ["acme", "globex", "initech"]
SELECTORS: list[dict[str, str]] = [{}, {}, {}, {"zone": "a"}, {"zone": "b"}, {"zone": "mars"}]
PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def zone(n: int) -> str:
    return "b" if n % 3 == 1 else "a"


# -- operations -----------------------------------------------------------------------

# Mostly small asks (they pack and fragment boards), some large, a few that never fit.
gpus_st = st.sampled_from([1, 1, 1, 1, 2, 2, 2, 3, 4, 4, 5, 8, 8, 0, 9])
request_st = st.tuples(
    gpus_st,
    st.integers(0, len(TENANTS) - 1),
    st.sampled_from([False, False, False, True]),
    st.integers(0, len(SELECTORS) - 1),
)

op_st = st.one_of(
    st.tuples(st.just("place"), request_st),
    st.tuples(st.just("place"), request_st),
    st.tuples(st.just("place"), request_st),
    st.tuples(st.just("release"), st.integers(0, 63)),
    st.tuples(st.just("release"), st.integers(0, 63)),
    st.tuples(st.just("retry"), st.integers(0, 63)),
    st.tuples(st.just("retry"), st.integers(0, 63)),
    st.tuples(st.just("reserve"), request_st),
    st.tuples(st.just("cancel"), st.integers(0, 63)),
    st.tuples(st.just("health"), st.tuples(st.integers(0, 63), st.integers(1, 8), st.booleans())),
    st.tuples(
        st.just("cordon_gpu"), st.tuples(st.integers(0, 63), st.integers(1, 8), st.booleans())
    ),
    st.tuples(st.just("cordon_node"), st.tuples(st.integers(0, 63), st.booleans())),
    st.tuples(st.just("readd"), st.integers(0, 63)),
)
ops_st = st.lists(op_st, min_size=10, max_size=80)


@dataclass
class Run:
    """Applies operations to a fleet, checking every invariant on the way, and records
    each decision so that two runs can be compared."""

    policy: str
    model: BoardModel
    nodes: int = 4
    seed: int = 0
    index: bool = True
    probe_release: bool = True
    check_every_step: bool = True
    fleet: Fleet = field(init=False)
    live: list[Placement] = field(default_factory=list)
    pending: list[Request] = field(default_factory=list)
    decisions: list[tuple[str, object]] = field(default_factory=list)
    next_id: int = 0

    def __post_init__(self) -> None:
        self.fleet = Fleet(self.policy, seed=self.seed, index=self.index)
        for n in range(self.nodes):
            self.fleet.add_node(f"n{n}", self.model, {"zone": zone(n)})

    def node(self, k: int) -> str:
        """Any generated index names a node ("readd" keeps the names alive)."""
        return f"n{k % self.nodes}"

    def new_request(self, spec: tuple[int, int, bool, int]) -> Request:
        gpus, tenant, exclusive, selector = spec
        self.next_id += 1
        request = Request(
            self.next_id,
            gpus,
            tenant=TENANTS[tenant],
            node_selector=SELECTORS[selector],
            exclusive=exclusive,
        )
        return request

    def apply(self, op: tuple[str, Any]) -> None:
        kind, arg = op
        f = self.fleet
        if kind == "place":
            self.place(self.new_request(arg))
        elif kind == "retry":
            if self.pending:
                self.place(self.pending.pop(arg % len(self.pending)))
        elif kind == "release":
            if self.live:
                p = self.live.pop(arg % len(self.live))
                assert f.release(p)
                assert not f.release(p)
                self.decisions.append(("release", p.request_id))
        elif kind == "reserve":
            request = self.new_request(arg)
            before = {b.name: b for b in f.boards()}
            outcome = f.reserve(request)
            self.decisions.append(("reserve", outcome))
            if isinstance(outcome, Placement):
                assert outcome.node is not None
                board = before[outcome.node]
                assert not board.cordoned
                assert outcome.mask & (board.unhealthy | board.cordoned_gpus | board.reserved) == 0
                assert f.reservation(request.id) is not None
                assert f.reserve(request) == outcome  # idempotent
                self.pending.append(request)
            else:
                assert outcome.code in (Code.NO_FIT, Code.NEVER_FITS)
        elif kind == "cancel":
            if self.pending:
                request = self.pending[arg % len(self.pending)]
                had = f.reservation(request.id) is not None
                assert f.cancel_reservation(request.id) is had
                assert not f.cancel_reservation(request.id)
        elif kind == "health":
            k, module_id, healthy = arg
            f.set_gpu_health(self.node(k), module_id, healthy)
        elif kind == "cordon_gpu":
            k, module_id, on = arg
            f.cordon_gpu(self.node(k), module_id, on)
        elif kind == "cordon_node":
            k, on = arg
            f.cordon_node(self.node(k), on)
        elif kind == "readd":
            name = self.node(arg)
            lost = f.remove_node(name)
            assert all(p.node == name for p in lost)
            assert set(lost) == {p for p in self.live if p.node == name}
            self.live = [p for p in self.live if p.node != name]
            f.add_node(name, self.model, {"zone": zone(arg % self.nodes)})
            self.decisions.append(("lost", tuple(p.request_id for p in lost)))
        else:  # pragma: no cover
            raise AssertionError(kind)
        if self.check_every_step:
            check_fleet(f, self.policy)

    def place(self, request: Request) -> None:
        f = self.fleet
        before = f.boards()
        totals = (f.free_gpus, f.allocated_gpus, f.capacity)
        reserved_for_it = f.reservation(request.id)
        outcome = f.place(request)
        self.decisions.append(("place", outcome))
        if isinstance(outcome, Status):
            check_refusal(f, self.policy, request, outcome, before, reserved_for_it)
            if outcome.code is Code.NO_FIT:
                self.pending.append(request)
            return
        check_decision(self.policy, self.model, request, outcome, before, reserved_for_it)
        if self.probe_release and reserved_for_it is None:
            # Nothing happens in between: release restores the board state exactly.
            assert f.release(outcome)
            assert f.boards() == before
            assert (f.free_gpus, f.allocated_gpus, f.capacity) == totals
            again = f.place(request)
            if not POLICIES[self.policy].randomized:
                assert again == outcome
            assert isinstance(again, Placement)
            check_decision(self.policy, self.model, request, again, before, None)
            outcome = again
        self.live.append(outcome)


def check_fleet(f: Fleet, policy: str) -> None:
    """Invariants of any fleet state."""
    aware = POLICIES[policy].partition_aware
    boards = f.boards()
    free = allocated = capacity = 0
    held = 0
    for b in boards:
        model = get_model(b.model)
        capacity += model.gpu_count
        union = 0
        for p in b.placements:
            assert p.node == b.name
            assert p.mask & union == 0, f"overlap on {b.name}"
            union |= p.mask
            assert p.gpus == p.mask.bit_count()
            if aware:
                assert p.partition_id is not None
                assert model.partition(p.partition_id).mask == p.mask
            else:
                partition = model.partition_for_mask(p.mask)
                assert p.partition_id == (None if partition is None else partition.id)
            allocated += p.gpus
        assert union == b.used
        if any(p.exclusive for p in b.placements):
            assert len({p.tenant for p in b.placements}) == 1, f"shared exclusive {b.name}"
        if not b.cordoned:
            free += (model.full_mask & ~(b.used | b.unhealthy | b.cordoned_gpus)).bit_count()
        held += b.reserved.bit_count()
    assert (f.free_gpus, f.allocated_gpus, f.capacity) == (free, allocated, capacity)
    assert sorted(p.request_id for p in f.placements()) == sorted(
        p.request_id for b in boards for p in b.placements
    )
    assert [b.index for b in boards] == sorted(b.index for b in boards)


def may_use(request: Request, board: Any) -> bool:
    """Whether the request may go on this board at all (not whether it fits)."""
    if board.cordoned:
        return False
    if any(board.labels.get(k) != v for k, v in request.node_selector.items()):
        return False
    owners = {p.tenant for p in board.placements if p.exclusive}
    if request.exclusive:
        if owners:
            return owners == {request.tenant}
        return not board.placements and not board.reserved
    return not owners


def check_decision(
    policy: str,
    model: BoardModel,
    request: Request,
    p: Placement,
    before: list[Any],
    reservation: Placement | None,
) -> None:
    board = next(b for b in before if b.name == p.node)
    assert p.request_id == request.id and p.tenant == request.tenant
    assert p.exclusive is request.exclusive
    assert p.mask & ~model.full_mask == 0
    assert p.mask & (board.used | board.unhealthy | board.cordoned_gpus) == 0
    if reservation is not None and reservation.node == p.node:
        assert p.mask & board.reserved & ~reservation.mask == 0
    else:
        assert p.mask & board.reserved == 0
    for k, v in request.node_selector.items():
        assert board.labels.get(k) == v
    owners = {q.tenant for q in board.placements if q.exclusive}
    assert owners <= {request.tenant}
    if reservation is None or reservation.node != p.node:
        assert may_use(request, board)
    if POLICIES[policy].partition_aware:
        assert p.partition_id is not None
        assert model.partition(p.partition_id).mask == p.mask
        assert p.gpus == model.size_for(request.gpus)
    else:
        assert p.gpus == request.gpus
        if reservation is None:
            assert p.mask == lowest(model.full_mask & ~board.blocked, request.gpus)


def lowest(free: int, n: int) -> int:
    mask = 0
    for bit in range(16):
        if mask.bit_count() == n:
            break
        if free >> bit & 1:
            mask |= 1 << bit
    return mask


def check_refusal(
    f: Fleet,
    policy: str,
    request: Request,
    status: Status,
    before: list[Any],
    reservation: Placement | None,
) -> None:
    assert status.reasons
    assert f.boards() == before or reservation is not None
    selector_matches = any(
        all(b.labels.get(k) == v for k, v in request.node_selector.items()) for b in before
    )
    out_of_range = not 1 <= request.gpus <= 8
    if out_of_range or not selector_matches:
        assert status.code is Code.NEVER_FITS
        return
    assert status.code is Code.NO_FIT
    # Complete: no board the request may use had room for it.
    chooser = POLICIES[policy]
    for b in before:
        if may_use(request, b):
            model = get_model(b.model)
            assert chooser.choose(model, request.gpus, b.blocked) is None, b.name


# -- the properties -----------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
@pytest.mark.parametrize("policy", BOARD_POLICIES, ids=BOARD_POLICIES)
@PROPERTY
@given(ops=ops_st, seed=st.integers(0, 2**16))
def test_every_step_keeps_the_fleet_consistent(
    policy: str, model: BoardModel, ops: list[tuple[str, Any]], seed: int
) -> None:
    run = Run(policy, model, seed=seed)
    for op in ops:
        run.apply(op)


@pytest.mark.parametrize("policy", BOARD_POLICIES, ids=BOARD_POLICIES)
@PROPERTY
@given(ops=ops_st, seed=st.integers(0, 2**16))
def test_same_seed_same_decisions(policy: str, ops: list[tuple[str, Any]], seed: int) -> None:
    runs = []
    for _ in range(2):
        run = Run(policy, MODELS[0], seed=seed, probe_release=False)
        for op in ops:
            run.apply(op)
        runs.append((run.decisions, run.fleet.boards()))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
@pytest.mark.parametrize("policy", DETERMINISTIC, ids=DETERMINISTIC)
@PROPERTY
@given(ops=st.lists(op_st, min_size=20, max_size=120))
def test_index_decides_exactly_as_the_scan(
    policy: str, model: BoardModel, ops: list[tuple[str, Any]]
) -> None:
    indexed = Run(policy, model, nodes=12, index=True, probe_release=False)
    scanned = Run(policy, model, nodes=12, index=False, probe_release=False)
    for op in ops:
        indexed.apply(op)
        scanned.apply(op)
        assert indexed.decisions == scanned.decisions
    assert indexed.fleet.boards() == scanned.fleet.boards()


@pytest.mark.parametrize("policy", DETERMINISTIC, ids=DETERMINISTIC)
@pytest.mark.parametrize("seed", range(4), ids=lambda s: f"seed {s}")
def test_index_matches_the_scan_on_a_large_churning_fleet(policy: str, seed: int) -> None:
    """Enough boards of enough shapes in one pool (random GPUs unhealthy from the start)
    that the index walks its score groups instead of scanning its buckets."""
    rng = random.Random(seed)
    model = MODELS[seed % 2]
    nodes = 96
    runs = [
        Run(policy, model, nodes=nodes, index=i, probe_release=False, check_every_step=False)
        for i in (True, False)
    ]
    ops: list[tuple[str, Any]] = [
        ("health", (n, module_id, False))
        for n in range(nodes)
        for module_id in rng.sample(range(1, 9), rng.randint(0, 4))
    ]
    for _ in range(700):
        r = rng.random()
        spec = (
            rng.choice([1, 1, 1, 2, 2, 3, 4, 8]),
            rng.randrange(3),
            rng.random() < 0.05,
            rng.choice([0, 0, 0, 2, 3]),
        )
        if r < 0.55:
            ops.append(("place", spec))
        elif r < 0.9:
            ops.append(("release", rng.randrange(1000)))
        elif r < 0.94:
            ops.append(("health", (rng.randrange(nodes), rng.randint(1, 8), rng.random() < 0.5)))
        elif r < 0.97:
            ops.append(("cordon_node", (rng.randrange(nodes), rng.random() < 0.5)))
        elif r < 0.985:
            ops.append(("reserve", spec))
        else:
            ops.append(("retry", rng.randrange(1000)))
    for op in ops:
        for run in runs:
            run.apply(op)
        assert runs[0].decisions[-1:] == runs[1].decisions[-1:]
    assert runs[0].decisions == runs[1].decisions
    assert runs[0].fleet.boards() == runs[1].fleet.boards()
    check_fleet(runs[0].fleet, policy)
    placed = [d for d in runs[0].decisions if d[0] == "place" and isinstance(d[1], Placement)]
    assert len(placed) > 300


# -- the queue ------------------------------------------------------------------------

queue_op_st = st.one_of(
    st.tuples(st.just("push"), request_st),
    st.tuples(st.just("push"), request_st),
    st.tuples(st.just("schedule"), st.just(0)),
    st.tuples(st.just("schedule"), st.just(0)),
    st.tuples(st.just("release"), st.integers(0, 63)),
    st.tuples(st.just("remove"), st.integers(0, 63)),
    st.tuples(st.just("health"), st.tuples(st.integers(0, 3), st.integers(1, 8), st.booleans())),
    st.tuples(st.just("readd"), st.integers(0, 3)),
)


@pytest.mark.parametrize("policy", BOARD_POLICIES, ids=BOARD_POLICIES)
@PROPERTY
@given(
    ops=st.lists(queue_op_st, min_size=10, max_size=80),
    max_bypass=st.integers(1, 4),
)
def test_queue_places_each_pushed_request_at_most_once(
    policy: str, ops: list[tuple[str, Any]], max_bypass: int
) -> None:
    run = Run(policy, MODELS[0], probe_release=False)
    f = run.fleet
    q = Queue(max_bypass=max_bypass)
    pushed: list[RequestId] = []
    placed: set[RequestId] = set()
    gone: set[RequestId] = set()
    for kind, arg in ops:
        if kind == "push":
            request = run.new_request(arg)
            q.push(request)
            pushed.append(request.id)
        elif kind == "schedule":
            result = q.schedule(f)
            for p in result.placed:
                assert p.request_id in pushed
                assert p.request_id not in placed and p.request_id not in gone
                assert p.request_id not in q
                placed.add(p.request_id)
                run.live.append(p)
            for request, status in result.rejected:
                assert status.code is Code.NEVER_FITS
                assert request.id in pushed and request.id not in q
                gone.add(request.id)
            if result.reserved is not None:
                assert result.reserved.request_id in q
        elif kind == "remove":
            waiting = list(q)
            if waiting:
                rid = waiting[arg % len(waiting)].id
                assert q.remove(rid, f) is not None
                assert f.reservation(rid) is None
                gone.add(rid)
        else:
            run.apply((kind, arg))
        check_fleet(f, policy)
        holders = [rid for rid in pushed if f.reservation(rid) is not None]
        assert len(holders) <= 1
        assert all(rid in q for rid in holders)
        assert len(q) == len(pushed) - len(placed) - len(gone)
        assert {r.id for r in q} == set(pushed) - placed - gone

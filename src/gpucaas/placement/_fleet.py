"""The fleet: every board's state, and the index that makes each decision near constant time.

Boards are grouped into pools (same model, same labels). Inside a pool each board sits in
one bucket keyed by its *shape*: the mask of blocked GPUs (used, unhealthy, cordoned or
reserved) plus one bit for "has placements" (exclusive requests need an idle board). A
policy's score depends only on the model, the ask and that mask, so each pool precomputes,
per ask, the fitting shapes grouped by score (best first, each group one bitset of shape
keys) and the partition the policy takes on each shape. The pool also keeps the bitset of
its non-empty shapes. A decision ANDs that with the groups until one hits and takes the
lowest node index in the hit buckets: a few integer operations and a heap peek, whatever
the fleet size. (``random`` is the exception: it draws among all fitting boards by scan.)
``Fleet(..., index=False)`` runs the same policy as a plain scan over every board; it is the
baseline the benchmark and the tests compare with.

Pure and deterministic: no I/O, no clock; the only randomness is the ``random`` policy's
RNG, seeded at construction.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gpucaas.errors import InvalidRequest, MisuseError
from gpucaas.topology import BoardModel, GpuMask, ModuleId, PartitionId, SizeOutOfRange

from ._errors import DuplicateNode, UnknownNode
from ._policy import DEFAULT_POLICY, Policy, get_policy
from ._types import BoardState, Code, Placement, Request, RequestId, Status

_NOT_INDEXED = -1
_NO_SELECTOR: frozenset[tuple[str, str]] = frozenset()


def _key_bits(keys: Iterable[int]) -> int:
    """A set of shape keys as one int, bit ``k`` for key ``k`` (pool.nonempty's format)."""
    bits = 0
    for key in keys:
        bits |= 1 << key
    return bits


class _Bucket:
    """Boards of one shape: a set, plus a lazy min-heap of their node indices.

    The heap is built on the first :meth:`first` and dropped when stale entries pile up:
    most boards sit in shapes no request can use (full boards), whose heaps nobody reads.
    ``Fleet._update`` edits ``members`` and ``heap`` in place (it is the hot path).
    """

    __slots__ = ("heap", "members")

    def __init__(self) -> None:
        self.members: set[int] = set()
        self.heap: list[int] | None = None

    def first(self) -> int:
        heap, members = self.heap, self.members
        if heap is None:
            heap = self.heap = sorted(members)
        while heap[0] not in members:
            heapq.heappop(heap)
        return heap[0]


class _Board:
    __slots__ = (
        "claim",
        "cordoned",
        "cordoned_gpus",
        "free",
        "index",
        "key",
        "labels",
        "model",
        "name",
        "placements",
        "pool",
        "reserved",
        "unhealthy",
        "used",
    )

    def __init__(
        self, name: str, index: int, model: BoardModel, labels: Mapping[str, str], pool: _Pool
    ) -> None:
        self.name = name
        self.index = index
        self.model = model
        self.labels = labels
        self.pool = pool
        self.used = 0
        self.unhealthy = 0
        self.cordoned_gpus = 0
        self.reserved = 0
        self.cordoned = False
        self.claim: str | None = None
        self.placements: dict[RequestId, Placement] = {}
        self.key = _NOT_INDEXED
        self.free = 0

    @property
    def blocked(self) -> GpuMask:
        return self.used | self.unhealthy | self.cordoned_gpus | self.reserved


@dataclass(slots=True)
class _Plan:
    """Precomputed for one (model, ask): scores and choices by shape key, shapes by score."""

    score_by_key: list[int | None]
    choices: list[tuple[GpuMask, PartitionId | None] | None]
    """What the policy takes on a board of each shape (None where it does not fit)."""
    masks: list[tuple[int, int]]
    """Fitting shape keys as bit sets (see ``_key_bits``) with their score, best first."""
    idle_masks: list[tuple[int, int]]
    """The same, only shapes of idle boards (for exclusive requests)."""
    fitting: int = 0
    """Every fitting shape key, as one bit set (what a randomized policy draws from)."""
    idle_fitting: int = 0


class _Pool:
    __slots__ = ("boards", "buckets", "labels", "model", "nonempty", "plans")

    def __init__(self, model: BoardModel, labels: Mapping[str, str]) -> None:
        self.model = model
        self.labels = labels
        self.buckets: dict[int, _Bucket] = {}
        self.boards: dict[int, _Board] = {}
        self.plans: dict[int, _Plan | None] = {}
        self.nonempty = 0

    def matches(self, selector: Mapping[str, str]) -> bool:
        labels = self.labels
        return all(labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True, slots=True)
class _Reservation:
    board: _Board
    mask: GpuMask
    exclusive: bool


class Fleet:
    """Boards, their placements, and the decisions of one placement policy.

    Parameters:
        policy: a board policy or its name (see ``POLICIES``).
        seed: seeds the RNG of the ``random`` policy; same seed, same decisions.
        index: False runs every decision as a full scan over the boards (the baseline).
    """

    def __init__(
        self, policy: Policy | str = DEFAULT_POLICY, *, seed: int = 0, index: bool = True
    ) -> None:
        self.policy: Policy = get_policy(policy) if isinstance(policy, str) else policy
        self._slots: dict[int, int] = {id(self.policy): 0}
        """Plan-cache slot of each policy ``policy.select`` returned (0: the policy itself)."""
        self._rng = random.Random(seed)
        self._index = index
        self._boards: dict[str, _Board] = {}
        self._by_index: list[_Board | None] = []
        self._pools: dict[tuple[str, frozenset[tuple[str, str]]], _Pool] = {}
        self._pools_for: dict[frozenset[tuple[str, str]], list[_Pool]] = {}
        self._plans: dict[tuple[int, int], _Plan | None] = {}
        self._claims: dict[str, dict[int, _Board]] = {}
        self._reservations: dict[RequestId, _Reservation] = {}
        self._placed: dict[RequestId, _Board] = {}
        self._capacity = 0
        self._free = 0
        self._allocated = 0
        self._whole = 0
        """GPUs held by whole-board placements (what ``adaptive-fit`` selects its mode on)."""
        self._decisions = 0
        self._started: dict[RequestId, int] = {}
        """When each running placement started, in placement decisions (see reserve)."""

    # -- nodes -------------------------------------------------------------------------

    def add_node(
        self, name: str, model: BoardModel, labels: Mapping[str, str] | None = None
    ) -> None:
        """Add an empty, healthy board. Raises :class:`DuplicateNode`."""
        if name in self._boards:
            raise DuplicateNode(name)
        frozen = MappingProxyType(dict(labels or {}))
        pool_key = (model.name, frozenset(frozen.items()))
        pool = self._pools.get(pool_key)
        if pool is None:
            pool = self._pools[pool_key] = _Pool(model, frozen)
            self._pools_for.clear()
        board = _Board(name, len(self._by_index), model, frozen, pool)
        self._by_index.append(board)
        self._boards[name] = board
        pool.boards[board.index] = board
        self._capacity += model.gpu_count
        self._update(board)

    def remove_node(self, name: str) -> tuple[Placement, ...]:
        """Take a board out of the fleet; returns the placements that ran on it (now lost).

        Raises :class:`UnknownNode`.
        """
        board = self._board(name)
        lost = tuple(board.placements.values())
        for placement in lost:
            self.release(placement)
        for request_id in [r for r, res in self._reservations.items() if res.board is board]:
            self.cancel_reservation(request_id)
        board.cordoned = True
        self._update(board)
        self._free -= board.free
        board.free = 0
        self._capacity -= board.model.gpu_count
        del board.pool.boards[board.index]
        self._by_index[board.index] = None
        del self._boards[name]
        return lost

    def set_gpu_health(self, name: str, module_id: ModuleId | int, healthy: bool) -> None:
        """Mark a GPU healthy or not. A GPU in use stays allocated; once released it stays
        out of placement until healthy again. Raises :class:`UnknownNode`."""
        board = self._board(name)
        bit = self._gpu_bit(board, module_id)
        board.unhealthy = board.unhealthy & ~bit if healthy else board.unhealthy | bit
        self._update(board)

    def cordon_gpu(self, name: str, module_id: ModuleId | int, cordoned: bool = True) -> None:
        """Keep new placements off one GPU (running work is untouched)."""
        board = self._board(name)
        bit = self._gpu_bit(board, module_id)
        board.cordoned_gpus = board.cordoned_gpus | bit if cordoned else board.cordoned_gpus & ~bit
        self._update(board)

    def cordon_node(self, name: str, cordoned: bool = True) -> None:
        """Keep new placements off a whole board (running work is untouched)."""
        board = self._board(name)
        board.cordoned = cordoned
        self._update(board)

    # -- decisions ---------------------------------------------------------------------

    def place(self, request: Request) -> Placement | Status:
        """Place a request now, or say why not.

        A request holding a reservation (:meth:`reserve`) takes its held GPUs once they
        drained, or any other fit that turns up first (the hold is then let go).

        Returns the :class:`Placement` (already recorded), or a :class:`Status` with
        ``NO_FIT`` (try again after a release) or ``NEVER_FITS`` (reject: no board in this
        fleet can ever hold it). Placing a request id that is already placed is a
        :class:`MisuseError`.
        """
        if request.id in self._placed:
            raise MisuseError(f"request {request.id!r} is already placed; release it first")
        reservation = self._reservations.get(request.id)
        if reservation is not None:
            held = self._place_reserved(request, reservation)
            if held is not None:
                return held
        pools = self._eligible_pools(request.node_selector)
        policy = self.policy.select(self._allocated, self._whole)
        slot = self._slots.get(id(policy))
        if slot is None:
            slot = self._slots[id(policy)] = len(self._slots)
        # Plans are cached per (ask, policy slot); asks no board holds share key 0 (no plan).
        plan_key = (request.gpus if 0 <= request.gpus < 256 else 0) | slot << 8
        best: _Board | None = None
        if policy.randomized:
            best = (
                self._indexed_draw(request, pools, policy, plan_key)
                if self._index
                else self._drawn_choice(request, pools, policy)
            )
        elif self._index:
            best = self._indexed_choice(request, pools, policy, plan_key)
        else:
            best = self._scan_choice(request, pools, policy)
        if best is None:
            if request.id in self._reservations:
                board = self._reservations[request.id].board
                return Status(Code.NO_FIT, (f"waiting for reserved GPUs on {board.name} to drain",))
            return self._why_not(request, pools)
        if self._reservations and request.id in self._reservations:
            # It fits elsewhere before its held GPUs drained: let the hold go.
            self.cancel_reservation(request.id)
        choice = None
        if best.key != _NOT_INDEXED:
            plan = best.pool.plans.get(plan_key)
            if plan is not None:
                choice = plan.choices[best.key]
        if choice is None:
            choice = policy.choose(best.model, request.gpus, best.blocked)
        if choice is None:  # pragma: no cover - score and choose disagree: a policy bug
            raise MisuseError(f"policy {policy.name} scored {best.name} but chose nothing")
        mask, partition_id = choice
        return self._commit(best, request, mask, partition_id)

    def adopt(self, request: Request, node: str, mask: GpuMask) -> Placement:
        """Record a placement decided earlier (rebuilding the fleet after a restart).

        Unlike :meth:`place`, GPUs that went unhealthy or were cordoned since may be adopted:
        the workload already runs there. Raises :class:`UnknownNode`, and
        :class:`MisuseError` when the request is already placed or the GPUs are held by
        another placement (a double allocation the caller must not create).
        """
        board = self._board(node)
        if request.id in self._placed:
            raise MisuseError(f"request {request.id!r} is already placed; release it first")
        if not mask or mask & ~((1 << board.model.gpu_count) - 1):
            raise MisuseError(f"GPU mask {mask:#x} does not fit {board.name} ({board.model.name})")
        if mask & board.used:
            holders = sorted(str(p.request_id) for p in board.placements.values() if p.mask & mask)
            raise MisuseError(
                f"GPUs {mask:#x} on {board.name} are held by {', '.join(holders)}; "
                "refusing a double allocation"
            )
        if mask & board.reserved:
            raise MisuseError(f"GPUs {mask:#x} on {board.name} are held for a queued request")
        partition = board.model.partition_for_mask(mask)
        unhealthy, cordoned = board.unhealthy, board.cordoned_gpus
        board.unhealthy &= ~mask
        board.cordoned_gpus &= ~mask
        try:
            return self._commit(board, request, mask, partition.id if partition else None)
        finally:
            board.unhealthy, board.cordoned_gpus = unhealthy, cordoned
            self._update(board)

    def release(self, placement: Placement) -> bool:
        """Free a placement's GPUs. Idempotent: False when it was not (or no longer) placed."""
        rid = placement.request_id
        board = self._placed.get(rid)
        if board is None:
            return False
        current = board.placements.get(rid)
        if current is not placement and current != placement:
            # A stale handle: the id was released and placed again since.
            return False
        del self._placed[rid]
        del self._started[rid]
        del board.placements[rid]
        board.used &= ~placement.mask
        self._allocated -= placement.gpus
        if placement.gpus == board.model.gpu_count:
            self._whole -= placement.gpus
        if board.claim is not None and not any(p.exclusive for p in board.placements.values()):
            self._claims[board.claim].pop(board.index, None)
            board.claim = None
        self._update(board)
        return True

    def reserve(self, request: Request) -> Placement | Status:
        """Hold GPUs for a request that keeps losing to younger ones (starvation guard).

        Picks the partition whose hold should idle the fewest GPU-time while it drains
        (:meth:`_hold_waste`: run times are heavy-tailed, so a placement's age, counted in
        placement decisions, estimates how long it will go on). Ties: fewest running GPUs
        to drain, lowest node index, lowest partition id. An exclusive request holds the
        whole board. Held GPUs take no new work; :meth:`place` for this request then takes
        exactly them as soon as they are free. Returns the planned :class:`Placement` (not
        yet running), or a
        ``NEVER_FITS``/``NO_FIT`` status.
        """
        if request.id in self._reservations:
            res = self._reservations[request.id]
            return self._planned(request, res.board, res.mask)
        pools = self._eligible_pools(request.node_selector)
        best: tuple[int, int, int, int, _Board, GpuMask] | None = None
        for board in self._candidates(request, pools, include_busy=True):
            model = board.model
            try:
                size = model.size_for(request.gpus)
            except SizeOutOfRange:
                continue
            unusable = board.unhealthy | board.cordoned_gpus | board.reserved
            if request.exclusive:
                options = (
                    []
                    if unusable & model.full_mask == model.full_mask
                    else [(0, model.full_mask & ~unusable)]
                )
                if options and model.best_partition(size, unusable) is None:
                    options = []
            else:
                options = [
                    (int(p.id), p.mask)
                    for p in model.partitions
                    if p.size == size and not p.mask & unusable
                ]
            for partition_id, mask in options:
                running = (board.used & mask).bit_count()
                waste = self._hold_waste(board, mask)
                key = (waste, running, board.index, partition_id, board, mask)
                if best is None or key[:4] < best[:4]:
                    best = key
        if best is None:
            return self._why_not(request, pools)
        board, mask = best[4], best[5]
        self._reservations[request.id] = _Reservation(board, mask, request.exclusive)
        board.reserved |= mask
        self._update(board)
        return self._planned(request, board, mask)

    def _hold_waste(self, board: _Board, mask: GpuMask) -> int:
        """Expected GPU-time a hold on ``mask`` idles before it drained.

        With heavy-tailed run times a placement's remaining time is estimated by its age
        (in placement decisions). The hold drains when its oldest placement ends; until
        then a free GPU idles all along and a GPU of a younger placement idles for the
        difference in age.
        """
        decisions, started = self._decisions, self._started
        overlapping = [
            (p.mask & mask, decisions - started[p.request_id])
            for p in board.placements.values()
            if p.mask & mask
        ]
        if not overlapping:
            return 0
        drain = max(age for _, age in overlapping)
        covered = 0
        idle = 0
        for overlap, age in overlapping:
            covered |= overlap
            idle += overlap.bit_count() * (drain - age)
        return idle + (mask & ~covered).bit_count() * drain

    def cancel_reservation(self, request_id: RequestId) -> bool:
        """Give held GPUs back. Idempotent: False when there was no reservation."""
        res = self._reservations.pop(request_id, None)
        if res is None:
            return False
        res.board.reserved &= ~res.mask
        self._update(res.board)
        return True

    # -- views -------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """GPUs on every board in the fleet."""
        return self._capacity

    @property
    def free_gpus(self) -> int:
        """GPUs that are healthy, not cordoned and not allocated (reserved ones included)."""
        return self._free

    @property
    def allocated_gpus(self) -> int:
        """GPUs granted to running placements."""
        return self._allocated

    @property
    def monotone(self) -> bool:
        """True when a failed ask of N GPUs implies every larger ask fails too (all board
        models nested, or count-only); the queue then skips larger asks in a pass."""
        return not self.policy.partition_aware or all(p.model.nested for p in self._pools.values())

    def __len__(self) -> int:
        return len(self._boards)

    def __contains__(self, name: object) -> bool:
        return name in self._boards

    def placements(self) -> Iterator[Placement]:
        for board in self._boards.values():
            yield from board.placements.values()

    def reservation(self, request_id: RequestId) -> Placement | None:
        res = self._reservations.get(request_id)
        return None if res is None else self._planned_id(request_id, res.board, res.mask)

    def board(self, name: str) -> BoardState:
        """A snapshot of one board. Raises :class:`UnknownNode`."""
        return self._snapshot(self._board(name))

    def boards(self) -> list[BoardState]:
        """Snapshots of every board, by node index."""
        return [self._snapshot(b) for b in self._by_index if b is not None]

    # -- internals ---------------------------------------------------------------------

    def _board(self, name: str) -> _Board:
        try:
            return self._boards[name]
        except KeyError:
            raise UnknownNode(name) from None

    @staticmethod
    def _gpu_bit(board: _Board, module_id: int) -> int:
        if not 1 <= module_id <= board.model.gpu_count:
            raise InvalidRequest(
                f"module ID {module_id} is out of range for board {board.name} "
                f"({board.model.name} has module IDs 1..{board.model.gpu_count})"
            )
        return 1 << (module_id - 1)

    def _snapshot(self, board: _Board) -> BoardState:
        return BoardState(
            name=board.name,
            index=board.index,
            model=board.model.name,
            labels=board.labels,
            used=board.used,
            unhealthy=board.unhealthy,
            cordoned_gpus=board.cordoned_gpus,
            reserved=board.reserved,
            cordoned=board.cordoned,
            placements=tuple(board.placements.values()),
        )

    def _eligible_pools(self, selector: Mapping[str, str]) -> list[_Pool]:
        key = frozenset(selector.items()) if selector else _NO_SELECTOR
        pools = self._pools_for.get(key)
        if pools is None:
            pools = self._pools_for[key] = [p for p in self._pools.values() if p.matches(selector)]
        return pools

    def _plan(self, model: BoardModel, gpus: int, policy: Policy, plan_key: int) -> _Plan | None:
        cache_key = (id(model), plan_key)
        try:
            return self._plans[cache_key]
        except KeyError:
            pass
        plan: _Plan | None = None
        try:
            full = model.full_mask
            busy_bit = full + 1
            scores: list[int | None] = [None] * (2 * busy_bit)
            choices: list[tuple[GpuMask, PartitionId | None] | None] = [None] * (2 * busy_bit)
            by_score: dict[int, list[int]] = {}
            for blocked in range(busy_bit):
                score = policy.score(model, gpus, blocked)
                if score is None:
                    continue
                choice = policy.choose(model, gpus, blocked)
                for key in (blocked, blocked | busy_bit):
                    scores[key] = score
                    choices[key] = choice
                    by_score.setdefault(score, []).append(key)
            order = sorted(by_score, reverse=True)
            groups = [by_score[s] for s in order]
            idle = [[k for k in g if not k & busy_bit] for g in groups]
            masks = [(_key_bits(g), s) for g, s in zip(groups, order, strict=True)]
            idle_masks = [(_key_bits(g), s) for g, s in zip(idle, order, strict=True) if g]
            plan = _Plan(
                scores,
                choices,
                masks,
                idle_masks,
                _key_bits(k for g in groups for k in g),
                _key_bits(k for g in idle for k in g),
            )
        except SizeOutOfRange:
            plan = None
        self._plans[cache_key] = plan
        return plan

    def _candidates(
        self, request: Request, pools: Iterable[_Pool], *, include_busy: bool = False
    ) -> Iterator[_Board]:
        """Boards the request may use at all (not its score): open, or claimed by its tenant
        when exclusive; exclusive requests need an idle board (``include_busy`` lifts that
        for reservations, which wait for the board to drain)."""
        for pool in pools:
            for board in pool.boards.values():
                if board.cordoned or board.claim is not None:
                    continue
                busy = board.placements or board.reserved
                if request.exclusive and busy and not include_busy:
                    continue
                yield board
        if request.exclusive:
            for board in self._claims.get(request.tenant, {}).values():
                if not board.cordoned and board.pool in pools:
                    yield board

    def _score(self, board: _Board, request: Request, policy: Policy) -> int | None:
        try:
            return policy.score(board.model, request.gpus, board.blocked)
        except SizeOutOfRange:
            return None

    def _indexed_draw(
        self, request: Request, pools: list[_Pool], policy: Policy, plan_key: int
    ) -> _Board | None:
        """:meth:`_drawn_choice` from the index: the fitting boards are the members of the
        buckets of fitting shapes, read as sets (C speed) instead of scored one by one.
        Same odds as the scan, not the same draws (set order is not node order)."""
        found: list[tuple[_Pool, set[int]]] = []
        total = 0
        for pool in pools:
            if not pool.nonempty:
                continue
            try:
                plan = pool.plans[plan_key]
            except KeyError:
                plan = pool.plans[plan_key] = self._plan(pool.model, request.gpus, policy, plan_key)
            if plan is None:
                continue
            hit = pool.nonempty & (plan.idle_fitting if request.exclusive else plan.fitting)
            while hit:
                low = hit & -hit
                members = pool.buckets[low.bit_length() - 1].members
                found.append((pool, members))
                total += len(members)
                hit ^= low
        claimed: list[_Board] = []
        if request.exclusive:
            for board in self._claims.get(request.tenant, {}).values():
                if (
                    not board.cordoned
                    and board.pool in pools
                    and self._score(board, request, policy) is not None
                ):
                    claimed.append(board)
            total += len(claimed)
        if not total:
            return None
        ranks = policy.node_ranks
        if ranks:
            by_index: list[_Board] = [
                pool.boards[i]
                for pool, members in found
                for i in heapq.nsmallest(len(ranks), members)
            ]
            top = heapq.nsmallest(len(ranks), by_index + claimed, key=lambda b: b.index)
            return self._pick_ranked(top, ranks)
        draw = self._rng.randrange(total)
        for pool, members in found:
            if draw < len(members):
                return pool.boards[next(itertools.islice(members, draw, None))]
            draw -= len(members)
        return claimed[draw]

    def _pick_ranked(self, top: list[_Board], ranks: tuple[float, ...]) -> _Board:
        """The k-th of ``top`` (fitting boards by node index) with chance ``ranks[k]``."""
        weights = ranks[: len(top)]
        draw = self._rng.random() * sum(weights)
        for weight, board in zip(weights, top, strict=False):
            draw -= weight
            if draw < 0:
                return board
        return top[-1]

    def _drawn_choice(self, request: Request, pools: list[_Pool], policy: Policy) -> _Board | None:
        """A randomized policy's board: uniform among the fitting ones, or the k-th best
        (by score, then node index) with the chances of ``policy.node_ranks``."""
        ranks = policy.node_ranks
        if not ranks:
            candidates = [
                b
                for b in self._candidates(request, pools)
                if self._score(b, request, policy) is not None
            ]
            return candidates[self._rng.randrange(len(candidates))] if candidates else None
        fitting = [
            b
            for b in self._candidates(request, pools)
            if self._score(b, request, policy) is not None
        ]
        if not fitting:
            return None
        return self._pick_ranked(heapq.nsmallest(len(ranks), fitting, key=lambda b: b.index), ranks)

    def _scan_choice(self, request: Request, pools: list[_Pool], policy: Policy) -> _Board | None:
        best: _Board | None = None
        best_score = 0
        for board in self._candidates(request, pools):
            score = self._score(board, request, policy)
            if score is not None and (
                best is None
                or score > best_score
                or (score == best_score and board.index < best.index)
            ):
                best, best_score = board, score
        return best

    def _indexed_choice(
        self, request: Request, pools: list[_Pool], policy: Policy, plan_key: int
    ) -> _Board | None:
        best: _Board | None = None
        best_score = 0
        gpus = request.gpus
        for pool in pools:
            nonempty = pool.nonempty
            if not nonempty:
                continue
            try:
                plan = pool.plans[plan_key]
            except KeyError:
                plan = pool.plans[plan_key] = self._plan(pool.model, gpus, policy, plan_key)
            if plan is None:
                continue
            # The first score group (best first) with a non-empty bucket; its lowest node.
            for group_keys, group_score in plan.idle_masks if request.exclusive else plan.masks:
                hit = nonempty & group_keys
                if hit:
                    score = group_score
                    break
            else:
                continue
            buckets = pool.buckets
            if not hit & (hit - 1):  # one shape: the common case
                found = buckets[hit.bit_length() - 1].first()
            else:
                found = -1
                while hit:
                    low = hit & -hit
                    first = buckets[low.bit_length() - 1].first()
                    if found < 0 or first < found:
                        found = first
                    hit ^= low
            board = pool.boards[found]
            if (
                best is None
                or score > best_score
                or (score == best_score and board.index < best.index)
            ):
                best, best_score = board, score
        if request.exclusive:
            for board in self._claims.get(request.tenant, {}).values():
                if board.cordoned or board.pool not in pools:
                    continue
                s = self._score(board, request, policy)
                if s is not None and (
                    best is None or s > best_score or (s == best_score and board.index < best.index)
                ):
                    best, best_score = board, s
        return best

    def _why_not(self, request: Request, pools: list[_Pool]) -> Status:
        if not pools:
            selector = ", ".join(f"{k}={v}" for k, v in request.node_selector.items())
            return Status(
                Code.NEVER_FITS,
                (f"no node matches the node selector {selector}",)
                if selector
                else ("the fleet has no nodes",),
            )
        limits = []
        for pool in pools:
            model = pool.model
            limit = model.gpu_count if not self.policy.partition_aware else max(model.sizes)
            if request.gpus <= limit and request.gpus >= 1:
                return Status(
                    Code.NO_FIT, (f"no board has {request.gpus} free GPUs in one partition now",)
                )
            limits.append(f"{model.name} holds at most {limit}")
        return Status(Code.NEVER_FITS, (f"{request.gpus} GPUs asked; {'; '.join(limits)}",))

    def _commit(
        self, board: _Board, request: Request, mask: GpuMask, partition_id: PartitionId | None
    ) -> Placement:
        if mask & (board.used | board.unhealthy | board.cordoned_gpus | board.reserved):
            raise MisuseError(f"GPUs {mask:#x} on {board.name} are not free")  # pragma: no cover
        gpus = mask.bit_count()
        rid = request.id
        placement = Placement(
            rid, board.name, gpus, mask, partition_id, request.tenant, request.exclusive
        )
        board.used |= mask
        board.placements[rid] = placement
        self._placed[rid] = board
        self._decisions += 1
        self._started[rid] = self._decisions
        self._allocated += gpus
        if gpus == board.model.gpu_count:
            self._whole += gpus
        if request.exclusive and board.claim is None:
            board.claim = request.tenant
            self._claims.setdefault(request.tenant, {})[board.index] = board
        self._update(board)
        return placement

    def _place_reserved(self, request: Request, res: _Reservation) -> Placement | None:
        """Place on the held GPUs once they drained; None while they have not."""
        board = res.board
        if (
            board.used & res.mask
            or (res.exclusive and board.placements)
            or (board.claim is not None and board.claim != request.tenant)
        ):
            return None
        # Only the hold itself is lifted: held GPUs that went unhealthy or were cordoned
        # stay blocked.
        blocked = board.used | board.unhealthy | board.cordoned_gpus | (board.reserved & ~res.mask)
        held = board.model.partition_for_mask(res.mask)
        choice: tuple[GpuMask, PartitionId | None] | None
        if (
            self.policy.partition_aware
            and not res.exclusive
            and held is not None
            and not held.mask & blocked
        ):
            choice = held.mask, held.id  # exactly the partition that was held for it
        else:
            choice = self.policy.choose(board.model, request.gpus, blocked)
        self.cancel_reservation(request.id)
        if choice is None:
            # The held GPUs went unhealthy or were cordoned: the queue may reserve again.
            return None
        return self._commit(board, request, choice[0], choice[1])

    def _planned(self, request: Request, board: _Board, mask: GpuMask) -> Placement:
        return self._planned_id(request.id, board, mask, request)

    @staticmethod
    def _planned_id(
        request_id: RequestId, board: _Board, mask: GpuMask, request: Request | None = None
    ) -> Placement:
        partition = board.model.partition_for_mask(mask)
        return Placement(
            request_id=request_id,
            node=board.name,
            gpus=mask.bit_count(),
            mask=mask,
            partition_id=None if partition is None else partition.id,
            tenant="" if request is None else request.tenant,
            exclusive=False if request is None else request.exclusive,
        )

    def _update(self, board: _Board) -> None:
        """Re-file a board under its current shape and refresh the free-GPU count."""
        full = board.model.full_mask
        bad = board.used | board.unhealthy | board.cordoned_gpus
        reserved = board.reserved
        if board.cordoned:
            free, key = 0, _NOT_INDEXED
        else:
            free = (full & ~bad).bit_count()
            if board.claim is not None:
                key = _NOT_INDEXED
            elif board.placements or reserved:
                key = bad | reserved | (full + 1)
            else:
                key = bad | reserved
        self._free += free - board.free
        board.free = free
        old = board.key
        if key == old:
            return
        buckets = board.pool.buckets
        index = board.index
        if old != _NOT_INDEXED:
            left = buckets[old]
            members = left.members
            members.discard(index)
            if not members:
                del buckets[old]
                board.pool.nonempty ^= 1 << old
            elif left.heap is not None and len(left.heap) > 2 * len(members) + 16:
                left.heap = None  # rebuilt by the next first()
        if key != _NOT_INDEXED:
            bucket = buckets.get(key)
            if bucket is None:
                bucket = buckets[key] = _Bucket()
                board.pool.nonempty |= 1 << key
            bucket.members.add(index)
            if bucket.heap is not None:
                heapq.heappush(bucket.heap, index)
        board.key = key

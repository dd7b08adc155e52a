"""The scheduler loop: queued containers → placement → reservation in the store → backend.

One pass (:meth:`Scheduler.run_once`):

1. take containers queued since the last pass into the placement queue (arrival order);
2. let :class:`placement.Queue` place what fits (FIFO + backfill + starvation guard);
3. for each placement, record the reservation in the store *first* (queued → placing),
   then tell the backend (→ starting); a crash in between leaves a reservation the next
   start re-drives, never a workload the store does not know;
4. follow what holds GPUs: backend phase → state; ended → release the partition and the
   GPUs; stop requests → backend stop.

At start (:meth:`recover`) the fleet is rebuilt from the backend's boards, the store's
cordons and the containers that hold GPUs (level-triggered: every one is asked of the
backend again; whatever it cannot find is marked ``lost`` with a reason).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import RowMapping

from gpucaas._wire import NfsMount, State
from gpucaas.errors import GpucaasError, MisuseError
from gpucaas.placement import DEFAULT_POLICY, Fleet, Placement, Queue, Request
from gpucaas.topology import get_model, mask_of

from ._backend import Backend, BoardInfo, Phase, Workload, WorkloadStatus
from ._store import Reservation, Store

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 10.0
LEASE = "scheduler"
LEASE_TTL_S = 10.0
"""A leader that stops renewing (crashed, partitioned) is replaced after this long."""
STOP_CHECK_S = 0.5
"""How often the loop re-reads stop requests made by other replicas (its own wake it)."""
MIN_PASS_GAP_S = 0.025
BOARDS_REFRESH_S = 1.0
"""How often the backend's boards (nodes: Ready, cordoned, GPU health) are re-read."""
FOLLOW_RUNNING_S = 0.5
"""How often running workloads are asked for their status (starting ones: every pass)."""
START_WORKERS = 8
"""Workloads started at once: a start waits on the backend (a supervisor's process start, a pod
creation), so starts run beside the loop, never under its lock."""


def new_workload(
    container_id: str,
    tenant: str,
    image: str,
    spec: Mapping[str, Any],
    *,
    gpus: int,
    max_runtime_s: int | None,
    board: str | None = None,
    partition_id: int | None = None,
    module_ids: Sequence[int] = (),
) -> Workload:
    """A workload from a container's request (``spec``: command, args, env, nfs, labels)."""
    return Workload(
        container_id=container_id,
        tenant=tenant,
        image=image,
        command=tuple(spec.get("command", ())),
        args=tuple(spec.get("args", ())),
        env=dict(spec.get("env", {})),
        nfs=tuple(NfsMount(**m) for m in spec.get("nfs", ())),
        labels=dict(spec.get("labels", {})),
        max_runtime_s=max_runtime_s,
        gpus=gpus,
        board=board,
        partition_id=partition_id,
        module_ids=tuple(module_ids),
    )


def workload_of(row: RowMapping) -> Workload:
    """The workload of a stored container."""
    return new_workload(
        row["id"],
        row["tenant"],
        row["image"],
        row["spec"],
        gpus=row["gpus"],
        max_runtime_s=row["max_runtime_s"],
        board=row["board"],
        partition_id=row["partition_id"],
        module_ids=row["module_ids"] or (),
    )


@dataclass
class _Held:
    seq: int
    workload: Workload
    placement: Placement
    state: State
    stopping: str | None = None
    """Why it is being stopped (Stopped, Drained), once a stop was asked."""
    stop_sent: bool = False
    starting: Future[float] | None = None
    """The backend start in flight; its result is when it began."""


@dataclass(frozen=True)
class Retention:
    """How long finished containers stay in the store (``gpucaas up --retain-finished``,
    ``--retain-finished-days``); the leader purges them every ``every_s`` seconds, in
    batches, so one pass never holds the store long. None: no bound of that kind."""

    keep_per_tenant: int | None = 1000
    max_age_s: float | None = 7 * 86400.0
    every_s: float = 60.0
    batch: int = 500


class Scheduler:
    """Parameters:
    store: the store.
    backend: what runs the workloads.
    policy: the placement policy's name (default best-fit).
    grace_s: seconds between SIGTERM and SIGKILL on stop.
    retention: when finished containers are purged from the store (None: never).
    on_purged: told the IDs of purged containers (the local backend removes their files).
    """

    def __init__(
        self,
        store: Store,
        backend: Backend,
        *,
        policy: str = DEFAULT_POLICY,
        grace_s: float = DEFAULT_GRACE_S,
        holder: str = "local",
        lease_ttl_s: float = LEASE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        retention: Retention | None = None,
        on_purged: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.retention = retention
        self._on_purged = on_purged
        self._last_purge = -float("inf")
        self.store = store
        self.backend = backend
        self.policy = policy
        self.grace_s = grace_s
        self.holder = holder
        self.lease_ttl_s = lease_ttl_s
        self.leading = False
        """Whether this replica holds the scheduler lease (only the leader places)."""
        self._renewed = -float("inf")
        self._clock = clock
        self.fleet = Fleet(policy)
        self.queue = Queue()
        self.lock = threading.RLock()
        """Held while a pass changes the fleet; readers (fleet view) take it too."""
        self._wake = threading.Event()
        self._stops_asked = False
        self._last_follow = -float("inf")
        self._starter = ThreadPoolExecutor(START_WORKERS, thread_name_prefix="start")
        self._last_seq = 0
        self._held: dict[int, _Held] = {}
        self._last_stop_check = -float("inf")
        self._last_boards = -float("inf")
        self._boards: dict[str, BoardInfo] = {}
        self._admin_cordons: set[tuple[str, int]] = set()
        self._fleet_models: frozenset[str] = frozenset()
        self._last_stop_wall = 0.0
        self.passes = 0

    # -- start -----------------------------------------------------------------------------

    def lead(self) -> bool:
        """Take or renew the scheduler lease; on taking it, rebuild state (:meth:`recover`).

        Several replicas may share a store: only the one holding the lease places and
        follows workloads; the others serve the API and wait. Returns whether this one leads.
        """
        now = self._clock()
        if self.leading and now - self._renewed < self.lease_ttl_s / 3:
            return True
        got = self.store.acquire_lease(LEASE, self.holder, self.lease_ttl_s)
        if got:
            self._renewed = now
            if not self.leading:
                log.info("%s leads the scheduler", self.holder)
                self.recover()
                self.leading = True
        elif self.leading:
            log.warning("%s lost the scheduler lease; standing by", self.holder)
            self.leading = False
        return self.leading

    def resign(self) -> None:
        if self.leading:
            self.store.release_lease(LEASE, self.holder)
            self.leading = False

    def recover(self) -> None:
        """Rebuild the fleet and the queue from the backend and the store."""
        with self.lock:
            self.fleet = Fleet(self.policy)
            self.queue = Queue()
            self._held.clear()
            self._last_seq = 0
            self._boards = {}
            self._admin_cordons = set(self.store.cordons())
            self._apply_boards(self.backend.boards())
            adopted: list[Workload] = []
            for row in self.store.holding():
                held = self._adopt(row)
                if held is not None:
                    adopted.append(held.workload)
            self.backend.sync(adopted)
            for seq, held in list(self._held.items()):
                self._follow(seq, held, recovering=True)
            self._pull_queued()
            log.info(
                "recovered: %d containers hold GPUs, %d queued", len(self._held), len(self.queue)
            )

    def _adopt(self, row: RowMapping) -> _Held | None:
        w = workload_of(row)
        seq = int(row["seq"])
        request = Request(seq, row["gpus_granted"], tenant=row["tenant"])
        try:
            if w.board is None or not w.module_ids:
                raise MisuseError("no board or GPUs recorded")
            placement = self.fleet.adopt(request, w.board, mask_of(w.module_ids))
        except (GpucaasError, KeyError) as exc:
            self.store.transition(
                seq, State.LOST, "NotAdopted", f"could not re-adopt after a restart: {exc}"
            )
            return None
        stop = (row["stop_reason"] or "Stopped") if row["stop_requested"] else None
        held = _Held(seq, w, placement, State(row["state"]), stop)
        self._held[seq] = held
        return held

    def _apply_boards(self, boards: Sequence[BoardInfo]) -> None:
        """Make the fleet match the backend's boards and the operator's cordons (a diff)."""
        seen = set()
        for board in boards:
            seen.add(board.name)
            old = self._boards.get(board.name)
            if old == board:
                continue  # unchanged since the last refresh: nothing to re-file
            if old is None:
                try:
                    self.fleet.add_node(board.name, get_model(board.model), board.labels)
                except GpucaasError as exc:
                    log.warning("ignoring board %s: %s", board.name, exc)
                    continue
            elif (old.model, dict(old.labels)) != (board.model, dict(board.labels)):
                # The fleet files a board under the labels and model it joined with.
                log.warning(
                    "board %s changed its labels or model; placement uses the new ones after a "
                    "restart of the control plane",
                    board.name,
                )
            gpus = get_model(board.model).gpu_count
            for module_id in range(1, gpus + 1):
                admin = (board.name, module_id) in self._admin_cordons
                self.fleet.set_gpu_health(board.name, module_id, module_id not in board.unhealthy)
                self.fleet.cordon_gpu(board.name, module_id, admin)
            closed = board.cordoned or (board.name, 0) in self._admin_cordons
            self.fleet.cordon_node(board.name, closed)
            if old is not None and old.ready and not board.ready:
                for held in self._held.values():
                    if held.workload.board == board.name:
                        self.store.note(
                            held.seq, "NodeNotReady", f"{board.name} is not Ready; still running?"
                        )
            self._boards[board.name] = board
        for name in set(self._boards) - seen:
            del self._boards[name]
            for placement in self.fleet.remove_node(name):
                gone = self._held.pop(int(placement.request_id), None)
                if gone is not None:
                    self.store.transition(
                        gone.seq, State.LOST, "NodeRemoved", f"board {name} left the fleet"
                    )
        self._fleet_models = frozenset(b.model for b in self._boards.values())

    # -- the loop --------------------------------------------------------------------------

    def wake(self, *, stops: bool = False) -> None:
        """Run a pass soon: a container was submitted, or (``stops``) asked to stop."""
        if stops:
            self._stops_asked = True
        self._wake.set()

    def close(self) -> None:
        """Wait for starts in flight (call after the run loop ended)."""
        self._starter.shutdown(wait=True)

    def run(self, stop: threading.Event, *, idle_s: float = 0.5, busy_s: float = 0.05) -> None:
        while not stop.is_set():
            began = self._clock()
            try:
                busy = self.run_once() if self.lead() else False
            except GpucaasError as exc:
                log.error("scheduler pass failed: %s", exc)
                busy = False
            except Exception:  # a bug must not stop scheduling for every tenant
                log.exception("scheduler pass crashed")
                busy = False
            if self.leading:
                self._purge_when_due()
            self._wake.wait(busy_s if busy else idle_s)
            self._wake.clear()
            # Submits wake the loop; under a burst, one pass per MIN_PASS_GAP_S takes them
            # all instead of one pass (and its queries) per request.
            rest = MIN_PASS_GAP_S - (self._clock() - began)
            if rest > 0:
                stop.wait(rest)

    def _purge_when_due(self) -> None:
        r = self.retention
        if r is None or self._clock() - self._last_purge < r.every_s:
            return
        self._last_purge = self._clock()
        try:
            self.purge()
        except GpucaasError as exc:
            log.error("purging finished containers failed: %s", exc)

    def purge(self) -> list[str]:
        """Purge finished containers past :attr:`retention` now (one batch); returns their
        IDs. Their files go too, through ``on_purged``."""
        r = self.retention
        if r is None:
            return []
        older = None if r.max_age_s is None else time.time() - r.max_age_s
        ids = self.store.purge_finished(
            keep_per_tenant=r.keep_per_tenant, older_than=older, batch=r.batch
        )
        if ids:
            log.info("purged %d finished containers past retention", len(ids))
            if self._on_purged is not None:
                self._on_purged(ids)
        return ids

    def run_once(self) -> bool:
        """One pass; True while something is on its way (starting, stopping)."""
        with self.lock:
            self.passes += 1
            now = self._clock()
            if now - self._last_boards >= BOARDS_REFRESH_S:
                self._last_boards = now
                self._apply_boards(self.backend.boards())
            self._pull_queued()
            if self._stops_asked or now - self._last_stop_check >= STOP_CHECK_S:
                self._stops_asked = False
                self._read_stops(since=self._last_stop_wall)
                self._last_stop_check = now
            self._schedule()
            follow_running = now - self._last_follow >= FOLLOW_RUNNING_S
            if follow_running:
                self._last_follow = now
            busy = False
            for seq, held in list(self._held.items()):
                on_its_way = held.state is not State.RUNNING or held.stopping is not None
                if on_its_way or follow_running:
                    self._follow(seq, held)
                busy = busy or on_its_way
            return busy

    def _pull_queued(self) -> None:
        while True:
            rows = self.store.queued_after(self._last_seq)
            if not rows:
                return
            for row in rows:
                seq = int(row["seq"])
                self._last_seq = max(self._last_seq, seq)
                if seq in self.queue or seq in self._held:
                    continue
                self.queue.push(Request(seq, row["gpus_granted"], tenant=row["tenant"]))

    def _read_stops(self, since: float) -> None:
        """Apply stops asked since ``since`` (wall clock; a margin covers late commits)."""
        started = time.time()
        for seq, state, stop_reason in self.store.stop_changes(since - 5.0):
            if seq in self.queue and state != State.QUEUED.value:
                self.queue.remove(seq, self.fleet)
            elif seq in self._held and stop_reason is not None:
                self._held[seq].stopping = stop_reason
        self._last_stop_wall = started

    def _schedule(self) -> None:
        if not self.queue:
            return
        result = self.queue.schedule(self.fleet)
        for placement in result.placed:
            self._start(placement)
        for request, status in result.rejected:
            seq = int(request.id)
            self.store.transition(
                seq, State.FAILED, "NeverFits", f"no board in this fleet can ever hold it: {status}"
            )

    def _start(self, placement: Placement) -> None:
        seq = int(placement.request_id)
        assert placement.node is not None
        where = Reservation(
            board=placement.node,
            partition_id=placement.partition_id,
            module_ids=tuple(int(m) for m in placement.module_ids),
            gpus_granted=placement.gpus,
        )
        row = self.store.reserve(seq, where)
        if row is None:  # stopped while queued
            self.fleet.release(placement)
            return
        held = _Held(seq, workload_of(row), placement, State.PLACING)
        self._held[seq] = held
        self._drive_start(held)

    def _drive_start(self, held: _Held) -> None:
        held.starting = self._starter.submit(self._start_workload, held.workload)

    def _start_workload(self, workload: Workload) -> float:
        began = time.time()
        self.backend.start(workload)
        return began

    def _collect_start(self, held: _Held) -> bool:
        """Apply a finished start; False while it is still in flight."""
        future = held.starting
        if future is None:
            return True
        if not future.done():
            return False
        held.starting = None
        try:
            began = future.result()
        except GpucaasError as exc:
            self._end(held, State.FAILED, "StartFailed", str(exc))
            return False
        except Exception as exc:  # a backend bug: fail this container, keep scheduling
            log.exception("start of %s crashed", held.workload.container_id)
            self._end(held, State.FAILED, "StartFailed", f"internal error: {exc!r}")
            return False
        self._set(held, State.STARTING, "Started", f"on {held.workload.board}", at=began)
        return True

    def _follow(self, seq: int, held: _Held, *, recovering: bool = False) -> None:
        if not self._collect_start(held):
            return
        try:
            status = self.backend.status(held.workload)
        except GpucaasError as exc:
            log.warning("status of %s failed: %s", held.workload.container_id, exc)
            return
        if status.phase is Phase.ABSENT:
            if held.stopping is not None and held.state is not State.PLACING:
                # Stopped, and the backend already removed it (a deleted pod).
                self._end(held, State.STOPPED, held.stopping, "")
            elif held.state is State.PLACING:
                if held.stopping is not None:
                    self._end(held, State.STOPPED, held.stopping, "stopped before it started")
                else:
                    self._drive_start(held)  # reserved before a crash, never started
            else:
                why = "after a restart" if recovering else "any more"
                self._end(held, State.LOST, "NotFound", f"the backend has no such workload {why}")
            return
        if status.phase in (Phase.STARTING, Phase.RUNNING):
            if held.stopping is not None and not held.stop_sent:
                self.backend.stop(held.workload, self.grace_s)
                held.stop_sent = True
            if status.phase is Phase.RUNNING and held.state is not State.RUNNING:
                self._set(held, State.RUNNING, "Running", "", at=status.started_at)
            elif held.state is State.PLACING:
                self._set(held, State.STARTING, "Started", "")
            return
        if status.phase is Phase.EXITED:
            self._ended(held, status)
        else:
            self._end(held, State.LOST, "Lost", status.reason or "the backend lost it")

    def _ended(self, held: _Held, status: WorkloadStatus) -> None:
        code = status.exit_code
        if status.reason == "stopped":
            state, reason = State.STOPPED, held.stopping or "Stopped"
        elif status.reason == "deadline":
            state, reason = State.FAILED, "DeadlineExceeded"
        elif status.reason == "spawn-failed":
            state, reason = State.FAILED, "StartFailed"
        elif code == 0:
            state, reason = State.SUCCEEDED, "Completed"
        else:
            state, reason = State.FAILED, "Error"
        if held.state is not State.RUNNING and status.started_at is not None and code is not None:
            self._set(held, State.RUNNING, "Running", "", at=status.started_at)
        message = status.message or (f"exit code {code}" if code is not None else "")
        self._end(held, state, reason, message, exit_code=code, at=status.finished_at)

    def _set(
        self, held: _Held, state: State, reason: str, message: str, at: float | None = None
    ) -> None:
        self.store.transition(held.seq, state, reason, message, at=at)
        held.state = state

    def _end(
        self,
        held: _Held,
        state: State,
        reason: str,
        message: str,
        *,
        exit_code: int | None = None,
        at: float | None = None,
    ) -> None:
        try:
            self.backend.release(held.workload)
        except GpucaasError as exc:
            # Keep the GPUs out of placement until the partition is really given back.
            log.error("release of %s failed, retrying: %s", held.workload.container_id, exc)
            return
        self.store.transition(held.seq, state, reason, message, exit_code=exit_code, at=at)
        self.fleet.release(held.placement)
        self._held.pop(held.seq, None)

    # -- operator actions ------------------------------------------------------------------

    def cordon(self, board: str, module_id: int, cordoned: bool) -> None:
        """The operator's cordon of a board (``module_id`` 0) or one GPU; kept in the store."""
        with self.lock:
            self.store.set_cordon(board, module_id, cordoned)
            key = (board, module_id)
            if cordoned:
                self._admin_cordons.add(key)
            else:
                self._admin_cordons.discard(key)
            if module_id == 0:
                info = self._boards.get(board)
                self.fleet.cordon_node(board, cordoned or bool(info and info.cordoned))
            else:
                self.fleet.cordon_gpu(board, module_id, cordoned)

    def granted_size(self, gpus: int) -> int:
        """The partition size a request for ``gpus`` GPUs gets (3 → 4): the smallest any
        board model of the fleet offers. Read on every submit, so from the last refresh."""
        models = self._fleet_models or frozenset(b.model for b in self.backend.boards())
        sizes = []
        for name in models:
            try:
                sizes.append(get_model(name).size_for(gpus))
            except GpucaasError:
                continue
        return min(sizes) if sizes else gpus

    def on_board(self, board: str) -> list[str]:
        with self.lock:
            return [
                h.workload.container_id for h in self._held.values() if h.workload.board == board
            ]

    def container_ids(self) -> dict[int, str]:
        """seq → container id, for what holds GPUs."""
        with self.lock:
            return {seq: h.workload.container_id for seq, h in self._held.items()}

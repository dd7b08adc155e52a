"""``SimulatedFabric``: a faithful in-process model of Fabric Manager for one board.

It is a real backend (the embedded default and the tests run on it), so it follows FM's
semantics rather than being convenient: activating an active or overlapping partition is
IN_USE, deactivating an inactive one is UNINITIALIZED, an unknown id is BADPARAM; for
``init_s`` seconds after start every partition call is NOT_CONFIGURED; :meth:`restart`
models ``nv-fabricmanager --restart``: the active set is forgotten and partition calls are
refused (NOT_CONFIGURED) until :meth:`set_activated` arrives; if it has not arrived after
``replay_window_s`` (FM's 60 s), FM aborts and every call is CONNECTION_NOT_VALID.

With a ``state_file`` the state survives the process (another process opening the same
file sees the same fabric, as two clients of one FM would); it is written atomically
(temp file, fsync, rename) and a corrupt file is refused, named and kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from gpucaas._files import write_atomically
from gpucaas.errors import InvalidRequest
from gpucaas.topology import BoardModel, ModuleId

from ._errors import FabricStateError, FMReturn, check
from ._types import FailedDevices, PartitionGpu, PartitionInfo

REPLAY_WINDOW_S = 60.0
"""How long FM waits for fmSetActivatedFabricPartitions after a --restart before aborting."""

NVLINKS_PER_GPU = 18
"""NVLinks from one H100/H200/B200 GPU to the NVSwitches (all used in a multi-GPU partition)."""

LINE_RATE_MBPS = 50_000
"""Simulated per-link line rate reported in the GPU info."""

_STATE_VERSION = 1


class SimulatedFabric:
    """Fabric Manager for one board of ``model``, simulated.

    Parameters:
        model: the board model whose partition table FM serves.
        board: a name for messages (the node's name).
        state_file: where the fabric's state lives across processes; None keeps it in memory.
        init_s: seconds after start during which partition calls answer NOT_CONFIGURED.
        clock: monotonic seconds, injectable for tests.
    """

    def __init__(
        self,
        model: BoardModel,
        *,
        board: str | None = None,
        state_file: Path | str | None = None,
        init_s: float = 0.0,
        replay_window_s: float = REPLAY_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.board = board or model.name
        self._state_file = Path(state_file) if state_file is not None else None
        self._clock = clock
        self._lock = threading.Lock()
        self._ready_at = clock() + init_s
        self._replay_window_s = replay_window_s
        self._active: set[int] = set()
        self._awaiting_replay_since: float | None = None
        self._aborted = False
        if self._state_file is not None and self._state_file.exists():
            self._load(self._state_file)  # refuse a corrupt file at once, not on first use

    # -- FabricManager ------------------------------------------------------------------

    def list_partitions(self) -> tuple[PartitionInfo, ...]:
        with self._locked():
            self._refresh()
            self._gate("list partitions", partition_call=False)
            return tuple(self._info(int(p.id)) for p in self.model.partitions)

    def activate(self, partition_id: int) -> None:
        with self._locked():
            self._refresh()
            self._gate("activate", partition_id)
            partition = self._known(partition_id, "activate")
            if partition_id in self._active or any(
                self.model.partition(a).mask & partition.mask for a in self._active
            ):
                check(FMReturn.IN_USE, "activate", partition_id=partition_id, board=self.board)
            self._active.add(partition_id)
            self._save()

    def deactivate(self, partition_id: int) -> None:
        with self._locked():
            self._refresh()
            self._gate("deactivate", partition_id)
            self._known(partition_id, "deactivate")
            if partition_id not in self._active:
                check(
                    FMReturn.UNINITIALIZED,
                    "deactivate",
                    partition_id=partition_id,
                    board=self.board,
                )
            self._active.discard(partition_id)
            self._save()

    def set_activated(self, partition_ids: Sequence[int]) -> None:
        with self._locked():
            self._refresh()
            self._gate("set activated partitions", partition_call=False, replay=True)
            ids = list(partition_ids)
            for pid in ids:
                self._known(pid, "set activated partitions")
            used = 0
            for pid in ids:
                mask = self.model.partition(pid).mask
                if used & mask:
                    check(
                        FMReturn.IN_USE,
                        "set activated partitions",
                        partition_id=pid,
                        board=self.board,
                    )
                used |= mask
            self._active = set(ids)
            self._awaiting_replay_since = None
            self._save()

    def failed_devices(self) -> FailedDevices:
        with self._locked():
            self._refresh()
            self._gate("get NVLink failed devices", partition_call=False)
            return FailedDevices()

    # -- simulation controls ---------------------------------------------------------------

    def restart(self) -> None:
        """Restart FM with --restart: it forgets the active set and waits for a replay."""
        with self._locked():
            self._active = set()
            self._aborted = False
            self._awaiting_replay_since = self._clock()
            self._save()

    @property
    def awaiting_replay(self) -> bool:
        """True between :meth:`restart` and the replay (or the abort)."""
        with self._locked():
            self._refresh()
            return self._awaiting_replay_since is not None

    @property
    def aborted(self) -> bool:
        """True when FM gave up waiting for the replay (call :meth:`restart` to bring it back)."""
        with self._locked():
            self._refresh()
            return self._aborted

    def active_ids(self) -> frozenset[int]:
        """The active partition ids, without FM's gates (for tests and status views)."""
        with self._locked():
            return frozenset(self._active)

    # -- internals ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One operation at a time: across threads, and across processes sharing the state
        file (an flock on ``<state>.lock``, then a fresh read of the file)."""
        with self._lock:
            if self._state_file is None:
                yield
                return
            self._state_file.parent.mkdir(parents=True, exist_ok=True)
            lock_path = self._state_file.with_name(self._state_file.name + ".lock")
            with open(
                os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a"
            ) as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    if self._state_file.exists():
                        self._load(self._state_file)
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def _refresh(self) -> None:
        since = self._awaiting_replay_since
        if since is not None and self._clock() - since > self._replay_window_s:
            self._aborted = True
            self._awaiting_replay_since = None
            self._save()

    def _gate(
        self,
        operation: str,
        partition_id: int | None = None,
        *,
        partition_call: bool = True,
        replay: bool = False,
    ) -> None:
        if self._aborted:
            check(
                FMReturn.CONNECTION_NOT_VALID,
                operation,
                partition_id=partition_id,
                board=self.board,
            )
        if self._clock() < self._ready_at:
            check(FMReturn.NOT_CONFIGURED, operation, partition_id=partition_id, board=self.board)
        if self._awaiting_replay_since is not None and partition_call and not replay:
            check(FMReturn.NOT_CONFIGURED, operation, partition_id=partition_id, board=self.board)

    def _known(self, partition_id: int, operation: str) -> Any:
        try:
            return self.model.partition(partition_id)
        except InvalidRequest:
            check(FMReturn.BADPARAM, operation, partition_id=partition_id, board=self.board)
            raise  # pragma: no cover - check() always raises for BADPARAM

    def _info(self, partition_id: int) -> PartitionInfo:
        partition = self.model.partition(partition_id)
        links = NVLINKS_PER_GPU if partition.size > 1 else 0
        return PartitionInfo(
            id=partition.id,
            active=partition_id in self._active,
            gpus=tuple(
                PartitionGpu(
                    physical_id=ModuleId(m),
                    uuid=f"GPU-sim-{self.board}-{m}",
                    pci_bus_id=f"00000000:{0x10 + m:02X}:00.0",
                    nvlinks_available=links,
                    nvlinks_max=NVLINKS_PER_GPU,
                    nvlink_line_rate_mbps=LINE_RATE_MBPS,
                )
                for m in partition.module_ids
            ),
        )

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise FabricStateError(path, f"cannot read it ({exc})") from exc
        except json.JSONDecodeError as exc:
            raise FabricStateError(path, f"not valid JSON ({exc})") from exc
        if not isinstance(data, dict) or data.get("version") != _STATE_VERSION:
            raise FabricStateError(path, f"not a version-{_STATE_VERSION} state document")
        if data.get("model") != self.model.name:
            raise FabricStateError(
                path, f"it is for board model {data.get('model')!r}, not {self.model.name!r}"
            )
        self._active = partition_set(self.model, data.get("active"), path, "active")
        self._aborted = bool(data.get("aborted", False))
        if not data.get("awaiting_replay"):
            self._awaiting_replay_since = None
        elif self._awaiting_replay_since is None:
            self._awaiting_replay_since = self._clock()

    def _save(self) -> None:
        if self._state_file is None:
            return
        document = {
            "version": _STATE_VERSION,
            "model": self.model.name,
            "active": sorted(self._active),
            "awaiting_replay": self._awaiting_replay_since is not None,
            "aborted": self._aborted,
        }
        write_atomically(self._state_file, json.dumps(document, indent=2) + "\n")


def partition_set(model: BoardModel, value: object, path: Path, key: str) -> set[int]:
    """``value`` as a set of non-overlapping partition ids of ``model``, or a
    :class:`FabricStateError` naming ``path`` and what is wrong with ``key``."""
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise FabricStateError(path, f"'{key}' must be a list of partition ids")
    used = 0
    for pid in value:
        try:
            mask = model.partition(pid).mask
        except InvalidRequest:
            raise FabricStateError(path, f"partition {pid} is not in the table") from None
        if used & mask:
            raise FabricStateError(path, f"{key} partitions overlap at {pid}")
        used |= mask
    return set(value)

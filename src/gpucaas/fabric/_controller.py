"""The fm-controller's core: the desired activated set on disk, serialised operations,
and the reconcile that replays the set into a restarted Fabric Manager.

No gRPC here (that is :mod:`._server`): this is the logic the daemon runs, testable with
any :class:`FabricManager`. What it guarantees:

- One operation at a time per board, so two callers racing for overlapping partitions get
  exactly one success and one IN_USE.
- The desired set survives a crash: an operation first records its intent (``pending``),
  then calls FM, then records the outcome, each write atomic. On start a pending intent is
  settled against what FM reports, so a kill -9 at any point leaves desired == FM.
- :meth:`reconcile` compares FM's active set with the desired one and, if they differ
  (FM restarted and forgot, or someone changed FM behind our back), replays the desired
  set with set-activated, counting the replay and its latency.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from gpucaas._files import write_atomically
from gpucaas.topology import BoardModel

from ._api import FabricManager
from ._errors import FabricManagerError, FabricManagerNotReady, FabricStateError
from ._sim import partition_set
from ._types import FailedDevices, PartitionInfo

log = logging.getLogger("gpucaas.fm-controller")

DESIRED_FILE = "desired.json"
_T = TypeVar("_T")
_PENDING_FORM = '\'pending\' must be ["activate"|"deactivate", id] or ["set-activated", [ids]]'
_VERSION = 1


@dataclass(frozen=True, slots=True)
class ControllerStatus:
    board: str
    model: str
    backend: str
    desired: tuple[int, ...]
    fabric_active: tuple[int, ...] | None
    """FM's active set at the last look, None when FM could not be asked."""
    replays: int
    last_replay_s: float
    last_error: str

    @property
    def in_sync(self) -> bool:
        return self.fabric_active is not None and set(self.fabric_active) == set(self.desired)


class Observer:
    """Hooks for metrics; the default does nothing (a null object, not ``if`` checks)."""

    def operation(self, op: str, error: FabricManagerError | None) -> None:
        """An operation finished (``error`` None on success)."""

    def replayed(self, seconds: float, partitions: int) -> None:
        """A replay of the desired set succeeded."""

    def synced(self, in_sync: bool, desired: int) -> None:
        """The result of a reconcile."""


class FabricController:
    """Serialises one board's fabric operations and keeps the desired set.

    Parameters:
        fabric: the Fabric Manager backend.
        model: the board model (for messages and the state file).
        state_dir: where ``desired.json`` lives.
        board: the board's name in messages.
        backend: the backend's name for status.
    """

    def __init__(
        self,
        fabric: FabricManager,
        model: BoardModel,
        *,
        state_dir: Path | str,
        board: str,
        backend: str,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fabric = fabric
        self.model = model
        self.board = board
        self.backend = backend
        self.observer = observer or Observer()
        self._clock = clock
        self._path = Path(state_dir) / DESIRED_FILE
        self._lock = threading.Lock()
        self._desired: set[int] = set()
        self._replays = 0
        self._last_replay_s = 0.0
        self._last_error = ""
        self._fabric_active: tuple[int, ...] | None = None
        pending = self._load()
        if pending is not None:
            self._settle(*pending)

    # -- operations (each one at a time) -------------------------------------------------

    def list_partitions(self) -> tuple[PartitionInfo, ...]:
        with self._lock:
            try:
                partitions = self._call("list", self.fabric.list_partitions)
            except FabricManagerError:
                self._fabric_active = None
                raise
            self._fabric_active = tuple(int(p.id) for p in partitions if p.active)
            return partitions

    def activate(self, partition_id: int) -> None:
        with self._lock:
            self._save(pending=("activate", partition_id))
            try:
                self._call("activate", lambda: self.fabric.activate(partition_id))
            except BaseException:
                self._save()
                raise
            self._desired.add(partition_id)
            self._save()
            if self._fabric_active is not None:  # FM said yes: it holds the new set now
                self._fabric_active = tuple(sorted({*self._fabric_active, partition_id}))

    def deactivate(self, partition_id: int) -> None:
        with self._lock:
            self._save(pending=("deactivate", partition_id))
            try:
                self._call("deactivate", lambda: self.fabric.deactivate(partition_id))
            except BaseException:
                self._save()
                raise
            self._desired.discard(partition_id)
            self._save()
            if self._fabric_active is not None:
                self._fabric_active = tuple(a for a in self._fabric_active if a != partition_id)

    def set_activated(self, partition_ids: Sequence[int]) -> None:
        with self._lock:
            ids = sorted({int(p) for p in partition_ids})
            self._save(pending=("set-activated", ids))
            try:
                self._call("set-activated", lambda: self.fabric.set_activated(ids))
            except BaseException:
                self._save()
                raise
            self._desired = set(ids)
            self._save()
            self._fabric_active = tuple(sorted(self._desired))

    def failed_devices(self) -> FailedDevices:
        with self._lock:
            return self._call("failed-devices", self.fabric.failed_devices)

    def reconcile(self) -> bool:
        """Make FM's active set equal the desired one; True when they agree afterwards.

        Raises the backend's error when FM cannot be asked or refuses the replay (e.g.
        :class:`FabricManagerNotReady` while it initialises: call again).
        """
        with self._lock:
            try:
                partitions = self._call("list", self.fabric.list_partitions)
            except FabricManagerError:
                self._fabric_active = None  # FM could not be asked: nobody knows its set
                self.observer.synced(False, len(self._desired))
                raise
            active = {int(p.id) for p in partitions if p.active}
            self._fabric_active = tuple(sorted(active))
            if active == self._desired and (active or not self._awaiting_replay(partitions)):
                self.observer.synced(True, len(self._desired))
                return True
            started = self._clock()
            desired = sorted(self._desired)
            log.warning(
                "fabric drifted from the desired set; replaying it",
                extra={"desired": desired, "fabric_active": sorted(active)},
            )
            try:
                self._call("set-activated", lambda: self.fabric.set_activated(desired))
            except FabricManagerError:
                self.observer.synced(False, len(desired))
                raise
            self._last_replay_s = self._clock() - started
            self._replays += 1
            self._fabric_active = tuple(desired)
            self.observer.replayed(self._last_replay_s, len(desired))
            self.observer.synced(True, len(desired))
            return True

    def status(self) -> ControllerStatus:
        with self._lock:
            return ControllerStatus(
                board=self.board,
                model=self.model.name,
                backend=self.backend,
                desired=tuple(sorted(self._desired)),
                fabric_active=self._fabric_active,
                replays=self._replays,
                last_replay_s=self._last_replay_s,
                last_error=self._last_error,
            )

    # -- internals ---------------------------------------------------------------------------

    def _call(self, op: str, fn: Callable[[], _T]) -> _T:
        try:
            result = fn()
        except FabricManagerError as exc:
            self._last_error = str(exc)
            self.observer.operation(op, exc)
            raise
        self.observer.operation(op, None)
        return result

    def _awaiting_replay(self, partitions: Sequence[PartitionInfo]) -> bool:
        """With nothing active, a restarted FM (waiting for set-activated) lists exactly as
        an idle one does, and it aborts if the empty set is not replayed within 60 s. Ask
        with a call that changes nothing: deactivating an inactive partition is
        UNINITIALIZED normally and NOT_CONFIGURED while FM waits for the replay."""
        if not partitions:
            return False
        try:
            self.fabric.deactivate(int(partitions[0].id))
        except FabricManagerNotReady:
            return True
        except FabricManagerError:
            return False
        return False  # it was active after all; the desired set (empty) wants it inactive

    def _settle(self, op: str, target: int | list[int]) -> None:
        """A crash left an intent behind: FM's state says whether it happened."""
        try:
            active = {int(p.id) for p in self.fabric.list_partitions() if p.active}
        except FabricManagerNotReady:
            active = set()  # FM restarted: it forgot; the replay brings back the rest
        if op == "activate" and isinstance(target, int) and target in active:
            self._desired.add(target)
        if op == "deactivate" and isinstance(target, int) and target not in active:
            self._desired.discard(target)
        if op == "set-activated" and isinstance(target, list) and set(target) == active:
            self._desired = set(target)
        self._save()

    def _load(self) -> tuple[str, int | list[int]] | None:
        path = self._path
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FabricStateError(path, f"cannot be read as JSON ({exc})") from exc
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            raise FabricStateError(path, f"not a version-{_VERSION} desired-set document")
        if data.get("model") != self.model.name:
            raise FabricStateError(
                path, f"it is for board model {data.get('model')!r}, not {self.model.name!r}"
            )
        self._desired = partition_set(self.model, data.get("desired"), path, "desired")
        pending = data.get("pending")
        if pending is None:
            return None
        if not isinstance(pending, list) or len(pending) != 2:
            raise FabricStateError(path, _PENDING_FORM)
        op, target = pending
        if op in ("activate", "deactivate") and isinstance(target, int):
            return str(op), int(target)
        if (
            op == "set-activated"
            and isinstance(target, list)
            and all(isinstance(t, int) for t in target)
        ):
            return "set-activated", [int(t) for t in target]
        raise FabricStateError(path, _PENDING_FORM)

    def _save(self, pending: tuple[str, int | list[int]] | None = None) -> None:
        document = {
            "version": _VERSION,
            "model": self.model.name,
            "board": self.board,
            "desired": sorted(self._desired),
            "pending": list(pending) if pending is not None else None,
        }
        write_atomically(self._path, json.dumps(document, indent=2) + "\n")

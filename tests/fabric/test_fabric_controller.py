"""FabricController over SimulatedFabric, in process: the desired set on disk, crash
recovery from a pending intent, refused state files, reconcile and replay, and the observer."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from gpucaas.fabric import (
    FabricBadRequest,
    FabricController,
    FabricManagerDown,
    FabricManagerError,
    FabricManagerNotReady,
    FabricStateError,
    FailedDevices,
    PartitionInfo,
    PartitionInUse,
    PartitionNotActive,
    SimulatedFabric,
)
from gpucaas.topology import get_model

H100 = get_model("hgx-h100-8")
DESIRED = "desired.json"


class Clock:
    """Monotonic seconds that move only when told (or by ``step`` on every read)."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 1000.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class Recorder:
    """An observer (the controller's metrics hooks) that remembers every call."""

    def __init__(self) -> None:
        self.operations: list[tuple[str, str | None]] = []
        self.replays: list[tuple[float, int]] = []
        self.syncs: list[tuple[bool, int]] = []

    def operation(self, op: str, error: FabricManagerError | None) -> None:
        self.operations.append((op, None if error is None else error.code.fm_name))

    def replayed(self, seconds: float, partitions: int) -> None:
        self.replays.append((seconds, partitions))

    def synced(self, in_sync: bool, desired: int) -> None:
        self.syncs.append((in_sync, desired))


class Spy:
    """A FabricManager that hands each call to SimulatedFabric after running ``before``."""

    def __init__(self, inner: SimulatedFabric, before: Callable[[str], None]) -> None:
        self.inner = inner
        self.before = before

    def list_partitions(self) -> tuple[PartitionInfo, ...]:
        return self.inner.list_partitions()

    def activate(self, partition_id: int) -> None:
        self.before("activate")
        self.inner.activate(partition_id)

    def deactivate(self, partition_id: int) -> None:
        self.before("deactivate")
        self.inner.deactivate(partition_id)

    def set_activated(self, partition_ids: Sequence[int]) -> None:
        self.inner.set_activated(partition_ids)

    def failed_devices(self) -> FailedDevices:
        return self.inner.failed_devices()


def make(
    state_dir: Path,
    fabric: Any = None,
    *,
    observer: Any = None,
    clock: Callable[[], float] | None = None,
) -> FabricController:
    extra: dict[str, Any] = {} if clock is None else {"clock": clock}
    return FabricController(
        fabric if fabric is not None else SimulatedFabric(H100, board="hgx-07"),
        H100,
        state_dir=state_dir,
        board="hgx-07",
        backend="simulated",
        observer=observer,
        **extra,
    )


def document(state_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((state_dir / DESIRED).read_text(encoding="utf-8"))
    return data


def write_document(state_dir: Path, desired: list[int], pending: object = None) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / DESIRED).write_text(
        json.dumps(
            {
                "version": 1,
                "model": "hgx-h100-8",
                "board": "hgx-07",
                "desired": desired,
                "pending": pending,
            }
        ),
        encoding="utf-8",
    )


# -- the desired set on disk --------------------------------------------------------------


def test_activate_and_deactivate_write_the_desired_set(tmp_path: Path) -> None:
    fabric = SimulatedFabric(H100)
    controller = make(tmp_path, fabric)
    assert not (tmp_path / DESIRED).exists()  # nothing to remember yet
    controller.activate(3)
    controller.activate(4)
    assert document(tmp_path) == {
        "version": 1,
        "model": "hgx-h100-8",
        "board": "hgx-07",
        "desired": [3, 4],
        "pending": None,
    }
    controller.deactivate(3)
    assert document(tmp_path)["desired"] == [4]
    assert controller.status().desired == (4,)
    assert fabric.active_ids() == {4}
    controller.set_activated([1, 2])
    assert document(tmp_path)["desired"] == [1, 2] and fabric.active_ids() == {1, 2}


def test_desired_file_is_replaced_whole_never_written_in_place(tmp_path: Path) -> None:
    controller = make(tmp_path)
    controller.activate(7)
    seen: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            text = (tmp_path / DESIRED).read_text(encoding="utf-8")
            json.loads(text)  # a torn write would fail here
            seen.append(text)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(40):
            controller.activate(8)
            controller.deactivate(8)
    finally:
        stop.set()
        thread.join()
    assert seen  # every read parsed: no reader ever saw half a file
    assert sorted(p.name for p in tmp_path.iterdir()) == [DESIRED]  # no temp files left


def test_the_intent_is_on_disk_before_fabric_manager_is_called(tmp_path: Path) -> None:
    during: list[object] = []
    fabric = Spy(SimulatedFabric(H100), lambda op: during.append(document(tmp_path)["pending"]))
    controller = make(tmp_path, fabric)
    controller.activate(3)
    controller.deactivate(3)
    assert during == [["activate", 3], ["deactivate", 3]]
    assert document(tmp_path)["pending"] is None


@pytest.mark.parametrize(
    ("operation", "error"),
    [
        (lambda c: c.activate(1), PartitionInUse),
        (lambda c: c.activate(3), PartitionInUse),
        (lambda c: c.deactivate(5), PartitionNotActive),
        (lambda c: c.activate(15), FabricBadRequest),
        (lambda c: c.set_activated([1, 3]), PartitionInUse),
    ],
    ids=[
        "activate-overlapping",
        "activate-already-active",
        "deactivate-inactive",
        "activate-unknown-id",
        "set-activated-overlapping",
    ],
)
def test_a_refused_call_leaves_desired_unchanged_and_no_intent(
    tmp_path: Path,
    operation: Callable[[FabricController], None],
    error: type[FabricManagerError],
) -> None:
    fabric = SimulatedFabric(H100)
    controller = make(tmp_path, fabric)
    controller.activate(3)
    before = (tmp_path / DESIRED).read_bytes()
    with pytest.raises(error):
        operation(controller)
    assert (tmp_path / DESIRED).read_bytes() == before
    assert document(tmp_path)["pending"] is None
    assert controller.status().desired == (3,) and fabric.active_ids() == {3}
    assert controller.status().last_error.startswith(("activate", "deactivate", "set"))


def test_an_exception_inside_the_call_also_clears_the_intent(tmp_path: Path) -> None:
    def explode(op: str) -> None:
        raise KeyboardInterrupt

    controller = make(tmp_path, Spy(SimulatedFabric(H100), explode))
    with pytest.raises(KeyboardInterrupt):
        controller.activate(3)
    assert document(tmp_path)["pending"] is None and document(tmp_path)["desired"] == []


# -- crash recovery ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("desired", "pending", "fm_active", "expected"),
    [
        ([], ["activate", 3], {3}, [3]),
        ([], ["activate", 3], set(), []),
        ([4], ["activate", 3], {3, 4}, [3, 4]),
        ([3], ["deactivate", 3], {3}, [3]),
        ([3], ["deactivate", 3], set(), []),
        ([3, 4], ["deactivate", 3], {4}, [4]),
        ([3], ["set-activated", [5, 6]], {5, 6}, [5, 6]),
        ([3], ["set-activated", [5, 6]], {3}, [3]),
    ],
    ids=[
        "activate-that-happened-is-kept",
        "activate-that-did-not-is-dropped",
        "activate-beside-others-is-kept",
        "deactivate-that-did-not-keeps-it",
        "deactivate-that-happened-drops-it",
        "deactivate-beside-others-drops-it",
        "set-activated-that-happened-replaces",
        "set-activated-that-did-not-keeps-the-old-set",
    ],
)
def test_a_pending_intent_is_settled_against_fabric_manager(
    tmp_path: Path,
    desired: list[int],
    pending: list[object],
    fm_active: set[int],
    expected: list[int],
) -> None:
    fabric = SimulatedFabric(H100)
    if fm_active:
        fabric.set_activated(sorted(fm_active))
    write_document(tmp_path, desired, pending)
    controller = make(tmp_path, fabric)
    assert controller.status().desired == tuple(expected)
    assert document(tmp_path)["desired"] == expected
    assert document(tmp_path)["pending"] is None
    assert fabric.active_ids() == fm_active  # settling asks FM; it changes nothing there
    assert controller.reconcile() and controller.status().replays == 0


def test_a_pending_activate_while_fabric_manager_waits_for_a_replay_is_dropped(
    tmp_path: Path,
) -> None:
    fabric = SimulatedFabric(H100)
    fabric.set_activated([3, 4])
    fabric.restart()
    write_document(tmp_path, [4], ["activate", 3])
    controller = make(tmp_path, fabric)
    assert controller.status().desired == (4,)
    assert controller.reconcile()
    assert fabric.active_ids() == {4} and controller.status().replays == 1


def test_a_pending_intent_with_fabric_manager_down_keeps_the_file(tmp_path: Path) -> None:
    clock = Clock()
    fabric = SimulatedFabric(H100, clock=clock, replay_window_s=60)
    fabric.restart()
    clock.now += 61  # FM gave up waiting for the replay and aborted
    write_document(tmp_path, [], ["activate", 3])
    before = (tmp_path / DESIRED).read_bytes()
    with pytest.raises(FabricManagerDown):
        make(tmp_path, fabric)
    assert (tmp_path / DESIRED).read_bytes() == before  # settled on the next start


BAD_DOCUMENTS = {
    "garbage": (b"{this is not json", "cannot be read as JSON"),
    "not-utf8": (b"\xff\xfe\x00garbage", "cannot be read as JSON"),
    "empty": (b"", "cannot be read as JSON"),
    "a-list": (b"[1, 2]", "not a version-1 desired-set document"),
    "wrong-version": (
        b'{"version": 2, "model": "hgx-h100-8", "desired": []}',
        "not a version-1",
    ),
    "other-model": (
        b'{"version": 1, "model": "hgx-b200-8", "desired": []}',
        "'hgx-b200-8', not 'hgx-h100-8'",
    ),
    "desired-not-a-list": (
        b'{"version": 1, "model": "hgx-h100-8", "desired": "3,4"}',
        "'desired' must be a list",
    ),
    "desired-strings": (
        b'{"version": 1, "model": "hgx-h100-8", "desired": ["3"]}',
        "'desired' must be a list",
    ),
    "unknown-partition": (
        b'{"version": 1, "model": "hgx-h100-8", "desired": [99]}',
        "partition 99 is not in the table",
    ),
    "overlapping": (
        b'{"version": 1, "model": "hgx-h100-8", "desired": [1, 3]}',
        "overlap at 3",
    ),
    "pending-unknown-op": (
        b'{"version": 1, "model": "hgx-h100-8", "desired": [], "pending": ["reboot", 3]}',
        "'pending' must be",
    ),
    "pending-string-id": (
        b'{"version": 1, "model": "hgx-h100-8", "desired": [], "pending": ["activate", "3"]}',
        "'pending' must be",
    ),
    "pending-short": (
        b'{"version": 1, "model": "hgx-h100-8", "desired": [], "pending": ["activate"]}',
        "'pending' must be",
    ),
    "pending-an-object": (
        b'{"version": 1, "model": "hgx-h100-8", "desired": [], "pending": {"op": "activate"}}',
        "'pending' must be",
    ),
}


@pytest.mark.parametrize(("content", "reason"), BAD_DOCUMENTS.values(), ids=BAD_DOCUMENTS.keys())
def test_an_unusable_desired_file_is_refused_named_and_kept(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / DESIRED
    path.write_bytes(content)
    fabric = SimulatedFabric(H100)
    with pytest.raises(FabricStateError) as caught:
        make(tmp_path, fabric)
    assert caught.value.path == path
    assert str(path) in str(caught.value) and reason in str(caught.value)
    assert "left untouched" in str(caught.value)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == [DESIRED]
    assert fabric.active_ids() == frozenset()


# -- reconcile and replay ------------------------------------------------------------------


@pytest.mark.parametrize("desired", [[3, 4], [0], []], ids=["two-pairs", "whole-board", "empty"])
def test_reconcile_after_a_fabric_manager_restart_replays_the_desired_set(
    tmp_path: Path, desired: list[int]
) -> None:
    fabric = SimulatedFabric(H100)
    controller = make(tmp_path, fabric)
    controller.set_activated(desired)
    assert controller.reconcile() and controller.status().replays == 0
    fabric.restart()
    assert fabric.awaiting_replay
    assert controller.reconcile() is True
    assert not fabric.awaiting_replay
    assert fabric.active_ids() == set(desired)
    status = controller.status()
    assert status.replays == 1 and status.in_sync
    assert status.fabric_active == tuple(desired)
    assert controller.reconcile() and controller.status().replays == 1  # nothing more to do
    fabric.restart()
    assert controller.reconcile() and controller.status().replays == 2
    if desired:
        fabric.deactivate(desired[0])  # once replayed, partition calls work again


def test_reconcile_undoes_a_change_made_behind_its_back(tmp_path: Path) -> None:
    fabric = SimulatedFabric(H100)
    controller = make(tmp_path, fabric)
    controller.activate(3)
    fabric.activate(5)  # someone used FM directly
    assert controller.reconcile()
    assert fabric.active_ids() == {3} and controller.status().replays == 1


def test_reconcile_while_fabric_manager_initialises_raises_not_ready(tmp_path: Path) -> None:
    clock = Clock()
    fabric = SimulatedFabric(H100, init_s=30, clock=clock)
    controller = make(tmp_path, fabric)
    with pytest.raises(FabricManagerNotReady):
        controller.reconcile()
    status = controller.status()
    assert status.fabric_active is None and not status.in_sync
    assert "FM_ST_NOT_CONFIGURED" in status.last_error
    with pytest.raises(FabricManagerNotReady):
        controller.activate(3)
    assert document(tmp_path)["desired"] == [] and document(tmp_path)["pending"] is None
    clock.now += 31
    assert controller.reconcile() and controller.status().in_sync
    controller.activate(3)
    assert fabric.active_ids() == {3}


def test_status_reports_whether_fabric_manager_agrees(tmp_path: Path) -> None:
    fabric = SimulatedFabric(H100)
    controller = make(tmp_path, fabric)
    status = controller.status()
    assert (status.board, status.model, status.backend) == ("hgx-07", "hgx-h100-8", "simulated")
    assert status.fabric_active is None and not status.in_sync  # FM not asked yet
    assert controller.reconcile() and controller.status().in_sync
    controller.activate(3)
    assert controller.status().in_sync  # FM said yes, so it holds the new set
    assert controller.status().fabric_active == (3,)
    controller.deactivate(3)
    assert controller.status().in_sync and controller.status().fabric_active == ()
    fabric.activate(5)
    controller.list_partitions()
    assert not controller.status().in_sync and controller.status().fabric_active == (5,)


def test_concurrent_callers_on_overlapping_partitions_get_one_success(tmp_path: Path) -> None:
    fabric = SimulatedFabric(H100)
    controller = make(tmp_path, fabric)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def race(pid: int) -> None:
        barrier.wait()
        try:
            controller.activate(pid)
            results.append(f"ok {pid}")
        except PartitionInUse:
            results.append("in use")

    threads = [threading.Thread(target=race, args=(1 if i % 2 else 3,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r.startswith("ok")]
    assert len(winners) == 1 and results.count("in use") == 7
    assert document(tmp_path)["desired"] == sorted(fabric.active_ids())


# -- the observer ---------------------------------------------------------------------------


def test_the_observer_sees_operations_failures_and_replays(tmp_path: Path) -> None:
    recorder = Recorder()
    fabric = SimulatedFabric(H100)
    controller = make(tmp_path, fabric, observer=recorder, clock=Clock(step=0.25))
    controller.activate(3)
    with pytest.raises(PartitionInUse):
        controller.activate(1)
    controller.failed_devices()
    assert recorder.operations == [
        ("activate", None),
        ("activate", "FM_ST_IN_USE"),
        ("failed-devices", None),
    ]
    assert controller.reconcile() and recorder.replays == []
    assert recorder.syncs == [(True, 1)]
    fabric.restart()
    assert controller.reconcile()
    assert recorder.replays == [(0.25, 1)]  # one clock step between start and end
    assert recorder.operations[-2:] == [("list", None), ("set-activated", None)]
    assert recorder.syncs[-1] == (True, 1)
    assert controller.status().last_replay_s == 0.25


def test_the_observer_hears_when_fabric_manager_cannot_be_asked(tmp_path: Path) -> None:
    recorder = Recorder()
    clock = Clock()
    fabric = SimulatedFabric(H100, clock=clock, replay_window_s=60)
    controller = make(tmp_path, fabric, observer=recorder)
    controller.activate(3)
    fabric.restart()
    clock.now += 61  # no replay within FM's window: it aborted
    with pytest.raises(FabricManagerDown):
        controller.reconcile()
    assert recorder.operations[-1] == ("list", "FM_ST_CONNECTION_NOT_VALID")
    assert recorder.syncs[-1] == (False, 1)
    assert controller.status().fabric_active is None and not controller.status().in_sync

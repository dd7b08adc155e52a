"""The embedded default backend: simulated HGX boards, each with its fabric, and an
executor that really runs the containers on this machine.

Each board's partitions are activated and deactivated through :class:`FabricController`
(the code the fm-controller daemon runs behind its gRPC face) over a
:class:`SimulatedFabric` whose state file survives a restart, so a crash with partitions
active is replayed like a Fabric Manager restart on a real node.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from pathlib import Path

from gpucaas._files import make_private_dir
from gpucaas.fabric import (
    FabricController,
    PartitionInUse,
    PartitionNotActive,
    SimulatedFabric,
)
from gpucaas.topology import BoardModel, format_module_ids, module_ids_of

from ._backend import BoardInfo, Phase, TenantSpec, Workload, WorkloadStatus
from ._errors import AlreadyRunning
from ._executor import ExecState, ExecStatus, Executor, Launch, NfsVolume
from ._supervisor import log_cut

log = logging.getLogger(__name__)

LOCAL_BOARD_LABEL = "gpucaas.io/board-model"


def board_names(nodes: int) -> list[str]:
    return [f"hgx-{n:04d}" for n in range(nodes)]


def gpu_device_ids(model: BoardModel, module_ids: Sequence[int]) -> tuple[str, ...]:
    """The device IDs of these GPUs of a ``model`` board: each one's index in module-ID order.

    That is how ``kubelet_gpus`` numbers a node's GPUs for the device plugin and for the CDI
    spec, so on a host whose GPUs are those of one board, ``<kind>=<ID>`` is the right GPU.
    """
    order = module_ids_of(model.full_mask)
    return tuple(str(order.index(m)) for m in sorted(module_ids))


class LocalBackend:
    """Parameters:
    state_dir: where container directories (logs, supervisor files) and fabric state live.
    model: the board model of every simulated board.
    nodes: how many boards.
    executor: what runs the containers (sandbox, podman, docker or process).
    """

    name = "local"

    def __init__(
        self, state_dir: Path | str, model: BoardModel, nodes: int, executor: Executor
    ) -> None:
        # Absolute: supervisors run with the container's directory as their working directory.
        self.state_dir = Path(state_dir).resolve()
        self.model = model
        self.executor = executor
        labels = {LOCAL_BOARD_LABEL: model.name}
        # The simulated boards never change: one list for every refresh.
        self._boards = tuple(BoardInfo(name, model.name, labels) for name in board_names(nodes))
        self._known = {b.name for b in self._boards}
        self._fabrics: dict[str, FabricController] = {}
        self._lock = threading.Lock()
        # The containers' directories hold tenants' logs and environments: the owner's only.
        make_private_dir(self.state_dir)
        make_private_dir(self.state_dir / "containers")

    # -- boards and fabric ----------------------------------------------------------------

    def boards(self) -> Sequence[BoardInfo]:
        return self._boards

    def fabric(self, board: str) -> FabricController:
        """The board's fabric controller (created on first use; replays a saved state)."""
        with self._lock:
            controller = self._fabrics.get(board)
            if controller is None:
                if board not in self._known:
                    raise KeyError(board)
                make_private_dir(self.state_dir / "fabric")
                directory = self.state_dir / "fabric" / board
                make_private_dir(directory)
                fabric = SimulatedFabric(
                    self.model, board=board, state_file=directory / "fabric.json"
                )
                controller = FabricController(
                    fabric, self.model, state_dir=directory, board=board, backend="simulated"
                )
                controller.reconcile()
                self._fabrics[board] = controller
            return controller

    # -- workloads ------------------------------------------------------------------------

    def directory(self, container_id: str) -> Path:
        return self.state_dir / "containers" / container_id

    def _launch(self, w: Workload) -> Launch:
        gpu_env = {
            "GPUCAAS_CONTAINER_ID": w.container_id,
            "GPUCAAS_TENANT": w.tenant,
            "GPUCAAS_BOARD": w.board or "",
            "GPUCAAS_BOARD_MODEL": self.model.name,
            "GPUCAAS_PARTITION_ID": "" if w.partition_id is None else str(w.partition_id),
            "GPUCAAS_MODULE_IDS": ",".join(map(str, w.module_ids)),
            "GPUCAAS_GPUS": str(len(w.module_ids) or w.gpus),
        }
        return Launch(
            container_id=w.container_id,
            image=w.image,
            command=w.command,
            args=w.args,
            env=dict(w.env),
            directory=self.directory(w.container_id),
            max_runtime_s=w.max_runtime_s,
            nfs=tuple(NfsVolume(m.server, m.path, m.mount_path, m.read_only) for m in w.nfs),
            gpu_env=gpu_env,
            gpu_devices=gpu_device_ids(self.model, w.module_ids),
        )

    def check(self, workload: Workload) -> None:
        self.executor.check(self._launch(workload))

    def start(self, workload: Workload) -> None:
        if workload.board is None or workload.partition_id is None:
            raise ValueError(f"workload {workload.container_id} has no board/partition")
        directory = self.directory(workload.container_id)
        if (directory / "shim.pid").exists():
            return  # started before a restart: nothing to do
        controller = self.fabric(workload.board)
        if workload.partition_id not in controller.status().desired:
            try:
                controller.activate(workload.partition_id)
            except PartitionInUse:
                # Active already only if a crash hit between activate and the supervisor; the
                # scheduler's reservation rules out another holder.
                if workload.partition_id not in controller.status().desired:
                    raise
        log.info(
            "partition %s (GPUs %s) active on %s for %s",
            workload.partition_id,
            format_module_ids(workload.module_ids),
            workload.board,
            workload.container_id,
        )
        try:
            self.executor.start(self._launch(workload))
        except AlreadyRunning:
            pass

    def status(self, workload: Workload) -> WorkloadStatus:
        directory = self.directory(workload.container_id)
        if not (directory / "shim.pid").exists() and not (directory / "exit.json").exists():
            return WorkloadStatus(Phase.ABSENT)
        return _phase(self.executor.status(workload.container_id, directory))

    def stop(self, workload: Workload, grace_s: float) -> None:
        directory = self.directory(workload.container_id)
        if (directory / "shim.pid").exists():
            self.executor.stop(workload.container_id, directory, grace_s, wait=False)

    def release(self, workload: Workload) -> None:
        if workload.board is None or workload.partition_id is None:
            return
        controller = self.fabric(workload.board)
        if workload.partition_id in controller.status().desired:
            try:
                controller.deactivate(workload.partition_id)
            except PartitionNotActive:
                pass

    def sync(self, workloads: Sequence[Workload]) -> None:
        held: dict[str, set[int]] = {}
        for w in workloads:
            if w.board is not None and w.partition_id is not None:
                held.setdefault(w.board, set()).add(w.partition_id)
        fabric_root = self.state_dir / "fabric"
        boards = {p.name for p in fabric_root.iterdir()} if fabric_root.is_dir() else set()
        for board in sorted((boards | set(held)) & self._known):
            controller = self.fabric(board)
            for pid in controller.status().desired:
                if pid not in held.get(board, set()):
                    log.warning("deactivating stray partition %s on %s", pid, board)
                    try:
                        controller.deactivate(pid)
                    except PartitionNotActive:
                        pass

    def forget(self, container_ids: Sequence[str]) -> None:
        """Remove the directories (log, exit status) of containers purged from the store;
        only finished ones are purged, so no supervisor runs in them."""
        for cid in container_ids:
            directory = self.directory(cid)
            if directory.parent == self.state_dir / "containers" and directory.is_dir():
                shutil.rmtree(directory, ignore_errors=True)

    def ensure_tenant(self, tenant: TenantSpec) -> None:
        return None  # one machine, no namespaces: the store's quota is the only limit

    def remove_tenant(self, tenant: str) -> None:
        return None

    def logs(self, workload: Workload, *, follow: bool) -> Iterator[bytes]:
        path = self.directory(workload.container_id) / "log"
        offset = 0
        while True:
            chunk = b""
            if path.exists():
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read(1 << 16)
            if chunk:
                offset += len(chunk)
                yield chunk
                continue
            if not follow or self.status(workload).phase in (Phase.EXITED, Phase.LOST):
                # One more read: output written just before the exit.
                if path.exists():
                    with path.open("rb") as f:
                        f.seek(offset)
                        rest = f.read()
                    if rest:
                        yield rest
                return
            time.sleep(0.1)

    async def follow_logs(self, workload: Workload) -> AsyncGenerator[bytes, None]:
        def ended() -> bool:
            return self.status(workload).phase in (Phase.EXITED, Phase.LOST)

        async for chunk in follow_log_file(self.directory(workload.container_id) / "log", ended):
            yield chunk


async def follow_log_file(
    path: Path, ended: Callable[[], bool], poll_s: float = 0.1
) -> AsyncGenerator[bytes, None]:
    """Stream a container's log file as it grows, until ``ended()`` and the file is read.

    Reads of a local file return at once: done on the loop, no thread; a quiet container
    costs one small read per ``poll_s``. The place kept is in the workload's *output*, not
    in the file: a capped log's head is cut while it runs (the supervisor's marker line says
    how much), and the follower goes on from the same byte of output, or from the marker
    line when the cut took bytes it had not read yet.
    """
    sent = 0
    done = False
    while True:
        dropped, marker = log_cut(_read_from(path, 0, 512))
        if sent < dropped:
            yield _read_from(path, 0, marker)
            sent = dropped
        chunk = _read_from(path, marker + sent - dropped, 1 << 16)
        if chunk and log_cut(_read_from(path, 0, 512)) == (dropped, marker):
            sent += len(chunk)
            yield chunk
            continue
        if chunk:
            continue  # cut while reading: read again from the new head
        if done:
            return
        done = ended()  # once ended, one more read: output written just before the exit
        if not done:
            await asyncio.sleep(poll_s)


def _read_from(path: Path, offset: int, size: int) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(size)
    except FileNotFoundError:
        return b""


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _phase(st: ExecStatus) -> WorkloadStatus:
    phase = {
        ExecState.RUNNING: Phase.RUNNING,
        ExecState.EXITED: Phase.EXITED,
        ExecState.LOST: Phase.LOST,
    }[st.state]
    return WorkloadStatus(
        phase,
        exit_code=st.exit_code,
        reason=st.reason,
        message=st.message,
        started_at=_parse_time(st.started_at),
        finished_at=_parse_time(st.finished_at),
    )

"""The partitions this node activated: activation before a VM starts, release after its pods
are gone, and adoption of what running pods hold when the plugin starts.

Why apart from the gRPC service: the fabric calls, their lock and the record of owned
partitions are the same whether a device plugin (PreStartContainer) or a DRA plugin
(NodePrepareResources) asks. :class:`PartitionKeeper` makes one fabric call at a time (as
Fabric Manager wants) and never deactivates a partition that a live pod holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from gpucaas.errors import Unavailable
from gpucaas.fabric import FabricManager, PartitionNotActive
from gpucaas.topology import BoardModel, Partition

from ._api import PodPartitions
from ._errors import PartitionHeld
from ._metrics import PluginMetrics

log = logging.getLogger("gpucaas.device-plugin")


class PartitionKeeper:
    """Activates, adopts and releases the partitions of one board's fabric.

    Parameters:
        model: the board model whose partition table the fabric serves.
        fabric: the board's fabric (a :class:`RemoteFabric` to the fm-controller).
        pods: which partitions live pods hold (a :class:`PodResourcesWatcher`).
        grace_s: a partition activated this recently is not released even if no pod lists
            it yet (the kubelet lists a pod's devices only once its containers exist).
        metrics: where fabric operations are counted.
    """

    def __init__(
        self,
        model: BoardModel,
        fabric: FabricManager,
        pods: PodPartitions,
        *,
        grace_s: float,
        metrics: PluginMetrics,
    ) -> None:
        self.model = model
        self.fabric = fabric
        self.pods = pods
        self._grace = grace_s
        self._metrics = metrics
        self._lock = threading.Lock()  # one fabric call at a time, as FM wants
        self._owned: dict[int, float] = {}  # partitions we activated or adopted → when

    def owned(self) -> frozenset[int]:
        """The partitions activated or adopted here and not released."""
        with self._lock:
            return frozenset(self._owned)

    def owned_now(self) -> list[int]:
        """:meth:`owned`, sorted, without waiting for a fabric call in progress (for status
        pages: a copy, so a fabric call may change the record meanwhile)."""
        return sorted(self._owned.copy())

    def reconcile(self) -> None:
        """Adopt active partitions that live pods hold; deactivate the other active ones.
        Skipped, with a warning, when PodResources does not answer (nothing is released
        on a guess)."""
        try:
            held = self.pods.held()
        except Unavailable as exc:
            log.warning("cannot reconcile on start", extra={"error": str(exc)})
            return
        with self._lock:
            active = {int(p.id) for p in self.fabric.list_partitions() if p.active}
            now = time.monotonic()
            for pid in sorted(active):
                if pid in held:
                    self._owned[pid] = now - self._grace  # adopted: no grace needed
                    log.info("adopted partition", extra={"partition": pid})
                else:
                    self._deactivate(pid, "orphan: no live pod holds it")
            for pid in sorted(held - active):
                log.warning("a live pod holds an inactive partition", extra={"partition": pid})

    def release(self, held: Iterable[int]) -> tuple[int, ...]:
        """Deactivate owned partitions not in ``held`` (past the grace period); returns
        them."""
        keep = set(held)
        released = []
        with self._lock:
            now = time.monotonic()
            for pid, since in sorted(self._owned.items()):
                if pid in keep or now - since < self._grace:
                    continue
                self._deactivate(pid, "its pods are gone")
                released.append(pid)
        return tuple(released)

    def release_unheld(self) -> tuple[int, ...]:
        """:meth:`release` what live pods do not hold now. Raises what ``pods`` raises
        (:class:`Unavailable`), releasing nothing."""
        return self.release(self.pods.held())

    def activate(self, partition: Partition) -> None:
        """Make ``partition`` active in the fabric. Idempotent. An overlapping active
        partition that no live pod holds is deactivated first. Raises
        :class:`PartitionHeld` and the fabric's errors."""
        pid = int(partition.id)
        with self._lock:
            active = [int(p.id) for p in self.fabric.list_partitions() if p.active]
            if pid in active:
                self._owned.setdefault(pid, time.monotonic())
                return
            overlapping = [a for a in active if self.model.overlaps(a, pid)]
            if overlapping:
                try:
                    held = self.pods.held()
                except Unavailable:
                    held = frozenset(overlapping)  # cannot tell: treat them as held
                for other in overlapping:
                    if other in held:
                        raise PartitionHeld(partition, self.model.partition(other))
                for other in overlapping:
                    self._deactivate(other, f"overlaps partition {pid}, and no pod holds it")
            try:
                self.fabric.activate(pid)  # PartitionInUse if another client raced us
            except Exception:
                self._metrics.fabric_ops.labels("activate", "error").inc()
                raise
            self._metrics.fabric_ops.labels("activate", "ok").inc()
            self._owned[pid] = time.monotonic()
            log.info("activated partition", extra={"partition": pid})

    def _deactivate(self, pid: int, why: str) -> None:
        try:
            self.fabric.deactivate(pid)
        except PartitionNotActive:
            self._metrics.fabric_ops.labels("deactivate", "not-active").inc()
        except Exception:
            self._metrics.fabric_ops.labels("deactivate", "error").inc()
            raise
        else:
            self._metrics.fabric_ops.labels("deactivate", "ok").inc()
        self._owned.pop(pid, None)
        log.info("deactivated partition", extra={"partition": pid, "reason": why})

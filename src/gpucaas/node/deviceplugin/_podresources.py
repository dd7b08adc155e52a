"""Which partitions live pods hold, from the kubelet's PodResources API.

The device plugin API has no "free" call: the kubelet never says that a pod ended. The only
way to learn it is to ask the kubelet which devices live pods hold (PodResources v1 ``List``)
and release the partitions nobody lists. :class:`PodResourcesWatcher` is the real
:class:`PodPartitions`; tests inject their own.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

from gpucaas.errors import Unavailable
from gpucaas.topology import BoardModel, NotAPartition

from ..proto import podresources_v1_pb2 as pr
from ..proto import podresources_v1_pb2_grpc as pr_grpc

log = logging.getLogger("gpucaas.device-plugin")

_RPC_TIMEOUT_S = 5.0


class PodResourcesWatcher:
    """Which partitions live pods hold, from the kubelet's PodResources v1 ``List``.

    Parameters:
        socket: the PodResources socket (``<kubelet-dir>/pod-resources/kubelet.sock``).
        resource: our extended resource name; other resources' devices are ignored.
        model: the board model, to turn device sets into partitions.
        module_of: device ID → module ID of this node's GPUs.
    """

    def __init__(
        self, socket: Path, resource: str, model: BoardModel, module_of: dict[str, int]
    ) -> None:
        self.socket = socket
        self.resource = resource
        self.model = model
        self._module_of = module_of

    def held(self) -> frozenset[int]:
        """The partition ids that containers of live pods hold. Raises :class:`Unavailable`
        when the kubelet does not answer (callers then release nothing)."""
        try:
            with grpc.insecure_channel(f"unix:{self.socket}") as channel:
                stub = pr_grpc.PodResourcesListerStub(channel)  # type: ignore[no-untyped-call]
                reply = stub.List(pr.ListPodResourcesRequest(), timeout=_RPC_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise Unavailable(
                f"kubelet PodResources at {self.socket} did not answer: {exc.code().name}"
            ) from exc
        held: set[int] = set()
        for pod in reply.pod_resources:
            for container in pod.containers:
                for devices in container.devices:
                    if devices.resource_name != self.resource or not devices.device_ids:
                        continue
                    modules = [self._module_of.get(d, 0) for d in devices.device_ids]
                    try:
                        held.add(int(self.model.partition_for(modules).id))
                    except NotAPartition:
                        log.warning(
                            "a container holds GPUs that are not one partition",
                            extra={
                                "pod": f"{pod.namespace}/{pod.name}",
                                "container": container.name,
                                "devices": list(devices.device_ids),
                            },
                        )
        return frozenset(held)

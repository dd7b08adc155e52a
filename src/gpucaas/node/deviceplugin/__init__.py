"""The partition-aware kubelet device plugin (device plugin API v1beta1).

:class:`DevicePlugin` is a thin gRPC service over parts that are tested alone: the partition
choice (:class:`gpucaas.node.PartitionChoice`), the health tracker
(:class:`gpucaas.node.health.HealthTracker`), the fabric activations
(:class:`PartitionKeeper`) and which partitions live pods hold (:class:`PodPartitions`, by
default :class:`PodResourcesWatcher` over the kubelet's PodResources API).
:class:`HttpEndpoint` serves its ``/healthz`` and ``/metrics`` (:class:`PluginMetrics`).

Importing this package loads gRPC; the control plane never does.
"""

from gpucaas.errors import own_errors

from ._api import PodPartitions
from ._errors import DevicePluginError, PartitionHeld
from ._http import HttpEndpoint
from ._metrics import PluginMetrics
from ._partitions import PartitionKeeper
from ._plugin import (
    API_VERSION,
    KUBELET_DIR,
    PARTITION_ANNOTATION,
    DevicePlugin,
    PluginState,
    socket_name,
)
from ._podresources import PodResourcesWatcher

__all__ = [
    "API_VERSION",
    "KUBELET_DIR",
    "PARTITION_ANNOTATION",
    "DevicePlugin",
    "DevicePluginError",
    "HttpEndpoint",
    "PartitionHeld",
    "PartitionKeeper",
    "PluginMetrics",
    "PluginState",
    "PodPartitions",
    "PodResourcesWatcher",
    "socket_name",
]

own_errors(globals())

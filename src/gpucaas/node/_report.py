"""Tell the control plane which of this node's GPUs are unhealthy: the node annotation
``gpucaas.io/unhealthy-gpus`` (module IDs, comma-separated).

Why: the kubelet learns GPU health from the device plugin (ListAndWatch) and only publishes a
*count* (``status.allocatable``). gpucaas places partitions itself, so it must know *which*
GPUs are out: without this, it would choose a partition holding a failed GPU while the
kubelet hands the pod other devices (the device plugin never offers an unhealthy one), and the
two views drift apart; an 8-GPU container would fail kubelet admission. The control plane's
Kubernetes backend skips the GPUs this annotation names.

The annotation is written with a JSON merge patch on the node's metadata only, when the set
changes (and again after a failed write), and removed when every GPU is healthy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from gpucaas.errors import InvalidRequest

log = logging.getLogger("gpucaas.device-plugin")

UNHEALTHY_ANNOTATION = "gpucaas.io/unhealthy-gpus"
"""Module IDs of a node's unhealthy GPUs, comma-separated in ascending order (e.g. "3,5");
absent when all are healthy. Written by the node agent, read by the control plane."""


def unhealthy_annotation_patch(modules: Iterable[int]) -> dict[str, object]:
    """The merge patch that sets the annotation to ``modules`` (None removes it)."""
    ids = sorted({int(m) for m in modules})
    value = ",".join(str(m) for m in ids) if ids else None
    return {"metadata": {"annotations": {UNHEALTHY_ANNOTATION: value}}}


def parse_unhealthy_annotation(annotations: Mapping[str, str] | None) -> tuple[int, ...]:
    """The module IDs an annotation value names; malformed entries are ignored."""
    text = (annotations or {}).get(UNHEALTHY_ANNOTATION, "")
    return tuple(sorted({int(x) for x in text.split(",") if x.strip().isdigit()}))


class NodeAnnotationReporter:
    """Writes :data:`UNHEALTHY_ANNOTATION` on node ``node_name`` through the API server.

    Parameters:
        node_name: this node's name (the DaemonSet passes ``spec.nodeName``).
        kubeconfig: a kubeconfig file; None: in-cluster (the pod's service account) or
            ``$KUBECONFIG``.

    Call it with the unhealthy module IDs; it raises what the API server answers
    (``lightkube.ApiError``) or the transport error, so that the caller retries later.
    """

    def __init__(self, node_name: str, kubeconfig: str | None = None) -> None:
        from lightkube import Client, ConfigError, KubeConfig

        self.node_name = node_name
        try:
            config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
        except (ConfigError, OSError) as exc:
            raise InvalidRequest(
                f"cannot load {kubeconfig or 'an in-cluster or $KUBECONFIG'} configuration to "
                f"publish unhealthy GPUs on node {node_name!r}: {exc}; pass --kubeconfig, run "
                "in a pod with a service account, or leave --node-name unset"
            ) from exc
        self._client = Client(config, field_manager="gpucaas-node-agent")

    def __call__(self, unhealthy_modules: frozenset[int]) -> None:
        from lightkube.resources.core_v1 import Node
        from lightkube.types import PatchType

        self._client.patch(
            Node,
            self.node_name,
            unhealthy_annotation_patch(unhealthy_modules),
            patch_type=PatchType.MERGE,
        )
        log.info(
            "published unhealthy GPUs",
            extra={"node": self.node_name, "modules": sorted(unhealthy_modules)},
        )

    def close(self) -> None:
        self._client.close()

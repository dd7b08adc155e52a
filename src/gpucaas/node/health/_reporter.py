"""Publish the unhealthy GPUs in this node's annotation (``_annotation``) through the API
server.

The annotation is written with a JSON merge patch on the node's metadata only, when the set
changes (and again after a failed write), and removed when every GPU is healthy.
"""

from __future__ import annotations

import logging

from gpucaas.errors import InvalidRequest

from ._annotation import unhealthy_annotation_patch

log = logging.getLogger("gpucaas.device-plugin")


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

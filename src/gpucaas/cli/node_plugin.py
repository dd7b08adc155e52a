"""``gpucaas node device-plugin``: run the partition-aware kubelet device plugin.

Wiring only, as NVIDIA's k8s-device-plugin ``cmd/``: discover the GPUs, join them with the
module-ID map, connect to the fm-controller, start :class:`DevicePlugin` with the node's
health source (:class:`NodeHealth`) and its ``/healthz`` + ``/metrics`` endpoint, and run
until SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from gpucaas.node import kubelet_gpus, modulemap
from gpucaas.node.discovery import SYSFS_ROOT, discover

from ._common import user_errors

log = logging.getLogger("gpucaas.device-plugin")


def device_plugin(
    kubelet_dir: Annotated[
        Path,
        typer.Option(envvar="GPUCAAS_KUBELET_DIR", help="The kubelet's root directory."),
    ] = Path("/var/lib/kubelet"),
    fabric: Annotated[
        str,
        typer.Option(
            envvar="GPUCAAS_FABRIC", help="The fm-controller: a unix socket path or host:port."
        ),
    ] = "/run/gpucaas/fm-controller.sock",
    resource: Annotated[
        str,
        typer.Option(
            envvar="GPUCAAS_RESOURCE_NAME", help="Extended resource name (also the CDI kind)."
        ),
    ] = "nvidia.com/gpu",
    board: Annotated[
        str, typer.Option(envvar="GPUCAAS_BOARD", help="Board model of this node.")
    ] = "hgx-h100-8",
    sysfs: Annotated[
        Path, typer.Option("--sysfs", help="Root of the sysfs tree to read.")
    ] = SYSFS_ROOT,
    map_path: Annotated[
        Path,
        typer.Option(
            "--module-map", envvar="GPUCAAS_MODULE_MAP", help="The module-ID map of this node."
        ),
    ] = modulemap.DEFAULT_MAP_PATH,
    health_interval: Annotated[
        float, typer.Option(help="Seconds between health, pod and kubelet checks.")
    ] = 0.5,
    dev_root: Annotated[
        Path,
        typer.Option("--dev-root", help="Root of the device nodes (health: <root>/vfio/<group>)."),
    ] = Path("/dev"),
    http_listen: Annotated[
        str,
        typer.Option(envvar="GPUCAAS_HTTP_LISTEN", help="HOST:PORT serving /healthz and /metrics."),
    ] = "127.0.0.1:9467",
    node_name: Annotated[
        str | None,
        typer.Option(
            envvar="NODE_NAME",
            show_default=False,
            help="This node's name: publish the unhealthy GPUs' module IDs in its annotation "
            "gpucaas.io/unhealthy-gpus for the control plane (needs patch on nodes). "
            "Unset: not published.",
        ),
    ] = None,
    kubeconfig: Annotated[
        str | None,
        typer.Option(
            show_default=False,
            help="With --node-name: the API server's kubeconfig (default: in-cluster, then "
            "$KUBECONFIG).",
        ),
    ] = None,
) -> None:
    """Serve the kubelet device plugin: hand out whole partitions, activate them before the
    VM starts, deactivate them when their pods are gone.

    Example: gpucaas node device-plugin --fabric /run/gpucaas/fm-controller.sock
    """
    from gpucaas._jsonlog import JsonFormatter
    from gpucaas.fabric import RemoteFabric
    from gpucaas.node.deviceplugin import DevicePlugin, HttpEndpoint
    from gpucaas.node.health import FabricFailures, NodeAnnotationReporter, NodeHealth
    from gpucaas.topology import get_model

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # Before anything starts: a SIGTERM during start-up (a pod deleted at once) must stop
    # the plugin cleanly, not kill it with its socket and registration half made.
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("stopping", extra={"signal": signum})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with user_errors():
        model = get_model(board)
        gpus = kubelet_gpus(discover(sysfs), modulemap.load(map_path))
        reporter = NodeAnnotationReporter(node_name, kubeconfig) if node_name else None
        if reporter is None:
            log.info("not publishing unhealthy GPUs: no --node-name (NODE_NAME)")
        remote = RemoteFabric(fabric)
        plugin = DevicePlugin(
            gpus,
            model,
            remote,
            kubelet_dir=kubelet_dir,
            resource=resource,
            health=NodeHealth(sysfs, dev_root, FabricFailures(remote)),
            health_interval_s=health_interval,
            report=reporter,
        )
        try:
            http = HttpEndpoint(plugin, http_listen)
        except BaseException:
            remote.close()
            raise
        http.start()
        try:
            plugin.start()
        except BaseException:
            http.stop()
            remote.close()
            raise
    try:
        while not stop.wait(0.2):
            pass
    finally:
        plugin.stop()
        http.stop()
        remote.close()
        if reporter is not None:
            reporter.close()

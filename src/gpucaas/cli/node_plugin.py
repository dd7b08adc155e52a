"""``gpucaas node device-plugin``: run the partition-aware kubelet device plugin.

Wiring only: discover the GPUs, join them with the module-ID map, connect to the
fm-controller, start :class:`DevicePlugin` and run until SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from gpucaas.node import (
    DEFAULT_MAP_PATH,
    SYSFS_ROOT,
    Discovery,
    KubeletGpu,
    discover,
    is_vfio_driver,
    kubelet_gpus,
    load_module_map,
)

from ._common import user_errors

log = logging.getLogger("gpucaas.device-plugin")


class StillOnVfio:
    """Health check: the GPU is still bound to vfio-pci in a fresh discovery of ``sysfs``.

    One discovery serves every GPU of a health pass (it is reused for ``max_age_s``).
    """

    def __init__(self, sysfs: Path, max_age_s: float = 0.25) -> None:
        self.sysfs = sysfs
        self.max_age_s = max_age_s
        self._discovery: Discovery | None = None
        self._at = 0.0

    def __call__(self, gpu: KubeletGpu) -> bool:
        now = time.monotonic()
        if self._discovery is None or now - self._at > self.max_age_s:
            self._discovery, self._at = discover(self.sysfs), now
        device = self._discovery.get(gpu.bdf)
        return device is not None and is_vfio_driver(device.driver)


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
    ] = DEFAULT_MAP_PATH,
    health_interval: Annotated[
        float, typer.Option(help="Seconds between health, pod and kubelet checks.")
    ] = 0.5,
) -> None:
    """Serve the kubelet device plugin: hand out whole partitions, activate them before the
    VM starts, deactivate them when their pods are gone.

    Example: gpucaas node device-plugin --fabric /run/gpucaas/fm-controller.sock
    """
    from gpucaas.fabric import RemoteFabric
    from gpucaas.fabric._server import JsonFormatter
    from gpucaas.node import DevicePlugin
    from gpucaas.topology import get_model

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    with user_errors():
        model = get_model(board)
        gpus = kubelet_gpus(discover(sysfs), load_module_map(map_path))
        remote = RemoteFabric(fabric)
        plugin = DevicePlugin(
            gpus,
            model,
            remote,
            kubelet_dir=kubelet_dir,
            resource=resource,
            health=StillOnVfio(sysfs),
            health_interval_s=health_interval,
        )
        try:
            plugin.start()
        except BaseException:
            remote.close()
            raise
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("stopping", extra={"signal": signum})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        plugin.stop()
        remote.close()

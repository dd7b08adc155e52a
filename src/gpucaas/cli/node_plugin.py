"""``gpucaas node device-plugin``: run the partition-aware kubelet device plugin.

Wiring: discover the GPUs, join them with the module-ID map, connect to the fm-controller,
start :class:`DevicePlugin` with the node's health checks (:class:`NodeHealth`) and its
``/healthz`` + ``/metrics`` endpoint, and run until SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
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

NVIDIA_VENDOR = 0x10DE
CONFIG_HEADER_BYTES = 64

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


def bus_id_key(bus_id: str) -> str:
    """A PCI bus id in one form, ``dddd:bb:dd.f`` lower case: Fabric Manager writes
    ``00000000:9A:00.0``, sysfs ``0000:9a:00.0``."""
    parts = bus_id.strip().lower().split(":")
    try:
        domain = int(parts[-3], 16) if len(parts) >= 3 else 0
        bus = int(parts[-2], 16)
    except (IndexError, ValueError):
        return bus_id.strip().lower()
    return f"{domain:04x}:{bus:02x}:{parts[-1]}"


class FabricFailures:
    """The PCI bus ids of GPUs the fabric reports failed (``failed_devices()``), fetched at
    most every ``max_age_s``. A fabric that does not answer reports nothing (the last answer
    is kept): an fm-controller outage is no GPU fault."""

    def __init__(self, fabric: Any, max_age_s: float = 0.25) -> None:
        self.fabric = fabric
        self.max_age_s = max_age_s
        self._failed: frozenset[str] = frozenset()
        self._at: float | None = None

    def __call__(self) -> frozenset[str]:
        now = time.monotonic()
        if self._at is None or now - self._at > self.max_age_s:
            self._at = now
            try:
                failed = self.fabric.failed_devices()
            except Exception as exc:  # noqa: BLE001 - unknown is not failed
                log.warning("cannot ask the fabric for failed devices", extra={"error": str(exc)})
            else:
                self._failed = frozenset(bus_id_key(d.pci_bus_id) for d in failed.gpus)
        return self._failed


class NodeHealth:
    """Health of a GPU: still bound to vfio-pci, its VFIO group node
    ``<dev_root>/vfio/<group>`` present, its PCI config space readable with NVIDIA's vendor
    id (a GPU that fell off the bus reads 0xffff), and not reported failed by the fabric.

    Each check is evaluated afresh on every pass, so a GPU that recovers is healthy again.
    """

    def __init__(
        self,
        sysfs: Path,
        dev_root: Path = Path("/dev"),
        failed: Callable[[], frozenset[str]] | None = None,
    ) -> None:
        self.sysfs = Path(sysfs)
        self.dev_root = Path(dev_root)
        self.vfio = StillOnVfio(self.sysfs)
        self.failed = failed

    def problem(self, gpu: KubeletGpu) -> str | None:
        """Why ``gpu`` is unhealthy, or None."""
        if not self.vfio(gpu):
            return "not bound to vfio-pci"
        if gpu.iommu_group is None:
            return "no IOMMU group"
        if not (self.dev_root / "vfio" / str(gpu.iommu_group)).exists():
            return f"no device node {self.dev_root / 'vfio' / str(gpu.iommu_group)}"
        config = self.sysfs / "bus" / "pci" / "devices" / str(gpu.bdf) / "config"
        try:
            with open(config, "rb") as f:
                header = f.read(CONFIG_HEADER_BYTES)
        except OSError as exc:
            return f"config space unreadable: {exc.strerror}"
        if len(header) < CONFIG_HEADER_BYTES:
            return f"config space short: {len(header)} bytes"
        vendor = int.from_bytes(header[:2], "little")
        if vendor != NVIDIA_VENDOR:
            return f"config space reads vendor 0x{vendor:04x}"
        if self.failed is not None and bus_id_key(str(gpu.bdf)) in self.failed():
            return "reported failed by the fabric"
        return None

    def __call__(self, gpu: KubeletGpu) -> bool:
        return self.problem(gpu) is None


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
    from gpucaas.node import DevicePlugin, HttpEndpoint, NodeAnnotationReporter
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
        gpus = kubelet_gpus(discover(sysfs), load_module_map(map_path))
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

"""``/healthz`` and ``/metrics`` of a device plugin over HTTP."""

from __future__ import annotations

import logging
import threading

from gpucaas._health import health_server

from ._plugin import DevicePlugin

log = logging.getLogger("gpucaas.device-plugin")


class HttpEndpoint:
    """``/healthz`` and ``/metrics`` of a :class:`DevicePlugin` over HTTP.

    ``/healthz``: 200 once the plugin serves and is registered with the kubelet, 503
    otherwise, with a JSON body (:meth:`DevicePlugin.status`). ``/metrics``: the Prometheus
    text, always 200. Binds in the constructor (raises :class:`InvalidRequest` for a bad
    or busy address); :meth:`start` serves in a thread; :meth:`stop` is idempotent.
    """

    def __init__(self, plugin: DevicePlugin, listen: str) -> None:
        self.plugin = plugin
        self.server = health_server(
            listen, health=plugin.status, metrics=plugin.metrics.text, what="/metrics and /healthz"
        )
        self.port: int = self.server.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="device-plugin-http", daemon=True
        )
        self._thread.start()
        log.info("serving /metrics and /healthz", extra={"port": self.port})

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server.server_close()

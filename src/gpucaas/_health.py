"""The one small HTTP endpoint every gpucaas daemon serves: ``/healthz`` and ``/metrics``.

Shared by the fm-controller and the device plugin (Kubernetes probes and Prometheus scrape
the same two paths on both), so the handler is written once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gpucaas.errors import InvalidRequest

PROMETHEUS_TEXT = "text/plain; version=0.0.4"


def health_server(
    listen: str,
    *,
    health: Callable[[], Mapping[str, Any]],
    metrics: Callable[[], bytes | None],
    what: str = "metrics",
) -> ThreadingHTTPServer:
    """Bind (not yet serve) ``/healthz`` and ``/metrics`` on ``host:port`` (port 0 = any).

    ``health()`` returns a JSON-able mapping whose ``ok`` decides 200 or 503; ``metrics()``
    returns the Prometheus text, or None for 404. Raises :class:`InvalidRequest` naming
    ``what`` and the address when it cannot bind.
    """
    host, _, port = listen.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body: bytes | None = None
            if self.path == "/metrics":
                body, ctype, status = metrics(), PROMETHEUS_TEXT, 200
            elif self.path == "/healthz":
                report = health()
                body = json.dumps(report).encode()
                ctype, status = "application/json", 200 if report.get("ok") else 503
            if body is None:
                body, ctype, status = b"not found\n", "text/plain", 404
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    try:
        server = ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), Handler)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"cannot serve {what} on {listen}: {exc}") from exc
    server.daemon_threads = True
    return server

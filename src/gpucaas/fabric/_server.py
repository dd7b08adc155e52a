"""The fm-controller daemon: :class:`FabricController` served over gRPC, with a reconcile
loop, Prometheus metrics, a health endpoint and one-JSON-object-per-line logs.

It runs in the Service VM beside Fabric Manager (or on the host that owns the NVSwitches)
and is what node agents call. It listens on a unix socket or on loopback TCP; any other
TCP address needs a shared token (``authorization: Bearer <token>``), and it refuses to
start without one.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gpucaas._health import health_server
from gpucaas.errors import GpucaasError, InvalidRequest

from ._controller import ControllerStatus, FabricController, Observer
from ._errors import FabricManagerError, FabricManagerNotReady
from ._remote import grpc_target
from ._wire import abort_with, failed_to_pb, partition_to_pb
from .proto import fabric_pb2 as pb
from .proto import fabric_pb2_grpc as pb_grpc

log = logging.getLogger("gpucaas.fm-controller")


class ControllerMetrics(Observer):
    """Prometheus metrics of one controller, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.operations = Counter(
            "gpucaas_fm_operations_total",
            "Fabric operations by kind and result",
            ["op", "result"],
            registry=self.registry,
        )
        self.failures = Counter(
            "gpucaas_fm_failures_total",
            "Fabric Manager refusals by return code",
            ["code"],
            registry=self.registry,
        )
        self.replay_seconds = Histogram(
            "gpucaas_fm_replay_seconds",
            "Latency of replaying the desired set",
            registry=self.registry,
        )
        self.in_sync = Gauge(
            "gpucaas_fm_in_sync",
            "1 when FM's active set equals the desired set",
            registry=self.registry,
        )
        self.desired = Gauge(
            "gpucaas_fm_desired_partitions",
            "Partitions in the desired set",
            registry=self.registry,
        )

    def operation(self, op: str, error: FabricManagerError | None) -> None:
        self.operations.labels(op, "ok" if error is None else "error").inc()
        if error is not None:
            self.failures.labels(error.code.fm_name).inc()

    def replayed(self, seconds: float, partitions: int) -> None:
        self.replay_seconds.observe(seconds)
        log.info(
            "replayed the desired set",
            extra={"partitions": partitions, "seconds": round(seconds, 4)},
        )

    def synced(self, in_sync: bool, desired: int) -> None:
        self.in_sync.set(1 if in_sync else 0)
        self.desired.set(desired)


class _Servicer(pb_grpc.FabricServicer):
    def __init__(self, controller: FabricController, wake: threading.Event) -> None:
        self.controller = controller
        self.wake = wake

    def _do(self, context: Any, op: str, fn: Callable[[], Any], **fields: Any) -> Any:
        try:
            result = fn()
        except FabricManagerError as exc:
            if isinstance(exc, FabricManagerNotReady):
                self.wake.set()  # FM may have restarted: reconcile now, not at the next tick
            log.warning(
                "fabric operation refused", extra={"op": op, "code": exc.code.fm_name, **fields}
            )
            abort_with(context, exc)
        except GpucaasError as exc:
            abort_with(context, exc)
        log.info("fabric operation", extra={"op": op, **fields})
        return result

    def ListPartitions(self, request: Any, context: Any) -> Any:
        parts = self._do(context, "list", self.controller.list_partitions)
        return pb.ListPartitionsResponse(partitions=[partition_to_pb(p) for p in parts])

    def Activate(self, request: Any, context: Any) -> Any:
        pid = request.partition_id
        self._do(context, "activate", lambda: self.controller.activate(pid), partition=pid)
        return pb.Ack()

    def Deactivate(self, request: Any, context: Any) -> Any:
        pid = request.partition_id
        self._do(context, "deactivate", lambda: self.controller.deactivate(pid), partition=pid)
        return pb.Ack()

    def SetActivated(self, request: Any, context: Any) -> Any:
        ids = list(request.partition_ids)
        self._do(
            context, "set-activated", lambda: self.controller.set_activated(ids), partitions=ids
        )
        return pb.Ack()

    def FailedDevices(self, request: Any, context: Any) -> Any:
        return failed_to_pb(self._do(context, "failed-devices", self.controller.failed_devices))

    def Status(self, request: Any, context: Any) -> Any:
        return status_to_pb(self.controller.status())


def status_to_pb(s: ControllerStatus) -> Any:
    return pb.StatusResponse(
        board=s.board,
        model=s.model,
        backend=s.backend,
        desired=list(s.desired),
        fabric_active=list(s.fabric_active or ()),
        in_sync=s.in_sync,
        replays=s.replays,
        last_replay_seconds=s.last_replay_s,
        last_error=s.last_error,
    )


class _TokenInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        def deny(request: Any, context: Any) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        for key, value in details.invocation_metadata or ():
            if key == "authorization" and hmac.compare_digest(value.encode(), self._expected):
                return continuation(details)
        return self._deny


def _is_local(target: str) -> bool:
    if target.startswith("unix:"):
        return True
    host = target.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ControllerDaemon:
    """A running fm-controller; :meth:`stop` is idempotent and removes the socket."""

    controller: FabricController
    server: Any
    target: str
    http: ThreadingHTTPServer | None
    http_port: int | None
    _stop: threading.Event
    _threads: list[threading.Thread]
    _wake: threading.Event = field(default_factory=threading.Event)
    _stopping: threading.Lock = field(default_factory=threading.Lock)

    def stop(self, grace: float = 2.0) -> None:
        # A second caller (the signal handler's thread and the main loop both call this)
        # waits for the first to finish, so it never returns before the socket is gone.
        with self._stopping:
            if self._stop.is_set():
                return
            self._stop.set()
            self._wake.set()  # end the reconcile loop's wait now, not after an interval
            self._stop_now(grace)

    def _stop_now(self, grace: float) -> None:
        self.server.stop(grace).wait()
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
        for t in self._threads:
            t.join(timeout=5)
        if self.target.startswith("unix:"):
            Path(self.target.removeprefix("unix:")).unlink(missing_ok=True)

    def wait(self) -> None:
        self._stop.wait()


def serve_controller(
    controller: FabricController,
    listen: str,
    *,
    token: str | None = None,
    http_listen: str | None = None,
    reconcile_interval_s: float = 2.0,
) -> ControllerDaemon:
    """Start serving; returns once the socket answers. Raises :class:`InvalidRequest`
    for a bad or unsafe listen address."""
    target = grpc_target(listen)
    if not _is_local(target) and not token:
        raise InvalidRequest(
            f"refusing to listen on {listen} without a token: anything but a unix socket or "
            "loopback needs --token-file"
        )
    if target.startswith("unix:"):
        path = Path(target.removeprefix("unix:"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)  # a stale socket from a killed daemon
        except OSError as exc:
            raise InvalidRequest(f"cannot listen on {listen}: {exc}") from exc
    # Bind HTTP before gRPC starts, so a refusal leaves no running server or socket behind.
    http, http_port = _http_server(http_listen, controller) if http_listen else (None, None)
    interceptors = [_TokenInterceptor(token)] if token else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), interceptors=interceptors)
    wake = threading.Event()
    pb_grpc.add_FabricServicer_to_server(  # type: ignore[no-untyped-call]
        _Servicer(controller, wake), server
    )
    try:
        bound = server.add_insecure_port(target)
    except RuntimeError:  # what grpcio raises for a failed bind (older releases returned 0)
        bound = 0
    if bound == 0:
        if http is not None:
            http.server_close()
        raise InvalidRequest(f"cannot listen on {listen}: address in use or not permitted")
    if target.startswith("unix:"):
        os.chmod(target.removeprefix("unix:"), 0o660)
    server.start()
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_reconcile_loop,
            args=(controller, stop, wake, reconcile_interval_s),
            name="fm-reconcile",
            daemon=True,
        )
    ]
    if http is not None:
        threads.append(threading.Thread(target=http.serve_forever, name="fm-http", daemon=True))
    for t in threads:
        t.start()
    daemon = ControllerDaemon(controller, server, target, http, http_port, stop, threads, wake)
    log.info(
        "fm-controller serving",
        extra={"listen": target, "http_port": http_port, "board": controller.board},
    )
    return daemon


def _reconcile_loop(
    controller: FabricController, stop: threading.Event, wake: threading.Event, interval: float
) -> None:
    while not stop.is_set():
        try:
            controller.reconcile()
        except FabricManagerError as exc:
            log.warning("reconcile failed; retrying", extra={"code": exc.code.fm_name})
            interval_now = min(interval, 0.5)  # FM is coming back: poll fast for the window
        except Exception:  # noqa: BLE001 - the loop must survive anything and say so
            log.exception("reconcile crashed; retrying")
            interval_now = interval
        else:
            interval_now = interval
        wake.wait(interval_now)
        wake.clear()


def _http_server(listen: str, controller: FabricController) -> tuple[ThreadingHTTPServer, int]:
    metrics = controller.observer

    def health() -> dict[str, Any]:
        s = controller.status()
        return {
            "ok": s.in_sync,
            "in_sync": s.in_sync,
            "desired": list(s.desired),
            "fabric_active": list(s.fabric_active or ()),
            "last_error": s.last_error,
        }

    def text() -> bytes | None:
        return generate_latest(metrics.registry) if isinstance(metrics, ControllerMetrics) else None

    http = health_server(listen, health=health, metrics=text)
    return http, http.server_address[1]


def run_until_signalled(daemon: ControllerDaemon) -> None:
    """Block until SIGTERM or SIGINT, then stop cleanly."""

    def handler(signum: int, frame: Any) -> None:
        log.info("stopping", extra={"signal": signum})
        threading.Thread(target=daemon.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not daemon._stop.is_set():  # noqa: SLF001
        time.sleep(0.2)
    daemon.stop()

"""The control plane's composition root: API + store + scheduler + a backend, wired into one
process from a :class:`ControlPlaneConfig` (``gpucaas up`` is its command; tests build it too)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from gpucaas._files import make_private_dir, private_file, write_atomically
from gpucaas._wire import TenantCreate
from gpucaas.errors import InvalidRequest
from gpucaas.placement import DEFAULT_POLICY, get_policy
from gpucaas.topology import get_model

from ._app import create_app
from ._backend import Backend, TenantSpec
from ._errors import StateDirBusy
from ._executor import (
    SANDBOX_USER,
    EngineExecutor,
    Executor,
    ProcessExecutor,
    SandboxExecutor,
    _SupervisedExecutor,
)
from ._follow import MAX_FOLLOWERS, MAX_FOLLOWERS_PER_TENANT, Followers
from ._limits import (
    MAX_BODY_BYTES,
    MAX_COMMAND_BYTES,
    MAX_ENV_BYTES,
    MAX_HEADER_BYTES,
    MAX_LOG_BYTES,
    Limits,
    uvicorn_limits,
)
from ._local import LocalBackend
from ._scheduler import DEFAULT_GRACE_S, Retention, Scheduler
from ._store import Store, sqlite_url
from ._workers import (
    ServedBy,
    WakePipe,
    WorkerScheduler,
    fork_workers,
    listen_socket,
    stop_workers,
    worker_app,
)

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)

EXECUTORS = ("auto", "sandbox", "process", "podman", "docker")
BACKENDS = ("local", "kubernetes")
CREDENTIALS_FILE = "credentials.json"
SHUTDOWN_GRACE_S = 5
"""How long a stopping server waits for open requests before it cancels them; log
followers end at once (they watch :attr:`Followers.closing`)."""
DEMO_TENANT = "demo"


@dataclass
class ControlPlaneConfig:
    """What :class:`ControlPlane` builds: one field per ``gpucaas up`` option."""

    state_dir: Path
    listen: str = "127.0.0.1:8080"
    nodes: int = 100
    board: str = "hgx-h100-8"
    executor: str = "auto"
    """auto (podman or docker when their engine answers, else sandbox), sandbox (bubblewrap),
    podman, docker, or process (host processes, no isolation: ``gpucaas up`` asks for
    ``--unsafe-process`` with it)."""
    sandbox_user: str = SANDBOX_USER
    """The user the sandbox executor runs commands as when the control plane is root."""
    engine_args: list[str] = field(default_factory=list)
    """Extra options of ``podman run``/``docker run`` (e.g. ``--runtime runc``)."""
    cdi_kind: str | None = None
    """Pass each container's GPUs to the engine as CDI devices ``<cdi_kind>=<device ID>``; the
    host needs a CDI spec for them (``gpucaas node cdi generate``). None: environment only."""
    store_url: str | None = None
    policy: str = DEFAULT_POLICY
    grace_s: float = DEFAULT_GRACE_S
    backend: str = "local"
    """local (simulated boards on this machine) or kubernetes."""
    kubeconfig: str | None = None
    """For the kubernetes backend: a kubeconfig file (None: $KUBECONFIG or in-cluster)."""
    runtime_class: str = "kata-qemu-nvidia-gpu"
    tolerations: list[dict[str, str]] = field(default_factory=list)
    """Extra tolerations of tenant pods (e.g. a test cluster's fake-node taint)."""
    pod_cpu_per_gpu: str = "14"
    """For the kubernetes backend: CPU requested per GPU of a pod (a Kubernetes quantity)."""
    pod_memory_per_gpu: str | None = None
    """For the kubernetes backend: memory requested per GPU of a pod (a Kubernetes
    quantity); None: the VM's default, ``gpucaas.runtime.vm_memory_for``."""
    admin_token: str | None = None
    """Install this admin token on first start (stored as a hash) instead of making one and
    a demo tenant and printing them: for deployments, from a Secret."""
    max_followers_per_tenant: int = MAX_FOLLOWERS_PER_TENANT
    """Open ``logs?follow=true`` streams a tenant may hold at once (429 beyond)."""
    max_followers: int = MAX_FOLLOWERS
    """Open follow streams of all tenants together (429 beyond)."""

    max_body_bytes: int = MAX_BODY_BYTES
    """A request body's size limit (413 beyond it, checked before authentication)."""
    max_header_bytes: int = MAX_HEADER_BYTES
    """All request headers' size limit (431 beyond it, checked before authentication)."""
    max_env_bytes: int = MAX_ENV_BYTES
    """A container's env, names and values, in bytes (422 beyond it)."""
    max_command_bytes: int = MAX_COMMAND_BYTES
    """A container's command and args, in bytes (422 beyond it)."""
    max_log_bytes: int | None = MAX_LOG_BYTES
    """Local backend: keep at most this much of a container's log (the tail, with a marker
    line where the head was cut). None: keep all."""
    retain_finished: int | None = 1000
    """Finished containers kept per tenant (older ones are purged in the background, with
    their events and, on the local backend, their logs). None: no count limit."""
    retain_finished_days: float | None = 7.0
    """Finished containers are purged this long after they ended. None: no age limit."""
    api_workers: int = 1
    """Processes that serve the API (:mod:`._workers`). 1: this one, which also runs the
    scheduler and the backend, as before. N > 1: N forked workers on the listening socket,
    and this process serves only what they forward to it (admin routes, /healthz, /metrics)."""

    def limits(self) -> Limits:
        return Limits(
            max_body_bytes=self.max_body_bytes,
            max_header_bytes=self.max_header_bytes,
            max_env_bytes=self.max_env_bytes,
            max_command_bytes=self.max_command_bytes,
        )

    def host_port(self) -> tuple[str, int]:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise InvalidRequest(f"--listen {self.listen!r} is not HOST:PORT, e.g. 127.0.0.1:8080")
        return host.strip("[]") or "127.0.0.1", int(port)


def _engine_works(binary: str) -> bool:
    try:
        return (
            subprocess.run(
                [binary, "info"], capture_output=True, timeout=10, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def make_executor(
    name: str,
    *,
    engine_args: Sequence[str] = (),
    cdi_kind: str | None = None,
    state_dir: Path | None = None,
    sandbox_user: str = SANDBOX_USER,
) -> Executor:
    """The executor by name; ``auto`` takes podman, then docker, when their engine answers,
    else the sandbox executor (bubblewrap); never the unisolated process executor.

    ``engine_args`` and ``cdi_kind`` are those of :class:`EngineExecutor`. The sandbox and
    process executors have no engine to pass them to: asking for either with them raises
    :class:`InvalidRequest`, as does a bad ``cdi_kind`` (``CdiError``). ``state_dir`` is
    hidden from sandboxes, which run as ``sandbox_user`` when this process is root.

    Raises:
        SandboxUnavailable: ``sandbox`` (or ``auto`` without an engine) and bubblewrap is
            missing or cannot make a sandbox here; the message says what to install.
    """
    if name not in EXECUTORS:
        raise InvalidRequest(f"--executor {name!r} is not one of {', '.join(EXECUTORS)}")
    if name in ("podman", "docker"):
        return EngineExecutor.from_path(name, engine_args=engine_args, cdi_kind=cdi_kind)
    if name == "auto":
        for engine in ("podman", "docker"):
            binary = shutil.which(engine)
            if binary and _engine_works(binary):
                return EngineExecutor(engine, binary, engine_args=engine_args, cdi_kind=cdi_kind)
    if engine_args or cdi_kind is not None:
        option = "--engine-arg" if engine_args else "--cdi-kind"
        if name == "auto":
            why = "no working podman or docker was found; install one"
        else:
            why = f"the executor is {name!r}; start with --executor podman or docker"
        raise InvalidRequest(f"{option} needs a container engine, but {why}")
    if name == "process":
        return ProcessExecutor()
    hide = () if state_dir is None else (state_dir,)
    return SandboxExecutor.from_path(user=sandbox_user, hide=hide)


def parse_toleration(text: str) -> dict[str, str]:
    """``KEY[=VALUE]:EFFECT`` (as ``kubectl taint`` writes taints) → a toleration."""
    head, sep, effect = text.rpartition(":")
    key, eq, value = head.partition("=")
    effects = ("NoSchedule", "PreferNoSchedule", "NoExecute")
    if not sep or not key or effect not in effects:
        raise InvalidRequest(
            f"--toleration {text!r} is not KEY[=VALUE]:EFFECT with EFFECT one of "
            f"{', '.join(effects)}, e.g. kwok.x-k8s.io/node=fake:NoSchedule"
        )
    if eq:
        return {"key": key, "operator": "Equal", "value": value, "effect": effect}
    return {"key": key, "operator": "Exists", "effect": effect}


def _nothing() -> None:
    return None


def _toleration(spec: dict[str, str]) -> Any:
    from lightkube.models.core_v1 import Toleration

    return Toleration.from_dict(spec)


def _lock_state_dir(state_dir: Path) -> IO[bytes]:
    """One process per state directory: its containers and fabric state are that process's."""
    private_file(state_dir / "lock")
    handle = (state_dir / "lock").open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StateDirBusy(state_dir) from None
    return handle


@dataclass
class Credentials:
    url: str
    admin_token: str
    tenant: str
    tenant_token: str


class ControlPlane:
    """Everything ``gpucaas up`` runs, startable in-process (tests use it too)."""

    def __init__(self, config: ControlPlaneConfig, executor: Executor | None = None) -> None:
        if config.nodes < 1:
            raise InvalidRequest(f"--nodes must be at least 1, got {config.nodes}")
        if config.backend not in BACKENDS:
            raise InvalidRequest(
                f"--backend {config.backend!r} is not one of {', '.join(BACKENDS)}"
            )
        if config.max_followers_per_tenant < 1 or config.max_followers < 1:
            raise InvalidRequest(
                "--max-followers-per-tenant and --max-followers must be at least 1, got "
                f"{config.max_followers_per_tenant} and {config.max_followers}"
            )
        self.config = config
        model = get_model(config.board)
        get_policy(config.policy)
        if config.backend == "local":
            executor = executor or make_executor(
                config.executor,
                engine_args=config.engine_args,
                cdi_kind=config.cdi_kind,
                state_dir=config.state_dir,
                sandbox_user=config.sandbox_user,
            )
        make_private_dir(config.state_dir)
        self._lock_file = _lock_state_dir(config.state_dir)
        try:
            self.store = Store(config.store_url or sqlite_url(config.state_dir))
        except BaseException:
            self._lock_file.close()
            raise
        self.backend: Backend
        # What a backend needs started and closed beyond the Backend calls (kube: its watches).
        self._backend_start: Callable[[], None] = _nothing
        self._backend_close: Callable[[], None] = _nothing
        if config.backend == "local":
            assert executor is not None
            if isinstance(executor, _SupervisedExecutor):
                executor.max_log_bytes = config.max_log_bytes
            self.backend = LocalBackend(config.state_dir, model, config.nodes, executor)
        else:
            from ._kubernetes import KubernetesBackend, PodDefaults

            try:
                kube = KubernetesBackend.from_kubeconfig(
                    config.kubeconfig,
                    runtime_class=config.runtime_class,
                    defaults=PodDefaults(
                        cpu_per_gpu=config.pod_cpu_per_gpu,
                        memory_per_gpu=config.pod_memory_per_gpu,
                        tolerations=[_toleration(t) for t in config.tolerations],
                    ),
                    tenants=self.tenant_spec,
                )
            except BaseException:
                self.store.close()
                self._lock_file.close()
                raise
            self.backend = kube
            self._backend_start, self._backend_close = kube.start_watches, kube.close
        self.scheduler = Scheduler(
            self.store,
            self.backend,
            policy=config.policy,
            grace_s=config.grace_s,
            holder=f"{socket.gethostname()}:{config.state_dir.resolve()}",
            retention=Retention(
                keep_per_tenant=config.retain_finished,
                max_age_s=(
                    None
                    if config.retain_finished_days is None
                    else config.retain_finished_days * 86400.0
                ),
            ),
            on_purged=self.backend.forget if isinstance(self.backend, LocalBackend) else None,
        )
        self.followers = Followers(config.max_followers_per_tenant, config.max_followers)
        self.app = create_app(
            self.store,
            self.scheduler,
            self.backend,
            limits=config.limits(),
            followers=self.followers,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.notice: str | None = None
        """What :meth:`bootstrap` did that the operator must hear of (``gpucaas up`` prints it)."""

    def tenant_spec(self, name: str) -> TenantSpec:
        row = self.store.tenant(name)
        return TenantSpec(
            name=row["name"],
            max_gpus=row["max_gpus"],
            max_containers=row["max_containers"],
            nfs_exports=tuple(row["nfs_exports"]),
        )

    def start(self) -> None:
        self._backend_start()
        self.scheduler.lead()
        self._thread = threading.Thread(
            target=self.scheduler.run, args=(self._stop,), name="scheduler", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """End log followers, join the scheduler (10 s at most), release the scheduler
        lease and close the store."""
        self.followers.close()
        self._stop.set()
        self.scheduler.wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.scheduler.close()
            self.scheduler.resign()
            self._backend_close()
        finally:
            self.store.close()
            self._lock_file.close()

    def bootstrap(self, url: str) -> Credentials | None:
        """On first start: an admin token and a demo tenant, written to the state dir (0600).

        Later, when no admin token is active any more, ``GPUCAAS_ADMIN_TOKEN`` restores access
        (and :attr:`notice` says so); without it :attr:`notice` says how."""
        if self.store.has_admin_token():
            return None
        started_before = self.store.has_admin_token(include_revoked=True)
        if self.config.admin_token is not None:
            row = self.store.install_admin_token(
                self.config.admin_token, "from GPUCAAS_ADMIN_TOKEN"
            )
            if started_before:
                self.notice = (
                    "no active admin token was left: admin access restored with "
                    f"GPUCAAS_ADMIN_TOKEN (token {row['id']})"
                )
                log.warning("%s", self.notice)
            return None
        if started_before:
            self.notice = (
                "no active admin token is left (all were revoked): restart with "
                "GPUCAAS_ADMIN_TOKEN=gpc_... in the environment to restore admin access"
            )
            log.warning("%s", self.notice)
            return None
        admin_secret, _ = self.store.create_token(None, "created by gpucaas up")
        _, tenant_secret, _ = self.store.create_tenant(
            TenantCreate(name=DEMO_TENANT, max_gpus=16, max_containers=32, nfs_exports=[])
        )
        creds = Credentials(url, admin_secret, DEMO_TENANT, tenant_secret)
        path = self.config.state_dir / CREDENTIALS_FILE
        write_atomically(path, json.dumps(creds.__dict__, indent=2) + "\n")
        os.chmod(path, 0o600)
        return creds


def _uvicorn_server(config: uvicorn.Config, on_signal: Callable[[], None]) -> uvicorn.Server:
    """uvicorn's server, except that SIGTERM and SIGINT only ask it to stop.

    uvicorn re-raises a captured signal once it has shut down; for SIGTERM (what
    Kubernetes and systemd send) that killed the process before :meth:`ControlPlane.stop`
    ran, so the scheduler lease stayed held until its TTL ran out. Here both signals end
    :func:`serve` normally, the plane stops fully, and the exit status is 0. ``on_signal``
    runs first (it ends the log followers, which would otherwise hold the shutdown).
    """
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            on_signal()
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server(config)


def _serve_worker(
    plane: ControlPlane, public: socket.socket, leader_url: str, wakes: WakePipe
) -> None:
    """A forked API worker (:mod:`._workers`): its own store connection, log followers and
    app on the inherited socket, until SIGTERM or SIGINT."""
    import uvicorn

    config = plane.config
    wakes.close_reader()
    store = Store(plane.store.url, migrate=False)
    try:
        scheduler = WorkerScheduler(
            store, plane.backend, policy=config.policy, grace_s=config.grace_s, wakes=wakes
        )
        followers = Followers(config.max_followers_per_tenant, config.max_followers)
        app = create_app(
            store, scheduler, plane.backend, limits=config.limits(), followers=followers
        )
        server = _uvicorn_server(
            uvicorn.Config(
                worker_app(app, leader_url, config.limits()),
                log_level="warning",
                access_log=False,
                **uvicorn_limits(config.limits()),
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
            ),
            followers.close,
        )
        server.run(sockets=[public])
    finally:
        store.close()


def serve(config: ControlPlaneConfig, *, announce: Any = print) -> None:
    """Run until SIGINT or SIGTERM, then stop everything (followers ended, requests given
    :data:`SHUTDOWN_GRACE_S`, scheduler joined, lease released) and return."""
    import uvicorn

    host, port = config.host_port()
    if config.api_workers < 1:
        raise InvalidRequest(f"--api-workers must be at least 1, got {config.api_workers}")
    if config.api_workers > 1 and config.backend != "local":
        # Forked workers would share the Kubernetes client's connections; scale that backend
        # with replicas on PostgreSQL instead (each its own process, the lease elects one).
        raise InvalidRequest(
            f"--api-workers {config.api_workers} needs --backend local; with the kubernetes "
            "backend run several replicas on one PostgreSQL store instead"
        )
    # Everything this process and its supervisors create is the owner's alone (the state files
    # set their modes themselves too; this covers what SQLite or a library makes).
    os.umask(0o077)
    plane = ControlPlane(config)
    url = f"http://{host}:{port}"
    try:
        creds = plane.bootstrap(url)
        app: Any = plane.app
        sockets: list[socket.socket] | None = None
        workers: list[int] = []
        if config.api_workers > 1:
            # Bound once, forked before any thread starts (plane.start), served by all.
            public = listen_socket(host, port)
            internal = listen_socket("127.0.0.1", 0)
            leader_url = f"http://127.0.0.1:{internal.getsockname()[1]}"
            wakes = WakePipe()
            workers = fork_workers(
                config.api_workers, lambda: _serve_worker(plane, public, leader_url, wakes)
            )
            # The scheduler's process serves only what workers forward: its passes (and the
            # GIL they hold) no longer delay the tenants' requests.
            public.close()
            wakes.close_writer()
            wakes.relay(lambda stops: plane.scheduler.wake(stops=stops))
            sockets = [internal]
            app = ServedBy(plane.app)
    except BaseException:
        plane.stop()
        raise
    plane.start()
    if isinstance(plane.backend, LocalBackend):
        executor = plane.backend.executor.name
        announce(
            f"gpucaas up: {config.nodes} × {config.board}, policy {config.policy}, executor "
            f"{executor}, state in {config.state_dir}"
        )
        if config.cdi_kind is not None:
            announce(
                f"  GPUs go to containers as CDI devices {config.cdi_kind}=0..."
                f"{plane.backend.model.gpu_count - 1} (from this host's CDI spec)"
            )
    else:
        executor = "kubernetes"
        boards = len(plane.backend.boards())
        announce(
            f"gpucaas up: Kubernetes backend, {boards} gpucaas nodes, policy {config.policy}, "
            f"runtime class {config.runtime_class}, state in {config.state_dir}"
        )
    if executor == "process":
        announce("  executor 'process': commands run as host processes, NO isolation (dev only)")
    elif executor == "sandbox":
        announce(
            "  executor 'sandbox': each command runs in a bubblewrap sandbox as an unprivileged "
            "user (read-only host, private /tmp, no network, state dir hidden); not a VM"
        )
    if plane.notice is not None:
        announce(f"  {plane.notice}")
    if creds is not None:
        announce(f"  admin token (shown once; also in {config.state_dir / CREDENTIALS_FILE}):")
        announce(f"    {creds.admin_token}")
        announce(f"  tenant '{creds.tenant}' token:")
        announce(f"    {creds.tenant_token}")
    announce(f"  dashboard: {url}/    API: {url}/v1    OpenAPI: {url}/openapi.json")
    announce("  next:")
    announce(f"    export GPUCAAS_URL={url} GPUCAAS_TOKEN=<the tenant token>")
    announce("    gpucaas run --gpus 2 --wait docker.io/library/busybox -- sh -c 'echo hi'")
    announce("    gpucaas ps; gpucaas logs ID")
    if workers:
        announce(
            f"  API served by {config.api_workers} worker processes; this one runs the "
            "scheduler and answers the admin routes they forward"
        )

    def on_signal() -> None:
        plane.followers.close()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    server = _uvicorn_server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            **uvicorn_limits(config.limits()),
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        ),
        on_signal,
    )
    try:
        server.run(sockets=sockets)
    finally:
        try:
            stop_workers(workers)
        finally:
            plane.stop()
    announce("gpucaas up: stopped (scheduler lease released)")

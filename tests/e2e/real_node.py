"""A real HGX node for end-to-end tests: kubelet + containerd + runc from the test bed, and
gpucaas's node agent on it as production runs it, over fake hardware.

What is real: kube-apiserver/scheduler/controller-manager, the kubelet, containerd 2.x with
CDI, runc, CNI, our fm-controller (``gpucaas fabric serve``, simulated Fabric Manager behind
it) and our device plugin (``gpucaas node device-plugin``), each its own process talking over
unix sockets. What is fake: the GPUs (a sysfs fixture tree of an HGX H100 board and
``/dev/vfio/<group>`` character devices made with ``mknod … c 1 3``, i.e. /dev/null's numbers)
and the VM (the Kata RuntimeClass handler is mapped to runc).

Only one such node can run on a machine: the kubelet's device-plugin socket is fixed at
``/var/lib/kubelet/device-plugins/kubelet.sock``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from lightkube import Client, KubeConfig, codecs
from lightkube.models.authentication_v1 import BoundObjectReference, TokenRequestSpec
from lightkube.models.core_v1 import Container, PodSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node, Pod, ServiceAccount

from gpucaas.fabric import RemoteFabric
from gpucaas.node import KubeletGpu, kubelet_gpus, modulemap
from gpucaas.node.discovery import discover
from gpucaas.node.modulemap import parse_nvidia_smi_xml
from gpucaas.node.proto import podresources_v1_pb2 as pr
from gpucaas.node.proto import podresources_v1_pb2_grpc as pr_grpc
from tests.e2e.kube_helpers import meta, wait_for
from tests.live_plane import free_port
from tests.node import sysfs_fixture

REPO = Path(__file__).resolve().parents[2]
TESTBED = REPO / "scripts" / "k8s-testbed"
NODE_TESTS = REPO / "tests" / "node"
SMI_XML = NODE_TESTS / "data" / "nvidia-smi-hgx-h100.xml"
KUBELET_ROOT = Path("/var/lib/kubelet")
VFIO_DIR = Path("/dev/vfio")
GPU = "nvidia.com/gpu"
FAKE_MAJOR_MINOR = (1, 3)  # /dev/null's: opening the node does nothing harmful


def missing_prerequisite() -> str | None:
    """Why a real node cannot run here, or None."""
    if os.geteuid() != 0:
        return "a real node needs root (containerd, runc, kubelet, mknod)"
    if shutil.which("runc") is None:
        return "runc is not installed: apt-get install runc"
    if not any(
        (Path(d) / "bridge").exists() and (Path(d) / "host-local").exists()
        for d in ("/usr/lib/cni", "/opt/cni/bin")
    ):
        return "the CNI plugins are not installed: apt-get install containernetworking-plugins"
    busybox = shutil.which("busybox")
    if busybox is None or b"not a dynamic executable" not in _ldd(busybox):
        return "no static busybox for the test image: apt-get install busybox-static"
    if (
        subprocess.run(["pgrep", "-x", "-r", "R,S,D,T", "kubelet"], capture_output=True).returncode
        == 0
    ):
        return "a kubelet already runs on this machine"
    return None


def _ldd(path: str) -> bytes:
    out = subprocess.run(["ldd", path], capture_output=True, env={**os.environ, "LC_ALL": "C"})
    return out.stdout + out.stderr


@dataclass
class RealNode:
    """The started node: where everything is and handles on what the tests drive."""

    workdir: Path
    env: dict[str, str]
    kubeconfig: Path
    gpus: tuple[KubeletGpu, ...]
    fm_socket: Path
    plugin_http: str
    created_nodes: list[Path] = field(default_factory=list)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    plugin_args: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.env["NODE_NAME"]

    @property
    def cdi_dir(self) -> Path:
        return Path(self.env["CDI_DIR"])

    @property
    def image(self) -> str:
        return self.env["BUSYBOX_IMAGE"]

    def client(self) -> Client:
        config = KubeConfig.from_file(str(self.kubeconfig)).get()
        return Client(config, field_manager="gpucaas-e2e")

    # -- the fabric and the device plugin --------------------------------------------------

    def active_partitions(self) -> set[int]:
        with RemoteFabric(str(self.fm_socket)) as fabric:
            return {int(p.id) for p in fabric.list_partitions() if p.active}

    def allocatable_gpus(self, kube: Client) -> int:
        node = kube.get(Node, self.name)
        assert node.status is not None
        return int((node.status.allocatable or {}).get(GPU, "0"))

    def plugin_metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.plugin_http}/metrics", timeout=5) as reply:
            return str(reply.read().decode())

    def plugin_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.plugin_http}/healthz", timeout=2) as r:
                return int(r.status) == 200
        except OSError:
            return False

    def pod_devices(self, namespace: str, pod: str) -> dict[str, list[str]]:
        """The kubelet's PodResources ``Get``: container name → device IDs of our resource,
        as the Kata shim asks for them before cold-plugging."""
        sock = KUBELET_ROOT / "pod-resources" / "kubelet.sock"
        with grpc.insecure_channel(f"unix://{sock}") as channel:
            reply = pr_grpc.PodResourcesListerStub(channel).Get(
                pr.GetPodResourcesRequest(pod_name=pod, pod_namespace=namespace), timeout=10
            )
        out: dict[str, list[str]] = {}
        for container in reply.pod_resources.containers:
            for dev in container.devices:
                if dev.resource_name == GPU:
                    out.setdefault(container.name, []).extend(dev.device_ids)
        return out

    def cdi_device_nodes(self, qualified: str) -> list[str]:
        """Resolve a fully qualified CDI name (``nvidia.com/gpu=3``) in the node's spec dir to
        the device node paths its edits add, as a CDI consumer does."""
        kind, _, name = qualified.partition("=")
        found: list[str] = []
        for spec_file in sorted(self.cdi_dir.glob("*.json")):
            spec = json.loads(spec_file.read_text())
            if spec["kind"] != kind:
                continue
            common = spec.get("containerEdits", {}).get("deviceNodes", [])
            for device in spec["devices"]:
                if device["name"] == name:
                    edits = device["containerEdits"].get("deviceNodes", [])
                    found += [n["path"] for n in edits + common]
        return found

    def shim_binaries(self) -> set[str]:
        """The executables of the containerd shims serving this node's containerd (their
        command lines name its socket), read from /proc."""
        socket = self.env["CONTAINERD_ADDRESS"]
        found = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                exe = os.readlink(proc / "exe")
            except OSError:  # gone meanwhile, or a kernel thread
                continue
            if b"containerd-shim" in argv[0] and socket.encode() in argv:
                found.add(exe)
        return found

    def restart_kubelet(self) -> None:
        subprocess.run(
            [str(TESTBED), "restart-kubelet", str(self.workdir)],
            check=True,
            capture_output=True,
            timeout=180,
        )

    # -- fake GPUs --------------------------------------------------------------------------

    def vfio_node(self, gpu: KubeletGpu) -> Path:
        return VFIO_DIR / str(gpu.iommu_group)

    def remove_vfio_node(self, gpu: KubeletGpu) -> None:
        self.vfio_node(gpu).unlink()

    def make_vfio_node(self, gpu: KubeletGpu) -> None:
        _mknod(self.vfio_node(gpu))


def _mknod(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(*FAKE_MAJOR_MINOR))


def _gpucaas(*args: str) -> list[str]:
    """The installed ``gpucaas`` command (next to this interpreter), as an operator runs it."""
    return [str(Path(sys.executable).with_name("gpucaas")), *args]


def _start(node: RealNode, name: str, argv: list[str]) -> None:
    with (node.workdir / f"{name}.log").open("ab") as log:  # the child keeps its own copy
        node.procs[name] = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(node: RealNode, name: str) -> None:
    proc = node.procs.pop(name, None)
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


NODE_LOGS = ("kubelet.log", "containerd.log")
"""The logs that say why a pod did not run (shim, CNI, CDI, devices): in every real-node
failure (tests/e2e/conftest.py), and longer than the others in :func:`log_tails`."""
NODE_LOG_LINES = 60


def log_tail(log: Path, lines: int) -> str:
    """The last ``lines`` lines of one log, or a line saying it is missing."""
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return f"({log} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def log_tails(workdir: Path, lines: int = 30) -> str:
    """The tails of the test bed's logs in ``workdir``: ``lines`` of each, and
    ``NODE_LOG_LINES`` of the kubelet's and containerd's."""
    parts = []
    for log in sorted(workdir.glob("*.log")):
        if log.name == "pki.log":  # openssl's progress dots
            continue
        n = max(lines, NODE_LOG_LINES) if log.name in NODE_LOGS else lines
        parts.append(f"----- {log.name} (last {n} lines) -----\n{log_tail(log, n)}")
    return "\n".join(parts) + "\n"


@contextmanager
def real_node(*, runtime_config: bool = True) -> Iterator[RealNode]:
    """Start the test bed with ``--node``, then the node agent as a DaemonSet would run it:
    the module-ID map, the CDI spec in containerd's spec dir, the fm-controller and the device
    plugin; yield once the node advertises 8 healthy GPUs. Everything is stopped and removed
    at exit (the /dev/vfio nodes made here too).

    runtime_config: containerd imports the drop-in ``gpucaas node runtime-config containerd
    --test-runc-alias`` writes (the Kata handler mapped to runc, CDI on, this node's spec
    dir), so the node runs our generated configuration; False: the test bed's own mapping.
    """
    workdir = Path(tempfile.mkdtemp(prefix="gpucaas-node-"))
    env_vars = {**os.environ, "GPUCAAS_K8S_OWNER_PID": str(os.getpid())}
    if runtime_config:
        dropin = workdir / "gpucaas-runtime.toml"
        subprocess.run(
            _gpucaas(
                "node",
                "runtime-config",
                "containerd",
                "--containerd",
                "2",
                "--test-runc-alias",
                "--cdi-spec-dir",
                str(workdir / "cdi"),
                "--output",
                str(dropin),
            ),
            check=True,
            capture_output=True,
        )
        env_vars["GPUCAAS_CONTAINERD_DROPIN"] = str(dropin)
    t0 = time.monotonic()
    node: RealNode | None = None
    try:
        proc = subprocess.run(
            [str(TESTBED), "start", str(workdir), "--node"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env=env_vars,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"scripts/k8s-testbed start --node failed (exit {proc.returncode}):\n"
                f"{proc.stderr[-6000:]}"
            )
        started_s = time.monotonic() - t0
        env = dict(
            line.split("=", 1)
            for line in (workdir / "testbed.env").read_text().splitlines()
            if "=" in line
        )
        env["CLUSTER_START_S"] = f"{started_s:.1f}"
        sysfs = sysfs_fixture.make_hgx_h100_tree(workdir / "sys")
        module_map = parse_nvidia_smi_xml(SMI_XML)
        map_path = workdir / "module-map.json"
        modulemap.save(module_map, map_path)
        gpus = kubelet_gpus(discover(sysfs), module_map)
        node = RealNode(
            workdir=workdir,
            env=env,
            kubeconfig=Path(env["KUBECONFIG"]),
            gpus=gpus,
            fm_socket=workdir / "fm.sock",
            plugin_http=f"127.0.0.1:{free_port()}",
        )
        for gpu in gpus:
            path = node.vfio_node(gpu)
            if path.exists():
                raise AssertionError(
                    f"{path} exists on this machine; refusing to fake GPUs over it"
                )
            _mknod(path)
            node.created_nodes.append(path)
        container = VFIO_DIR / "vfio"
        if not container.exists():
            _mknod(container)
            node.created_nodes.append(container)
        subprocess.run(
            _gpucaas(
                "node",
                "cdi",
                "generate",
                "--dir",
                str(node.cdi_dir),
                "--map",
                str(map_path),
                "--sysfs",
                str(sysfs),
            ),
            check=True,
            capture_output=True,
        )
        _start(
            node,
            "fm-controller",
            _gpucaas(
                "fabric",
                "serve",
                "--backend",
                "simulated",
                "--listen",
                str(node.fm_socket),
                "--state-dir",
                str(workdir / "fabric"),
                "--http-listen",
                f"127.0.0.1:{free_port()}",
                "--reconcile-interval",
                "0.5",
                "--name",
                node.name,
            ),
        )
        wait_for("the fm-controller socket", node.fm_socket.exists, 30)
        agent_kubeconfig = _node_agent_identity(node)
        node.plugin_args = _gpucaas(
            "node",
            "device-plugin",
            "--node-name",
            node.name,
            "--kubeconfig",
            str(agent_kubeconfig),
            "--kubelet-dir",
            str(KUBELET_ROOT),
            "--fabric",
            str(node.fm_socket),
            "--sysfs",
            str(sysfs),
            "--module-map",
            str(map_path),
            "--dev-root",
            "/dev",
            "--health-interval",
            "0.2",
            "--http-listen",
            node.plugin_http,
        )
        _start(node, "device-plugin", node.plugin_args)
        kube = node.client()
        try:
            wait_for("8 allocatable GPUs on the node", lambda: node.allocatable_gpus(kube) == 8, 60)
        finally:
            kube.close()
        node.env["NODE_READY_S"] = f"{time.monotonic() - t0:.1f}"
        _check_own_shim(node)
        yield node
    except BaseException:
        sys.stderr.write(log_tails(workdir))
        raise
    finally:
        if node is not None:
            for name in ("device-plugin", "fm-controller"):
                _stop(node, name)
            for path in node.created_nodes:
                path.unlink(missing_ok=True)
            if VFIO_DIR.exists() and not any(VFIO_DIR.iterdir()):
                VFIO_DIR.rmdir()
        subprocess.run([str(TESTBED), "stop", str(workdir)], check=False, timeout=120)
        if not os.environ.get("GPUCAAS_K8S_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)


def _check_own_shim(node: RealNode) -> None:
    """The node's pods run under the test bed's own runc shim: a distribution's containerd
    (Debian's 1.6 puts an older ``containerd-shim-runc-v2`` in /usr/bin) must not lend ours
    its shim, which fails every pod ("failed to start shim")."""
    kube = node.client()
    try:
        wait_for(
            "the node agent's stand-in pod to run",
            lambda: (
                (pod := kube.get(Pod, STAND_IN, namespace=AGENT_NAMESPACE)).status is not None
                and pod.status.phase == "Running"
            ),
            60,
        )
    finally:
        kube.close()
    ours = str(Path(node.env["CONTAINERD_BIN_DIR"]) / "containerd-shim-runc-v2")
    shims = node.shim_binaries()
    if shims != {ours}:
        raise AssertionError(f"the node's containerd runs the shims {sorted(shims)}, not {ours}")


DEPLOY = REPO / "deploy"
AGENT_NAMESPACE = "gpucaas-system"
AGENT_ACCOUNT = "gpucaas-node-agent"
STAND_IN = "node-agent-stand-in"


def _node_agent_identity(node: RealNode) -> Path:
    """The node agent's own identity, as the DaemonSet gives it: deploy/'s namespace, service
    account, RBAC and admission policy applied to the cluster, a stand-in pod of that account
    on this node, and a token bound to that pod (so the API server knows the agent's node).
    Returns a kubeconfig with that token."""
    kube = node.client()
    try:
        for name in (
            "namespace.yaml",
            "serviceaccount.yaml",
            "rbac.yaml",
            "node-agent-policy.yaml",
        ):
            for obj in codecs.load_all_yaml((DEPLOY / name).read_text()):
                kube.create(obj)
        kube.create(
            Pod(
                metadata=ObjectMeta(name=STAND_IN, namespace=AGENT_NAMESPACE),
                spec=PodSpec(
                    nodeName=node.name,
                    serviceAccountName=AGENT_ACCOUNT,
                    automountServiceAccountToken=False,
                    containers=[Container(name="pause", image=node.env["PAUSE_IMAGE"])],
                ),
            )
        )
        pod = kube.get(Pod, STAND_IN, namespace=AGENT_NAMESPACE)
        token = kube.create(
            ServiceAccount.Token(
                metadata=ObjectMeta(name=AGENT_ACCOUNT, namespace=AGENT_NAMESPACE),
                spec=TokenRequestSpec(
                    audiences=[],
                    expirationSeconds=3600,
                    boundObjectRef=BoundObjectReference(
                        kind="Pod",
                        apiVersion="v1",
                        name=STAND_IN,
                        uid=meta(pod).uid,
                    ),
                ),
            ),
            AGENT_ACCOUNT,
            namespace=AGENT_NAMESPACE,
        )
    finally:
        kube.close()
    assert token.status is not None
    path = node.workdir / "node-agent.kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "testbed",
                "cluster": {
                    "server": node.env["K8S_API_URL"],
                    "certificate-authority": str(node.workdir / "pki" / "ca.crt"),
                },
            }
        ],
        "users": [{"name": AGENT_ACCOUNT, "user": {"token": token.status.token}}],
        "contexts": [{"name": "agent", "context": {"cluster": "testbed", "user": AGENT_ACCOUNT}}],
        "current-context": "agent",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def agent_client(node: RealNode) -> Client:
    """A client with the node agent's identity (its pod-bound service-account token)."""
    config = KubeConfig.from_file(str(node.workdir / "node-agent.kubeconfig")).get()
    return Client(config, field_manager="gpucaas-node-agent")


def restart_plugin(node: RealNode) -> None:
    _stop(node, "device-plugin")
    _start(node, "device-plugin", node.plugin_args)

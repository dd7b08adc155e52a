"""A real Kubernetes control plane for end-to-end tests.

``kube_cluster`` (session scope) gives a :class:`KubeCluster`:

* ``GPUCAAS_TEST_KUBECONFIG`` set: that cluster is used as is (any conformant cluster; the tests
  create and delete their own objects, so use a throwaway one);
* otherwise ``scripts/k8s-testbed build`` builds etcd, kube-apiserver, kube-controller-manager,
  kube-scheduler and kwok from source with Go (minutes the first time, cached afterwards; its
  progress is shown on the terminal) and ``scripts/k8s-testbed start DIR --kwok`` runs them on
  loopback for the session; ``stop`` at the end;
* neither Go nor cached binaries: the tests skip, saying how to get them.

Anything else that goes wrong fails the tests, with the tails of the components' logs.
See docs/k8s-testbed.md.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client, KubeConfig, codecs
from lightkube.models.core_v1 import NodeSpec, NodeStatus, Taint
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node

from gpucaas.runtime import runtime_class

REPO = Path(__file__).resolve().parents[2]
TESTBED = REPO / "scripts" / "k8s-testbed"
KUBECONFIG_ENV = "GPUCAAS_TEST_KUBECONFIG"
KEEP_ENV = "GPUCAAS_K8S_KEEP"  # set to keep the testbed's directory (logs) after the session
NO_GO = 3  # k8s-testbed's exit status when Go is missing
HOW_TO = (
    "install Go >= 1.26 (scripts/k8s-testbed build then builds a control plane from source), "
    f"or set {KUBECONFIG_ENV} to the kubeconfig of a throwaway cluster"
)


@dataclass(frozen=True)
class KubeCluster:
    kubeconfig: Path
    api_url: str
    # The Kubernetes version we built and started (e.g. "v1.37.2"); None for an external cluster.
    built_version: str | None = None
    # The testbed's directory (logs, pki, pids); None for an external cluster.
    workdir: Path | None = None


def _server_of(kubeconfig: Path) -> str:
    from lightkube import KubeConfig

    config = KubeConfig.from_file(str(kubeconfig)).get()
    assert config is not None, f"{kubeconfig} has no current context"
    return str(config.cluster.server)


def _testbed_env() -> dict[str, str]:
    out = subprocess.run(
        [str(TESTBED), "env"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _build(pytestconfig: pytest.Config) -> None:
    """Run ``k8s-testbed build``, streaming its progress to the real terminal."""
    capman = pytestconfig.pluginmanager.getplugin("capturemanager")
    last: collections.deque[str] = collections.deque(maxlen=40)
    with capman.global_and_fixture_disabled():
        sys.stderr.write("\n[kube_cluster] scripts/k8s-testbed build (slow only the first time)\n")
        proc = subprocess.Popen(
            [str(TESTBED), "build"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            last.append(line)
            if not line.startswith("go: downloading"):
                sys.stderr.write(f"[kube_cluster] {line}")
                sys.stderr.flush()
        rc = proc.wait()
    if rc == NO_GO:
        pytest.skip(f"Go is not installed: {HOW_TO}")
    if rc != 0:
        pytest.fail(
            f"scripts/k8s-testbed build failed (exit {rc}):\n{''.join(last)}", pytrace=False
        )


def _built_testbed(pytestconfig: pytest.Config, missing: str) -> dict[str, str]:
    """``k8s-testbed env`` once the binaries are built (building them if Go is here), or a
    skip that starts with ``missing`` and says how to get them."""
    env = _testbed_env()
    if env.get("BUILT") == "yes":
        return env
    if shutil.which("go") is None:
        pytest.skip(f"{missing}: {HOW_TO}")
    _build(pytestconfig)
    return _testbed_env()


@pytest.fixture(scope="session")
def kube_cluster(pytestconfig: pytest.Config) -> Iterator[KubeCluster]:
    external = os.environ.get(KUBECONFIG_ENV)
    if external:
        path = Path(external).expanduser()
        if not path.is_file():
            pytest.fail(f"{KUBECONFIG_ENV}={external} is not a file", pytrace=False)
        yield KubeCluster(kubeconfig=path, api_url=_server_of(path))
        return

    env = _built_testbed(pytestconfig, "no Kubernetes test cluster")

    workdir = Path(tempfile.mkdtemp(prefix="gpucaas-k8s-"))
    started = False
    try:
        proc = subprocess.run(
            [str(TESTBED), "start", str(workdir), "--kwok"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            # the script's watchdog stops the cluster if this process dies without teardown
            env={**os.environ, "GPUCAAS_K8S_OWNER_PID": str(os.getpid())},
        )
        started = True
        if proc.returncode != 0:
            pytest.fail(
                f"scripts/k8s-testbed start failed (exit {proc.returncode}):\n"
                f"{proc.stderr[-6000:]}",
                pytrace=False,
            )
        kubeconfig = Path(proc.stdout.strip().splitlines()[-1])
        yield KubeCluster(
            kubeconfig=kubeconfig,
            api_url=_server_of(kubeconfig),
            built_version=env.get("K8S_VERSION"),
            workdir=workdir,
        )
    except subprocess.TimeoutExpired as exc:
        started = True
        pytest.fail(f"scripts/k8s-testbed start timed out:\n{log_tails(workdir)}\n{exc}")
    finally:
        if started:
            subprocess.run([str(TESTBED), "stop", str(workdir)], check=False, timeout=60)
        if not os.environ.get(KEEP_ENV):
            shutil.rmtree(workdir, ignore_errors=True)


# --- an HGX fleet of kwok nodes, for the gpucaas Kubernetes backend's tests ---------------------

from tests.e2e.kube_helpers import GPU, NODES, delete_if_exists, wait_for  # noqa: E402


@pytest.fixture(scope="module")
def kube(kube_cluster: Any) -> Iterator[Client]:
    config = KubeConfig.from_file(str(kube_cluster.kubeconfig)).get()
    client = Client(config, field_manager="gpucaas-e2e")
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def hgx_nodes(kube: Client) -> Iterator[list[str]]:
    """100 kwok nodes labelled as gpucaas hgx-h100-8 boards (8 GPUs each), per test module."""
    run = uuid.uuid4().hex[:6]
    capacity = {"cpu": "224", "memory": "2Ti", "pods": "110", GPU: "8"}
    names = [f"hgx-{run}-{i:03d}" for i in range(NODES)]

    def make(name: str) -> None:
        kube.create(
            Node(
                metadata=ObjectMeta(
                    name=name,
                    annotations={"kwok.x-k8s.io/node": "fake"},
                    labels={
                        "type": "kwok",
                        "kubernetes.io/hostname": name,
                        "gpucaas.io/hgx": "true",
                        "gpucaas.io/board-model": "hgx-h100-8",
                        "gpucaas-e2e": run,
                    },
                ),
                spec=NodeSpec(
                    taints=[Taint(key="kwok.x-k8s.io/node", value="fake", effect="NoSchedule")]
                ),
                status=NodeStatus(capacity=capacity, allocatable=capacity),
            )
        )

    for name in names:
        make(name)

    def all_ready() -> bool:
        ready = 0
        for n in kube.list(Node, labels={"gpucaas-e2e": run}):
            assert n.status is not None, n
            ready += sum(
                1 for c in (n.status.conditions or []) if c.type == "Ready" and c.status == "True"
            )
        return ready == NODES

    wait_for("100 Ready kwok nodes", all_ready)
    try:
        yield names
    finally:
        for name in names:
            delete_if_exists(kube, Node, name)


@pytest.fixture(scope="module")
def kata_runtime_class(kube: Client) -> Iterator[str]:
    """The RuntimeClass of deploy/ (gpucaas.runtime.runtime_class()), as an operator installs it."""
    obj = codecs.from_dict(runtime_class())
    kube.apply(obj, force=True)
    assert obj.metadata is not None and obj.metadata.name is not None
    yield obj.metadata.name


# --- a real node: kubelet + containerd + runc + our node agent (issue 7) ----------------------

from tests.e2e.real_node import (  # noqa: E402
    NODE_LOG_LINES,
    NODE_LOGS,
    RealNode,
    log_tail,
    log_tails,
    missing_prerequisite,
    real_node,
)

RUNNING_NODE = pytest.StashKey[RealNode]()
"""node_bed's node while it runs (in the config's stash), for the failure reports."""


@pytest.fixture(scope="session")
def node_bed(pytestconfig: pytest.Config) -> Iterator[RealNode]:
    """A real HGX node (see tests/e2e/real_node.py) in its own test-bed cluster, for the session.

    Its containerd imports the drop-in ``gpucaas node runtime-config containerd`` writes (the
    Kata handler mapped to runc for this machine, CDI on), so that output is what the node runs.
    A test that uses it and fails shows the kubelet's and containerd's logs' tails.
    """
    why = missing_prerequisite()
    if why:
        pytest.skip(f"no real node here: {why}")
    if os.environ.get(KUBECONFIG_ENV):
        pytest.skip(f"{KUBECONFIG_ENV} is set: the real-node tests need the local test bed")
    _built_testbed(pytestconfig, "no kubelet/containerd build")
    with real_node(runtime_config=True) as node:
        pytestconfig.stash[RUNNING_NODE] = node
        try:
            yield node
        finally:
            del pytestconfig.stash[RUNNING_NODE]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failure (setup, call or teardown) of a test on the real node carries the tails of
    the kubelet's and containerd's logs as report sections: a pod that did not start says
    why only there (a shim that would not start, CNI, CDI, the device plugin). If node_bed
    itself fails to start, real_node() prints every log's tail instead."""
    report = yield
    node = item.config.stash.get(RUNNING_NODE, None)
    if report.failed and node is not None and "node_bed" in getattr(item, "fixturenames", ()):
        for name in NODE_LOGS:
            report.sections.append(
                (
                    f"{name} (last {NODE_LOG_LINES} lines, {node.workdir / name})",
                    log_tail(node.workdir / name, NODE_LOG_LINES),
                )
            )
    return report

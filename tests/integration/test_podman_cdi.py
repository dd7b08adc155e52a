"""Real podman as a CDI consumer: the spec ``gpucaas node cdi generate`` writes, and the
``--device nvidia.com/gpu=N`` options :class:`EngineExecutor` passes, give a container
exactly its GPUs' ``/dev/vfio`` nodes.

The GPUs are those of the fixture HGX H100 tree; their VFIO group nodes are fake
(``mknod … c 1 3``, the numbers of /dev/null). The image is a busybox-static rootfs imported
into podman storage under the test's directory (nothing can be pulled here).

Podman 4.3 (Debian bookworm) reads CDI specs only from /etc/cdi and /var/run/cdi: it has
neither ``--cdi-spec-dir`` nor containers.conf ``cdi_spec_dirs``. So that nothing on the
host changes, every podman command runs through a wrapper script that enters a private
mount namespace with an overlay on /etc whose /etc/cdi is the test's spec directory, an
empty tmpfs on /run/cdi if the host has one, and an overlay on /dev that adds the fake
/dev/vfio nodes at the very paths the spec names; storage is ``--root``/``--runroot``/
``--tmpdir`` in the test's directory, and containers run with ``--network none``.

Skips, saying why, without podman, runc or a static busybox, when not root, or when the
mount namespace or mknod is not permitted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpucaas import cdi
from gpucaas.cdi import CdiSpec, minimum_version
from gpucaas.cli.node import app as node_app
from gpucaas.control import EngineExecutor, LocalBackend, Phase, Workload
from gpucaas.node import KubeletGpu, kubelet_gpus, modulemap
from gpucaas.node.discovery import discover
from gpucaas.node.modulemap import parse_nvidia_smi_xml
from gpucaas.topology import get_model
from tests.node import sysfs_fixture

NODE_TESTS = Path(__file__).resolve().parents[1] / "node"
MODEL = get_model("hgx-h100-8")
IMAGE = "localhost/gpucaas-busybox:cdi-test"
KIND = "nvidia.com/gpu"
INSTALL = "apt-get install podman runc busybox-static"
# No CAP_SYS_RESOURCE here: podman's default rlimits cannot be set, these can.
RUN_ARGS = (
    "--runtime",
    "runc",
    "--network",
    "none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
)
# "crw-rw-rw-    1 0        0           1,   3 Nov 28 08:30 24" (busybox ls -l)
LS_LINE = re.compile(
    r"^(?P<mode>\S+)\s+\d+\s+\S+\s+\S+\s+(?P<major>\d+),\s+(?P<minor>\d+)\s.*\s(?P<name>\S+)$"
)


# Runs podman in a private mount namespace that shows the test's CDI specs and fake /dev/vfio
# nodes at the real paths; each call gets fresh overlay layers (an upper dir may back one
# mount only). $1.. are podman's arguments.
WRAPPER = """\
#!/bin/sh
set -eu
base='{base}'
layers=$(mktemp -d "$base/ns/XXXXXX")
trap 'rm -rf "$layers"' EXIT
mkdir -p "$layers/etc" "$layers/etc-work" "$layers/dev" "$layers/dev-work" "$layers/old-dev"
cp -a "$base/dev/." "$layers/dev/"
unshare --mount --propagation private sh -eu -c '
layers=$1; base=$2; shift 2
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$layers/etc,workdir=$layers/etc-work" /etc
mkdir -p /etc/cdi
mount --bind "$base/cdi" /etc/cdi
if [ -d /run/cdi ]; then mount -t tmpfs tmpfs /run/cdi; fi
mount --rbind /dev "$layers/old-dev"
subs=$(awk "\\$5 ~ \\"^/dev/[^/]+\\$\\" {{print \\$5}}" /proc/self/mountinfo | sort -u)
mount -t overlay overlay -o "lowerdir=/dev,upperdir=$layers/dev,workdir=$layers/dev-work" /dev
for sub in $subs; do mount --rbind "$layers/old-dev${{sub#/dev}}" "$sub"; done
exec podman --root "$base/storage" --runroot "$base/run" --tmpdir "$base/tmp" "$@"
' podman "$layers" "$base" "$@"
"""


@dataclass
class Podman:
    """Podman with storage, CDI specs and /dev/vfio nodes of its own, under ``base``."""

    base: Path
    wrapper: Path
    version: str

    @property
    def cdi_dir(self) -> Path:
        return self.base / "cdi"

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.wrapper), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _missing_requirement() -> str | None:
    for tool in ("podman", "runc", "busybox", "unshare", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} not installed: {INSTALL}"
    if os.geteuid() != 0:
        return "needs root (mknod, mount namespaces, podman's root storage)"
    return None


def _build_image(podman: Podman, work: Path) -> None:
    rootfs = work / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    busybox = shutil.which("busybox")
    assert busybox is not None
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    done = subprocess.run(
        ["chroot", str(rootfs), "/bin/busybox", "--install", "-s", "/bin"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:  # a dynamic busybox cannot run in an empty rootfs
        pytest.skip(f"{busybox} is not a static busybox ({done.stderr.strip()}): {INSTALL}")
    tarball = work / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True, timeout=60)
    done = podman.run("import", str(tarball), IMAGE)
    assert done.returncode == 0, done.stderr


def _mknod_char(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, 0o666 | 0o020000, os.makedev(1, 3))


@pytest.fixture(scope="module")
def fixture_gpus(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path, tuple[KubeletGpu, ...]]:
    """The fixture HGX tree, its stored module-ID map, and its GPUs as the kubelet sees them."""
    root = tmp_path_factory.mktemp("hgx")
    tree = sysfs_fixture.make_hgx_h100_tree(root / "sys")
    module_map = parse_nvidia_smi_xml(NODE_TESTS / "data" / "nvidia-smi-hgx-h100.xml")
    map_path = root / "module-map.json"
    modulemap.save(module_map, map_path)
    return tree, map_path, kubelet_gpus(discover(tree), module_map)


@pytest.fixture(scope="module")
def podman(
    tmp_path_factory: pytest.TempPathFactory,
    fixture_gpus: tuple[Path, Path, tuple[KubeletGpu, ...]],
) -> Iterator[Podman]:
    missing = _missing_requirement()
    if missing:
        pytest.skip(missing)
    base = tmp_path_factory.mktemp("podman")
    for sub in ("cdi", "ns", "storage", "run", "tmp"):
        (base / sub).mkdir()
    try:
        for gpu in fixture_gpus[2]:
            _mknod_char(base / "dev" / "vfio" / str(gpu.iommu_group))
        _mknod_char(base / "dev" / "vfio" / "vfio")
    except PermissionError as err:
        pytest.skip(f"mknod is not permitted here ({err})")
    wrapper = base / "podman"
    wrapper.write_text(WRAPPER.format(base=base))
    wrapper.chmod(0o755)
    version = subprocess.run(
        ["podman", "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.split()[-1]
    engine = Podman(base, wrapper, version)
    done = engine.run("info", "--format", "{{.Host.OCIRuntime.Name}}")
    if done.returncode != 0:
        pytest.skip(f"podman in a private mount namespace does not work here: {done.stderr}")
    _build_image(engine, tmp_path_factory.mktemp("image"))
    yield engine
    engine.run("rm", "--all", "--force")
    engine.run("rmi", "--all", "--force")


@pytest.fixture
def cdi_dir(podman: Podman) -> Iterator[Path]:
    """The directory podman sees as /etc/cdi, empty for each test."""
    yield podman.cdi_dir
    for spec in podman.cdi_dir.iterdir():
        spec.unlink()


def generate_spec(fixture_gpus: tuple[Path, Path, tuple[KubeletGpu, ...]], cdi_dir: Path) -> Path:
    """``gpucaas node cdi generate`` for the fixture node, as an operator runs it."""
    tree, map_path, _ = fixture_gpus
    args = ["cdi", "generate", "--sysfs", str(tree), "--map", str(map_path), "--dir", str(cdi_dir)]
    result = CliRunner().invoke(node_app, args)
    assert result.exit_code == 0, result.output
    return cdi_dir / "nvidia.com-gpu.json"


def vfio_nodes(listing: str) -> dict[str, tuple[str, int, int]]:
    """``ls -l /dev/vfio`` output as {name: (mode, major, minor)}."""
    nodes = {}
    for line in listing.splitlines():
        match = LS_LINE.match(line)
        if match:
            nodes[match["name"]] = (match["mode"], int(match["major"]), int(match["minor"]))
    return nodes


def expected_nodes(*gpus: KubeletGpu) -> set[str]:
    return {str(g.iommu_group) for g in gpus} | {"vfio"}


def test_podman_gives_the_container_the_vfio_nodes_of_exactly_its_gpus(
    podman: Podman, cdi_dir: Path, fixture_gpus: tuple[Path, Path, tuple[KubeletGpu, ...]]
) -> None:
    gpus = {g.device_id: g for g in fixture_gpus[2]}
    path = generate_spec(fixture_gpus, cdi_dir)
    spec = CdiSpec.from_json(path.read_text())
    # "0".."7" start with a digit: 0.5.0 is needed, and is the newest podman 4.3 reads.
    assert spec.version == minimum_version(spec) == "0.5.0"
    assert not spec.edits.env and not any(d.edits.env for d in spec.devices)
    done = podman.run(
        "run", "--rm", *RUN_ARGS,
        "--device", f"{KIND}=0", "--device", f"{KIND}=5",
        IMAGE, "ls", "-l", "/dev/vfio",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    nodes = vfio_nodes(done.stdout)
    assert set(nodes) == expected_nodes(gpus["0"], gpus["5"]), done.stdout
    assert {(mode[0], major, minor) for mode, major, minor in nodes.values()} == {("c", 1, 3)}


def test_without_a_device_option_the_container_has_no_vfio_nodes(
    podman: Podman, cdi_dir: Path, fixture_gpus: tuple[Path, Path, tuple[KubeletGpu, ...]]
) -> None:
    generate_spec(fixture_gpus, cdi_dir)
    done = podman.run("run", "--rm", *RUN_ARGS, IMAGE, "ls", "/dev/vfio")
    assert done.returncode != 0 and "No such file or directory" in done.stderr


@pytest.mark.parametrize("version", ["0.6.0", "1.1.0"], ids=["0.6.0", "current-1.1.0"])
def test_podman_4_3_silently_skips_a_spec_newer_than_0_5_0(
    podman: Podman,
    cdi_dir: Path,
    fixture_gpus: tuple[Path, Path, tuple[KubeletGpu, ...]],
    version: str,
) -> None:
    """Why the generator writes the minimum version: a newer, equally valid spec is dropped."""
    if not podman.version.startswith("4.3."):
        pytest.skip(
            f"documents podman 4.3's CDI library; this is podman {podman.version} "
            "(Debian 12's podman package is 4.3: run there to check it)"
        )
    path = generate_spec(fixture_gpus, cdi_dir)
    raw = json.loads(path.read_text())
    path.write_text(json.dumps(raw | {"cdiVersion": version}))
    assert not [v for v in cdi.validate(path) if v.is_error]  # valid CDI all the same
    done = podman.run("run", "--rm", *RUN_ARGS, "--device", f"{KIND}=0", IMAGE, "true")
    assert done.returncode != 0
    assert f"unresolvable CDI devices {KIND}=0" in done.stderr


def test_the_local_backend_runs_a_partition_with_exactly_its_gpus(
    podman: Podman,
    cdi_dir: Path,
    fixture_gpus: tuple[Path, Path, tuple[KubeletGpu, ...]],
    tmp_path: Path,
) -> None:
    """Module IDs -> device IDs (local backend) -> --device options (executor) -> podman."""
    by_module = {int(g.module_id): g for g in fixture_gpus[2]}
    generate_spec(fixture_gpus, cdi_dir)
    executor = EngineExecutor("podman", str(podman.wrapper), engine_args=RUN_ARGS, cdi_kind=KIND)
    backend = LocalBackend(tmp_path / "state", MODEL, 1, executor)
    partition = MODEL.partition_for((5, 7))  # device IDs 4 and 6: not neighbours
    workload = Workload(
        container_id=f"cdi-{uuid.uuid4().hex[:8]}",
        tenant="acme",
        image=IMAGE,
        command=("sh", "-c"),
        args=('ls -l /dev/vfio; echo "modules=$GPUCAAS_MODULE_IDS"',),
        env={},
        nfs=(),
        labels={},
        max_runtime_s=60,
        gpus=2,
        board=backend.boards()[0].name,
        partition_id=int(partition.id),
        module_ids=tuple(int(m) for m in partition.module_ids),
    )
    backend.start(workload)
    give_up = time.monotonic() + 120
    while (status := backend.status(workload)).phase is not Phase.EXITED:
        assert status.phase is Phase.RUNNING, status
        assert time.monotonic() < give_up, "the container did not end within 120 s"
        time.sleep(0.05)
    log = b"".join(backend.logs(workload, follow=False)).decode()
    assert status.exit_code == 0, log
    # The local backend numbers GPUs as kubelet_gpus does: module m is the same GPU in both.
    assert set(vfio_nodes(log)) == expected_nodes(by_module[5], by_module[7]), log
    assert "modules=5,7" in log
    backend.release(workload)

"""``gpucaas node runtime-config containerd|kata``, run in-process through typer's CliRunner."""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from gpucaas.cli import node_runtime
from gpucaas.runtime import (
    KATA_DROPIN_NAME,
    RUNTIME_CLASS_NAME,
    ContainerdVersion,
    KataRuntime,
    containerd_dropin,
    merge_containerd_config,
)

runner = CliRunner()
CRI2 = "io.containerd.cri.v1.runtime"
OPERATOR = """\
# The operator's own file.
version = 3

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = true  # systemd cgroup driver
"""


def _command_app() -> typer.Typer:
    """The root CLI as it will mount the sub-app: ``gpucaas node runtime-config ...``."""
    app = typer.Typer()
    node = typer.Typer()
    node.add_typer(node_runtime.app, name="runtime-config")
    app.add_typer(node, name="node")
    return app


def _run(*args: str) -> Result:
    return runner.invoke(_command_app(), ["node", "runtime-config", *args])


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(OPERATOR)
    path.chmod(0o600)
    return path


# --- containerd: drop-in ------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.7", "2"])
def test_the_dropin_goes_to_stdout_and_the_notes_to_stderr(version: str) -> None:
    result = _run("containerd", "--containerd", version)
    assert result.exit_code == 0, result.output
    assert result.stdout == containerd_dropin(ContainerdVersion(version)).text
    tomllib.loads(result.stdout)
    assert 'note: add `imports = ["/etc/containerd/conf.d/*.toml"]`' in result.stderr


def test_the_dropin_is_written_with_output_and_the_imports_line_follows_its_directory(
    tmp_path: Path,
) -> None:
    out = tmp_path / "conf.d" / "kata.toml"
    result = _run("containerd", "--containerd", "2", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {out}\n")
    assert f'imports = ["{tmp_path}/conf.d/*.toml"]' in result.stdout
    data = tomllib.loads(out.read_text())
    assert data["plugins"][CRI2]["containerd"]["runtimes"][RUNTIME_CLASS_NAME]["runtime_type"] == (
        "io.containerd.kata-qemu-nvidia-gpu.v2"
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind


def test_every_option_reaches_the_dropin() -> None:
    result = _run(
        "containerd", "--containerd", "2", "--runtime-name", "kata-gpu", "--alias", "kata-gpu-1",
        "--runtime-path", "/usr/bin/containerd-shim-kata-v2", "--config-path", "/etc/kata/gpu.toml",
        "--cdi-spec-dir", "/var/run/cdi", "--cdi-spec-dir", "/opt/cdi",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = containerd_dropin(
        ContainerdVersion.V2,
        KataRuntime(
            name="kata-gpu",
            aliases=("kata-gpu-1",),
            runtime_path="/usr/bin/containerd-shim-kata-v2",
            config_path="/etc/kata/gpu.toml",
            cdi_spec_dirs=("/var/run/cdi", "/opt/cdi"),
        ),
    )
    assert result.stdout == expected.text


def test_the_hidden_test_mapping_maps_the_handler_to_runc() -> None:
    result = _run("containerd", "--containerd", "2", "--test-runc-alias", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    runtime = tomllib.loads(out["text"])["plugins"][CRI2]["containerd"]["runtimes"]
    assert runtime == {RUNTIME_CLASS_NAME: {"runtime_type": "io.containerd.runc.v2"}}
    assert any("TEST ONLY" in n for n in out["notes"])
    assert "--test-runc-alias" not in _run("containerd", "--help").stdout


def test_the_dropin_as_json() -> None:
    result = _run("containerd", "--containerd", "1.7", "--json")
    out = json.loads(result.stdout)
    assert out["path"] == "/etc/containerd/conf.d/gpucaas-kata.toml"
    assert out["written"] is False
    assert out["imports"] == 'imports = ["/etc/containerd/conf.d/*.toml"]'
    assert any("replaces whole plugin sections" in n for n in out["notes"])


def test_the_containerd_version_must_be_given() -> None:
    result = _run("containerd")
    assert result.exit_code == 2
    assert "--containerd" in result.output


# --- containerd: merge --------------------------------------------------------------------------


def test_merge_writes_atomically_keeps_a_backup_and_lists_the_changes(config: Path) -> None:
    result = _run("containerd", "--containerd", "2", "--merge", str(config))
    assert result.exit_code == 0, result.output
    merged = merge_containerd_config(OPERATOR, ContainerdVersion.V2)
    assert config.read_text() == merged.text
    backup = config.with_name("config.toml.bak")
    assert backup.read_text() == OPERATOR
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert result.stdout.startswith(f"merged into {config} (previous content in {backup}):\n")
    for change in merged.changes:
        assert f"  {change}\n" in result.stdout
    assert "# systemd cgroup driver" in config.read_text()
    assert sorted(p.name for p in config.parent.iterdir()) == ["config.toml", "config.toml.bak"]


def test_merging_again_writes_nothing(config: Path) -> None:
    assert _run("containerd", "--containerd", "2", "--merge", str(config)).exit_code == 0
    backup = config.with_name("config.toml.bak")
    merged_once, backup_once = config.read_bytes(), backup.read_bytes()
    mtime = config.stat().st_mtime_ns
    result = _run("containerd", "--containerd", "2", "--merge", str(config))
    assert result.exit_code == 0
    assert result.stdout == f"{config}: already configured, nothing written\n"
    assert config.read_bytes() == merged_once and config.stat().st_mtime_ns == mtime
    assert backup.read_bytes() == backup_once


def test_dry_run_prints_the_merged_file_and_writes_nothing(config: Path) -> None:
    result = _run("containerd", "--containerd", "2", "--merge", str(config), "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout == merge_containerd_config(OPERATOR, ContainerdVersion.V2).text
    assert "would set plugins." in result.stderr
    assert config.read_text() == OPERATOR
    assert not config.with_name("config.toml.bak").exists()


def test_merge_as_json(config: Path) -> None:
    result = _run("containerd", "--containerd", "2", "--merge", str(config), "--json")
    out = json.loads(result.stdout)
    assert out["written"] is True and out["dry_run"] is False
    assert out["backup"] == str(config.with_name("config.toml.bak"))
    key = f'plugins."{CRI2}".containerd.runtimes.{RUNTIME_CLASS_NAME}.runtime_path'
    assert {"key": key, "old": None, "new": "/opt/kata/bin/containerd-shim-kata-v2"} in (
        out["changes"]
    )
    assert "text" not in out


@pytest.mark.parametrize(
    ("version", "text", "message"),
    [
        ("2", "version = 3\n[plugins\n", "not valid TOML at line 2"),
        ("2", "# no version\n", "has no `version`"),
        ("2", "version = 1\n", "run `containerd config migrate`"),
        ("1.7", OPERATOR, "pass --containerd 2"),
        ("2", "version = 2\n", "pass --containerd 1.7"),
        ("2", f'version = 3\n[plugins."{CRI2}"]\ncdi_spec_dirs = "/etc/cdi"\n', "array of strings"),
    ],
    ids=["not toml", "no version", "version 1", "2.x file on 1.7", "1.x file on 2", "wrong type"],
)
def test_a_refused_merge_leaves_the_file_byte_identical(
    tmp_path: Path, version: str, text: str, message: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(text.encode())
    result = _run("containerd", "--containerd", version, "--merge", str(path))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path}: ")
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert path.read_bytes() == text.encode()
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    result = _run("containerd", "--containerd", "2", "--merge", str(tmp_path / "nope.toml"))
    assert result.exit_code == 2
    assert "cannot read it (No such file or directory)" in result.stderr


@pytest.mark.parametrize(
    "args",
    [["--dry-run"], ["--merge", "x.toml", "--output", "y.toml"], ["--runtime-name", "Kata"]],
    ids=["dry run without merge", "merge and output", "bad handler"],
)
def test_option_misuse_exits_2(args: list[str]) -> None:
    result = _run("containerd", "--containerd", "2", *args)
    assert result.exit_code == 2


# --- kata ---------------------------------------------------------------------------------------


def test_kata_prints_the_dropin_and_the_kubelet_timeout(tmp_path: Path) -> None:
    result = _run("kata", "--config-path", str(tmp_path / "configuration-qemu-nvidia-gpu.toml"))
    assert result.exit_code == 0, result.output
    qemu = tomllib.loads(result.stdout)["hypervisor"]["qemu"]
    assert (qemu["pcie_root_port"], qemu["cold_plug_vfio"]) == (8, "root-port")
    assert "runtimeRequestTimeout to at least 8m" in result.stderr
    assert f"install as {tmp_path}/config.d/{KATA_DROPIN_NAME}" in result.stderr


def test_kata_options_reach_the_dropin() -> None:
    result = _run(
        "kata", "--gpus", "4", "--pcie-root-ports", "4", "--memory-gib", "16", "--vcpus", "2",
        "--no-hugepages", "--kernel-param", "agent.log=debug", "--kernel-param", "x=1 y",
        "--timeout", "1800", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    data = tomllib.loads(out["text"])
    assert data["hypervisor"]["qemu"] == {
        "cold_plug_vfio": "root-port",
        "hot_plug_vfio": "no-port",
        "pcie_root_port": 4,
        "default_memory": 16384,
        "default_vcpus": 2,
        "enable_hugepages": False,
        "kernel_params": (
            "agent.log=debug x=1 y pci=realloc pci=nocrs pci=assign-busses agent.cdi_timeout=170"
        ),
    }
    assert data["runtime"]["create_container_timeout"] == 1800
    assert out["kubelet"] == {"runtimeRequestTimeout": "13m"}  # 4 GPUs on 4 KiB pages
    assert out["kernel_params"] == data["hypervisor"]["qemu"]["kernel_params"]


def test_kata_keeps_the_base_configurations_kernel_params(tmp_path: Path) -> None:
    base = tmp_path / "configuration-qemu-nvidia-gpu.toml"
    base.write_text('[hypervisor.qemu]\nkernel_params = "nvrc.smi.srs=1"\n')
    (tmp_path / "config.d").mkdir()
    (tmp_path / "config.d" / "30-kernel-params.toml").write_text(
        '[hypervisor.qemu]\nkernel_params = "nvrc.smi.srs=1 https_proxy=p"\n'
    )
    (tmp_path / "config.d" / "90-later.toml").write_text(
        '[hypervisor.qemu]\nkernel_params = "ignored"\n'
    )
    out = tmp_path / "config.d" / KATA_DROPIN_NAME
    result = _run("kata", "--config-path", str(base), "--output", str(out))
    assert result.exit_code == 0, result.output
    params = tomllib.loads(out.read_text())["hypervisor"]["qemu"]["kernel_params"]
    assert params == (
        "nvrc.smi.srs=1 https_proxy=p pci=realloc pci=nocrs pci=assign-busses agent.cdi_timeout=290"
    )
    assert result.stdout.startswith(f"wrote {out}\nkubelet: runtimeRequestTimeout: 8m\n")
    assert "were not read" not in result.stdout


def test_kata_reads_an_explicit_base_config(tmp_path: Path) -> None:
    base = tmp_path / "shipped.toml"
    base.write_text('[hypervisor.qemu]\nkernel_params = "a=1"\n')
    result = _run("kata", "--base-config", str(base), "--json")
    assert json.loads(result.stdout)["kernel_params"].startswith("a=1 pci=realloc")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpus", "9"], "gpus=9 is out of range; pass a GPU count from 1 to 8"),
        (["--pcie-root-ports", "4"], "pcie_root_ports=4 is out of range"),
        (["--timeout", "30"], "timeout_s=30"),
        (["--base-config", "/nonexistent/base.toml"], "cannot read it (No such file"),
    ],
    ids=["9 gpus", "too few root ports", "short timeout", "missing base"],
)
def test_kata_refusals_are_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    out = tmp_path / "dropin.toml"
    result = _run("kata", *args, "--output", str(out))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert not out.exists()


# --- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["containerd", "kata"])
def test_each_command_has_help_ending_with_an_example(command: str) -> None:
    callback = {c.name: c.callback for c in node_runtime.app.registered_commands}[command]
    assert callback is not None and callback.__doc__ is not None
    last = callback.__doc__.strip().splitlines()[-1].strip()
    assert last.startswith(f"Example: gpucaas node runtime-config {command} ")
    result = runner.invoke(_command_app(), ["node", "runtime-config", command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.stdout

"""Our containerd configuration, loaded by real containerd binaries (1.7.35 and 2.4.2).

Each test writes config files into a temporary directory and runs ``containerd --config FILE
config dump``, which loads the file and its imports, migrates and merges them exactly as the
daemon does, decodes every plugin's configuration and prints the result -- without starting
anything. Then it reads the dumped TOML for what containerd will actually use.

The binaries come from ``scripts/k8s-testbed build`` (found through ``scripts/k8s-testbed
env``: ``CONTAINERD_BIN_DIR`` and ``CONTAINERD17``) or from ``GPUCAAS_CONTAINERD`` (a 2.x
``containerd``) and ``GPUCAAS_CONTAINERD17``. Without them the tests skip, saying how to build.

What the binaries showed (pinned by the tests below):

- Unknown keys: containerd 1.7 ignores them silently; 2.x ignores them with a warning
  ("Ignoring unknown key in TOML", and "... for plugin" inside a plugin's table). A misspelt
  key therefore does nothing, in both.
- Wrong types: both refuse to load ("Can't convert yes(string) to bool" in 1.7, "toml: cannot
  decode TOML string into struct field ... of type bool" in 2.x), so containerd would not start.
- containerd 1.7 replaces a plugin's whole section with an imported file's; 2.x merges them.
- containerd 2.x migrates a version 2 file (our 1.7 output) on load, and 2.4.2 has no
  ``enable_cdi`` any more (CDI is always on).
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from gpucaas.runtime import (
    CDI_SPEC_DIRS,
    KATA_CONFIG_PATH,
    KATA_RUNTIME_TYPE,
    KATA_SHIM_PATH,
    RUNTIME_CLASS_NAME,
    ContainerdVersion,
    KataRuntime,
    containerd_dropin,
    merge_containerd_config,
)

REPO = Path(__file__).resolve().parents[2]
TESTBED = REPO / "scripts" / "k8s-testbed"
# containerd 2.x reads every version into the 2.x plugin layout.
DUMPED_CRI = {
    ContainerdVersion.V1_7: "io.containerd.grpc.v1.cri",
    ContainerdVersion.V2: "io.containerd.cri.v1.runtime",
}
SANDBOX = "registry.example/pause:3.10"

OPERATOR = {
    ContainerdVersion.V1_7: f"""\
# The operator's file.
version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX}"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = true
""",
    ContainerdVersion.V2: f"""\
# The operator's file.
version = 3

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "{SANDBOX}"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    SystemdCgroup = true
""",
}


@dataclass(frozen=True)
class Containerd:
    version: ContainerdVersion
    binary: Path

    def dump(self, config: Path) -> tuple[dict[str, Any], str]:
        """The configuration containerd loads from ``config``, and its log (stderr)."""
        result = self.run(config)
        assert result.returncode == 0, result.stderr
        return tomllib.loads(result.stdout), result.stderr

    def run(self, config: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), "--config", str(config), "config", "dump"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=config.parent,
            check=False,
        )

    def cri(self, dumped: dict[str, Any]) -> dict[str, Any]:
        cri: dict[str, Any] = dumped["plugins"][DUMPED_CRI[self.version]]
        return cri


@cache
def _testbed_env() -> dict[str, str]:
    try:
        result = subprocess.run(
            [str(TESTBED), "env"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    pairs = (line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def _binary(version: ContainerdVersion) -> Path | None:
    if version is ContainerdVersion.V2:
        given = os.environ.get("GPUCAAS_CONTAINERD")
        built = _testbed_env().get("CONTAINERD_BIN_DIR")
        path = given or (f"{built}/containerd" if built else None)
    else:
        path = os.environ.get("GPUCAAS_CONTAINERD17") or _testbed_env().get("CONTAINERD17")
    if path and Path(path).is_file() and os.access(path, os.X_OK):
        return Path(path)
    return None


def _containerd(version: ContainerdVersion) -> Containerd:
    binary = _binary(version)
    if binary is None:
        name = "2.x" if version is ContainerdVersion.V2 else "1.7"
        variable = (
            "GPUCAAS_CONTAINERD" if version is ContainerdVersion.V2 else "GPUCAAS_CONTAINERD17"
        )
        pytest.skip(
            f"containerd {name} not built: run scripts/k8s-testbed build (needs Go), "
            f"or point {variable} at a containerd {name} binary"
        )
    return Containerd(version, binary)


@pytest.fixture(params=list(ContainerdVersion), ids=["1.7", "2.x"])
def containerd(request: pytest.FixtureRequest) -> Containerd:
    return _containerd(request.param)


@pytest.fixture
def containerd2() -> Containerd:
    return _containerd(ContainerdVersion.V2)


def _assert_our_runtime(containerd: Containerd, dumped: dict[str, Any]) -> None:
    cri = containerd.cri(dumped)
    runtime = cri["containerd"]["runtimes"][RUNTIME_CLASS_NAME]
    assert runtime["runtime_type"] == KATA_RUNTIME_TYPE
    assert runtime["runtime_path"] == KATA_SHIM_PATH
    assert runtime["privileged_without_host_devices"] is True
    assert runtime["pod_annotations"] == ["io.katacontainers.*"]
    assert runtime["options"]["ConfigPath"] == KATA_CONFIG_PATH
    assert set(CDI_SPEC_DIRS) <= set(cri["cdi_spec_dirs"])
    # 1.7 needs enable_cdi = true; 2.0-2.3 default it to true; 2.4 dropped the key (always on).
    assert cri.get("enable_cdi", containerd.version is ContainerdVersion.V2) is True


def test_the_dropin_is_in_effect_through_imports(containerd: Containerd, tmp_path: Path) -> None:
    dropin = containerd_dropin(containerd.version, path=str(tmp_path / "conf.d" / "kata.toml"))
    (tmp_path / "conf.d").mkdir()
    Path(dropin.path).write_text(dropin.text)
    main = tmp_path / "config.toml"
    main.write_text(f"version = {containerd.version.config_version}\n{dropin.imports_line}\n")
    dumped, log = containerd.dump(main)
    _assert_our_runtime(containerd, dumped)
    assert "Ignoring unknown key" not in log


def test_the_merged_config_is_in_effect_with_the_operators_settings(
    containerd: Containerd, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        merge_containerd_config(OPERATOR[containerd.version], containerd.version).text
    )
    dumped, log = containerd.dump(config)
    _assert_our_runtime(containerd, dumped)
    cri = containerd.cri(dumped)
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    if containerd.version is ContainerdVersion.V1_7:
        assert cri["sandbox_image"] == SANDBOX
    else:
        assert dumped["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == (
            SANDBOX
        )
    assert "Ignoring unknown key" not in log


def test_our_output_is_accepted_as_is(containerd: Containerd, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(containerd_dropin(containerd.version).text)
    dumped, log = containerd.dump(config)
    _assert_our_runtime(containerd, dumped)
    assert "Ignoring unknown key" not in log
    assert "level=error" not in log


def test_containerd_17_replaces_the_main_cri_section_with_an_imported_one(
    containerd: Containerd, tmp_path: Path
) -> None:
    """Why the 1.7 drop-in comes with a warning and ``--merge`` is the advice on 1.7."""
    dropin = containerd_dropin(containerd.version, path=str(tmp_path / "kata.toml"))
    Path(dropin.path).write_text(dropin.text)
    main = tmp_path / "config.toml"
    main.write_text(OPERATOR[containerd.version].replace("\n\n", f"\n{dropin.imports_line}\n\n", 1))
    dumped, _ = containerd.dump(main)
    _assert_our_runtime(containerd, dumped)
    runc = containerd.cri(dumped)["containerd"]["runtimes"].get("runc", {})
    if containerd.version is ContainerdVersion.V1_7:
        assert containerd.cri(dumped)["sandbox_image"] != SANDBOX
        assert runc.get("options", {}).get("SystemdCgroup") is not True
        assert any("replaces whole plugin sections" in note for note in dropin.notes)
    else:
        assert runc["options"]["SystemdCgroup"] is True


def test_containerd_2_migrates_a_version_2_file(containerd2: Containerd, tmp_path: Path) -> None:
    containerd = containerd2
    config = tmp_path / "config.toml"
    config.write_text(
        merge_containerd_config(OPERATOR[ContainerdVersion.V1_7], ContainerdVersion.V1_7).text
    )
    dumped, log = containerd.dump(config)
    assert "Configuration migrated from version 2" in log
    _assert_our_runtime(containerd, dumped)
    assert containerd.cri(dumped)["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"]


def test_the_test_mapping_runs_the_kata_handler_on_runc(
    containerd: Containerd, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    kata = merge_containerd_config(OPERATOR[containerd.version], containerd.version).text
    runtime = KataRuntime(test_runc_alias=True)
    config.write_text(merge_containerd_config(kata, containerd.version, runtime).text)
    dumped, _ = containerd.dump(config)
    table = containerd.cri(dumped)["containerd"]["runtimes"][RUNTIME_CLASS_NAME]
    assert table["runtime_type"] == "io.containerd.runc.v2"
    assert table.get("runtime_path", "") == ""
    assert "ConfigPath" not in table.get("options", {})


def test_unknown_keys_are_ignored_and_wrong_types_refused(
    containerd: Containerd, tmp_path: Path
) -> None:
    table = f'plugins."{containerd.version.cri_plugin}".containerd.runtimes.{RUNTIME_CLASS_NAME}'
    head = f"version = {containerd.version.config_version}\n[{table}]\n"
    unknown = tmp_path / "unknown.toml"
    unknown.write_text(f'{head}runtime_type = "io.containerd.runc.v2"\nruntime_typo = "x"\n')
    dumped, log = containerd.dump(unknown)
    assert (
        "runtime_typo" not in containerd.cri(dumped)["containerd"]["runtimes"][RUNTIME_CLASS_NAME]
    )
    if containerd.version is ContainerdVersion.V1_7:
        assert "runtime_typo" not in log  # silently
    else:
        assert "Ignoring unknown key in TOML for plugin" in log

    wrong = tmp_path / "wrong.toml"
    wrong.write_text(f'{head}privileged_without_host_devices = "yes"\n')
    result = containerd.run(wrong)
    assert result.returncode != 0
    assert "bool" in result.stderr

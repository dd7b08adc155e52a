"""containerd configuration for the Kata GPU runtime: the drop-in and the merge into config.toml."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
import tomlkit
from hypothesis import given, settings
from hypothesis import strategies as st

from gpucaas.errors import InvalidRequest
from gpucaas.runtime import (
    CDI_SPEC_DIRS,
    KATA_CONFIG_PATH,
    KATA_RUNTIME_TYPE,
    KATA_SHIM_PATH,
    RUNTIME_CLASS_NAME,
    ContainerdVersion,
    KataRuntime,
    RuntimeConfigError,
    containerd_dropin,
    merge_containerd_config,
    runtime_handlers,
)

V17 = ContainerdVersion.V1_7
V2 = ContainerdVersion.V2
CRI = {V17: "io.containerd.grpc.v1.cri", V2: "io.containerd.cri.v1.runtime"}
KATA_TABLE = {
    "runtime_type": KATA_RUNTIME_TYPE,
    "runtime_path": KATA_SHIM_PATH,
    "privileged_without_host_devices": True,
    "pod_annotations": ["io.katacontainers.*"],
    "options": {"ConfigPath": KATA_CONFIG_PATH},
}

# An operator's containerd 1.7 config, as kubeadm guides leave it (comments included).
OPERATOR_17 = """\
# Managed by hand; see the runbook.
version = 2
root = "/var/lib/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  # Mirror of registry.k8s.io/pause.
  sandbox_image = "registry.example/pause:3.10"
  max_container_log_line_size = 16384

  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true  # the kubelet uses the systemd driver

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
"""

# The same on containerd 2.x (version 3 layout).
OPERATOR_2 = """\
# Managed by hand; see the runbook.
version = 3
root = "/var/lib/containerd"

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "registry.example/pause:3.10"

[plugins.'io.containerd.cri.v1.runtime']
  # Keep long log lines.
  max_container_log_line_size = 65536

  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"

    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = true  # the kubelet uses the systemd driver
"""

OPERATOR = {V17: OPERATOR_17, V2: OPERATOR_2}
VERSIONS = pytest.mark.parametrize("version", list(ContainerdVersion), ids=["1.7", "2.x"])


def _cri(text: str, version: ContainerdVersion) -> dict[str, Any]:
    cri: dict[str, Any] = tomllib.loads(text)["plugins"][CRI[version]]
    return cri


def _runtime(text: str, version: ContainerdVersion, name: str = RUNTIME_CLASS_NAME) -> Any:
    return _cri(text, version)["containerd"]["runtimes"][name]


# --- the drop-in --------------------------------------------------------------------------------


@VERSIONS
def test_the_dropin_holds_exactly_our_keys(version: ContainerdVersion) -> None:
    data = tomllib.loads(containerd_dropin(version).text)
    cri: dict[str, Any] = {"cdi_spec_dirs": ["/etc/cdi", "/var/run/cdi"]}
    if version is V17:
        cri["enable_cdi"] = True  # off by default in 1.7; on (and from 2.4 not a key) in 2.x
    cri["containerd"] = {"runtimes": {RUNTIME_CLASS_NAME: KATA_TABLE}}
    assert data == {"version": version.config_version, "plugins": {CRI[version]: cri}}


@VERSIONS
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("runtime_type", "io.containerd.kata-qemu-nvidia-gpu.v2"),
        ("runtime_path", "/opt/kata/bin/containerd-shim-kata-v2"),
        ("privileged_without_host_devices", True),
        ("pod_annotations", ["io.katacontainers.*"]),
    ],
)
def test_each_runtime_key_of_the_dropin(version: ContainerdVersion, key: str, value: Any) -> None:
    assert _runtime(containerd_dropin(version).text, version)[key] == value


@VERSIONS
def test_the_dropin_points_the_shim_at_the_nvidia_gpu_configuration(
    version: ContainerdVersion,
) -> None:
    options = _runtime(containerd_dropin(version).text, version)["options"]
    assert options == {
        "ConfigPath": "/opt/kata/share/defaults/kata-containers/configuration-qemu-nvidia-gpu.toml"
    }


def test_the_versions_and_plugins_of_each_family() -> None:
    assert (V17.config_version, V17.cri_plugin) == (2, "io.containerd.grpc.v1.cri")
    assert (V2.config_version, V2.cri_plugin) == (3, "io.containerd.cri.v1.runtime")
    assert V17.accepted_versions == (2,)
    assert V2.accepted_versions == (3, 4)
    assert tomllib.loads(containerd_dropin(V17).text)["version"] == 2
    assert tomllib.loads(containerd_dropin(V2).text)["version"] == 3


@VERSIONS
def test_every_setting_can_be_overridden(version: ContainerdVersion) -> None:
    runtime = KataRuntime(
        name="kata-gpu",
        runtime_type="io.containerd.kata.v2",
        runtime_path="/usr/local/bin/containerd-shim-kata-v2",
        config_path="/etc/kata-containers/gpu.toml",
        cdi_spec_dirs=("/var/run/cdi",),
        pod_annotations=("io.katacontainers.config.hypervisor.*",),
        aliases=("kata-gpu-8",),
    )
    text = containerd_dropin(version, runtime).text
    assert _cri(text, version)["cdi_spec_dirs"] == ["/var/run/cdi"]
    for name in ("kata-gpu", "kata-gpu-8"):
        assert _runtime(text, version, name) == {
            "runtime_type": "io.containerd.kata.v2",
            "runtime_path": "/usr/local/bin/containerd-shim-kata-v2",
            "privileged_without_host_devices": True,
            "pod_annotations": ["io.katacontainers.config.hypervisor.*"],
            "options": {"ConfigPath": "/etc/kata-containers/gpu.toml"},
        }
    assert runtime_handlers(text, version) == ("kata-gpu", "kata-gpu-8")


@VERSIONS
def test_the_test_mapping_runs_the_kata_handler_on_runc(version: ContainerdVersion) -> None:
    dropin = containerd_dropin(version, KataRuntime(test_runc_alias=True, aliases=("kata",)))
    for name in (RUNTIME_CLASS_NAME, "kata"):
        assert _runtime(dropin.text, version, name) == {"runtime_type": "io.containerd.runc.v2"}
    assert "TEST ONLY" in dropin.text
    assert any("TEST ONLY" in note for note in dropin.notes)


@VERSIONS
def test_the_dropin_says_which_imports_line_the_main_config_needs(
    version: ContainerdVersion,
) -> None:
    dropin = containerd_dropin(version, path="/etc/containerd/runtimes.d/kata.toml")
    assert dropin.imports_line == 'imports = ["/etc/containerd/runtimes.d/*.toml"]'
    assert dropin.imports_line in dropin.text
    assert "merges imported files into the main one" in dropin.notes[0]


def test_the_17_dropin_warns_that_it_replaces_the_whole_cri_section() -> None:
    (warning,) = [n for n in containerd_dropin(V17).notes if "replaces" in n]
    assert "use --merge instead" in warning
    assert not any("replaces whole plugin" in n for n in containerd_dropin(V2).notes)


@pytest.mark.parametrize(
    ("runtime", "message"),
    [
        (lambda: KataRuntime(name="Kata_GPU"), "is not a DNS label"),
        (lambda: KataRuntime(name=""), "is not a DNS label"),
        (lambda: KataRuntime(aliases=("a" * 64,)), "is not a DNS label"),
        (lambda: KataRuntime(aliases=(RUNTIME_CLASS_NAME,)), "handler names repeat"),
        (lambda: KataRuntime(runtime_path="bin/shim"), "runtime path 'bin/shim' is not absolute"),
        (lambda: KataRuntime(config_path="gpu.toml"), "config path 'gpu.toml' is not absolute"),
        (lambda: KataRuntime(cdi_spec_dirs=()), "CDI spec dirs [] must be absolute"),
        (lambda: KataRuntime(cdi_spec_dirs=("cdi",)), "must be absolute paths"),
    ],
    ids=["upper case", "empty", "too long", "alias repeats", "shim", "config", "no cdi", "cdi"],
)
def test_bad_runtime_settings_are_refused(runtime: Any, message: str) -> None:
    with pytest.raises(RuntimeConfigError) as info:
        runtime()
    assert message in str(info.value)
    assert isinstance(info.value, InvalidRequest)


def test_a_relative_dropin_path_is_refused() -> None:
    with pytest.raises(RuntimeConfigError, match="is not absolute"):
        containerd_dropin(V2, path="conf.d/kata.toml")


# --- the merge ----------------------------------------------------------------------------------


@VERSIONS
def test_merge_sets_our_keys_and_keeps_the_operators_settings_and_comments(
    version: ContainerdVersion,
) -> None:
    before = OPERATOR[version]
    merged = merge_containerd_config(before, version)
    for line in before.splitlines():
        if line.strip():
            assert line.strip() in merged.text, f"lost: {line!r}"
    assert _runtime(merged.text, version) == KATA_TABLE
    runc = _runtime(merged.text, version, "runc")
    assert runc == {"runtime_type": "io.containerd.runc.v2", "options": {"SystemdCgroup": True}}
    old, new = tomllib.loads(before), tomllib.loads(merged.text)
    del new["plugins"][CRI[version]]["containerd"]["runtimes"][RUNTIME_CLASS_NAME]
    for key in ("enable_cdi", "cdi_spec_dirs"):
        new["plugins"][CRI[version]].pop(key, None)
    assert new == old


@VERSIONS
def test_merge_reports_each_key_it_set(version: ContainerdVersion) -> None:
    merged = merge_containerd_config(OPERATOR[version], version)
    table = f'plugins."{CRI[version]}".containerd.runtimes.kata-qemu-nvidia-gpu'
    expected = [
        *([(f'plugins."{CRI[version]}".enable_cdi', None, True)] if version is V17 else []),
        (f'plugins."{CRI[version]}".cdi_spec_dirs', None, ["/etc/cdi", "/var/run/cdi"]),
        (f"{table}.runtime_type", None, KATA_RUNTIME_TYPE),
        (f"{table}.runtime_path", None, KATA_SHIM_PATH),
        (f"{table}.privileged_without_host_devices", None, True),
        (f"{table}.pod_annotations", None, ["io.katacontainers.*"]),
        (f"{table}.options.ConfigPath", None, KATA_CONFIG_PATH),
    ]
    assert [(c.key, c.old, c.new) for c in merged.changes] == expected
    assert str(merged.changes[-1]) == f'{table}.options.ConfigPath: (unset) -> "{KATA_CONFIG_PATH}"'


@VERSIONS
def test_merging_twice_changes_nothing_the_second_time(version: ContainerdVersion) -> None:
    once = merge_containerd_config(OPERATOR[version], version)
    twice = merge_containerd_config(once.text, version)
    assert twice.changes == ()
    assert twice.text == once.text


def test_merge_changes_wrong_values_and_keeps_other_keys_of_our_runtime() -> None:
    before = """\
version = 3
[plugins."io.containerd.cri.v1.runtime"]
  cdi_spec_dirs = ["/opt/cdi", "/var/run/cdi"]
  enable_cdi = false
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata-qemu-nvidia-gpu]
  runtime_type = "io.containerd.kata.v2"
  snapshotter = "nydus"  # guest pull
  pod_annotations = ["example.com/*"]
  privileged_without_host_devices = true
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata-qemu-nvidia-gpu.options]
  ConfigPath = "/old/configuration.toml"
  EnableDebug = true
"""
    merged = merge_containerd_config(before, V2)
    changes = {c.key.rsplit(".", 1)[-1]: (c.old, c.new) for c in merged.changes}
    assert changes == {
        "enable_cdi": (False, True),
        "cdi_spec_dirs": (["/opt/cdi", "/var/run/cdi"], ["/opt/cdi", "/var/run/cdi", "/etc/cdi"]),
        "runtime_type": ("io.containerd.kata.v2", KATA_RUNTIME_TYPE),
        "runtime_path": (None, KATA_SHIM_PATH),
        "pod_annotations": (["example.com/*"], ["example.com/*", "io.katacontainers.*"]),
        "ConfigPath": ("/old/configuration.toml", KATA_CONFIG_PATH),
    }
    runtime = _runtime(merged.text, V2)
    assert runtime["snapshotter"] == "nydus"
    assert runtime["options"] == {"ConfigPath": KATA_CONFIG_PATH, "EnableDebug": True}
    assert "# guest pull" in merged.text


def test_merge_on_2x_adds_no_enable_cdi() -> None:
    merged = merge_containerd_config("version = 3\n", V2)
    assert "enable_cdi" not in _cri(merged.text, V2)


def test_merge_into_a_version_4_config() -> None:
    merged = merge_containerd_config("version = 4\n", V2)
    assert tomllib.loads(merged.text)["version"] == 4
    assert _runtime(merged.text, V2) == KATA_TABLE


def test_merge_into_inline_tables_and_dotted_keys() -> None:
    before = """\
version = 3
plugins."io.containerd.cri.v1.runtime".containerd.default_runtime_name = "runc"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes]
runc = { runtime_type = "io.containerd.runc.v2", options = { SystemdCgroup = true } }
kata-qemu-nvidia-gpu = { runtime_type = "x", options = { Debug = true } }
"""
    merged = merge_containerd_config(before, V2)
    runtime = _runtime(merged.text, V2)
    assert runtime["options"] == {"Debug": True, "ConfigPath": KATA_CONFIG_PATH}
    assert runtime["runtime_type"] == KATA_RUNTIME_TYPE
    assert _cri(merged.text, V2)["containerd"]["default_runtime_name"] == "runc"
    assert merge_containerd_config(merged.text, V2).changes == ()


def test_the_test_mapping_removes_the_kata_keys_and_kata_mode_restores_them() -> None:
    kata = merge_containerd_config("version = 3\n", V2).text
    runc = merge_containerd_config(kata, V2, KataRuntime(test_runc_alias=True))
    assert {(c.key.rsplit(".", 1)[-1], c.new) for c in runc.changes} == {
        ("runtime_type", "io.containerd.runc.v2"),
        ("runtime_path", None),
        ("ConfigPath", None),
    }
    table = _runtime(runc.text, V2)
    assert table["runtime_type"] == "io.containerd.runc.v2"
    assert "runtime_path" not in table and "options" not in table
    assert merge_containerd_config(runc.text, V2, KataRuntime(test_runc_alias=True)).changes == ()
    assert _runtime(merge_containerd_config(runc.text, V2).text, V2) == KATA_TABLE


# --- refusals -----------------------------------------------------------------------------------

CRI2 = '[plugins."io.containerd.cri.v1.runtime"]'
RUNTIME2 = '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata-qemu-nvidia-gpu]'


@pytest.mark.parametrize(
    ("version", "text", "message"),
    [
        (V2, 'version = 3\n[plugins\nx = 1\n', "not valid TOML at line 2, column"),
        (V2, "version = 3\nversion = 3\n", "not valid TOML"),
        (V2, '[plugins."io.containerd.grpc.v1.cri"]\n', "has no `version`"),
        (V2, "version = 1\n", "run `containerd config migrate`"),
        (V17, "", "containerd 1.7 has no `config migrate`"),
        (V17, "version = 3\n", "1.7 reads only 2); pass --containerd 2"),
        (V17, "version = 4\n", "pass --containerd 2"),
        (V2, "version = 2\n", "pass --containerd 1.7 if this node runs containerd 1.7"),
        (V2, "version = 5\n", "version 5, which gpucaas does not know"),
        (V2, 'version = "3"\n', "`version` is '3', not an integer"),
        (V17, 'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\nenable_cdi = "yes"\n',
         'grpc.v1.cri".enable_cdi is "yes" (a string); containerd needs a boolean'),
        (V2, f'version = 3\n{CRI2}\nenable_cdi = 0\n', "enable_cdi is 0 (a number)"),
        (V2, f'version = 3\n{CRI2}\ncdi_spec_dirs = "/etc/cdi"\n',
         'cdi_spec_dirs is "/etc/cdi" (a string); containerd needs an array of strings'),
        (V2, f"version = 3\n{CRI2}\ncdi_spec_dirs = [1]\n", "needs an array of strings"),
        (V2, f"version = 3\n{RUNTIME2}\nruntime_type = 2\n", "runtime_type is 2 (a number)"),
        (V2, f"version = 3\n{RUNTIME2}\npod_annotations = 'io.*'\n", "pod_annotations is"),
        (V2, f"version = 3\n{RUNTIME2}\nprivileged_without_host_devices = 'no'\n", "a boolean"),
        (V2, f"version = 3\n{RUNTIME2}\noptions = 'x'\n", '"x" (a string); containerd needs a'),
        (V2, f"version = 3\n{RUNTIME2}\noptions = {{ ConfigPath = 1 }}\n", "ConfigPath is 1"),
        (V2, "version = 3\nplugins = 1\n", "plugins is 1 (a number); containerd needs a table"),
        (V2, 'version = 3\n[plugins."io.containerd.cri.v1.runtime".containerd]\nruntimes = []\n',
         "runtimes is [] (an array)"),
    ],
    ids=[
        "not toml", "duplicate key", "no version", "version 1 on 2.x", "no version on 1.7",
        "v3 on 1.7", "v4 on 1.7", "v2 on 2.x", "unknown version", "string version",
        "enable_cdi string", "enable_cdi number", "cdi dirs string", "cdi dirs numbers",
        "runtime_type", "pod_annotations", "privileged", "options", "ConfigPath", "plugins",
        "runtimes",
    ],
)  # fmt: skip
def test_merge_refuses_with_a_message_that_says_what_to_do(
    version: ContainerdVersion, text: str, message: str
) -> None:
    with pytest.raises(RuntimeConfigError) as info:
        merge_containerd_config(text, version, source="/etc/containerd/config.toml")
    assert str(info.value).startswith("/etc/containerd/config.toml: ")
    assert message in str(info.value)


# --- property: an operator's keys are never dropped ---------------------------------------------

_names = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
_scalars = st.one_of(
    st.integers(-(2**31), 2**31), st.booleans(), st.text(max_size=12), st.lists(_names, max_size=3)
)
_extra = st.dictionaries(_names.map(lambda n: f"x-{n}"), _scalars, max_size=4)


@st.composite
def operator_configs(draw: st.DrawFn) -> tuple[ContainerdVersion, str]:
    version = draw(st.sampled_from(list(ContainerdVersion)))
    runtimes: dict[str, Any] = {}
    for name in draw(st.lists(_names, max_size=3, unique=True)):
        table: dict[str, Any] = dict(draw(_extra))
        if draw(st.booleans()):
            table["options"] = draw(_extra)
        runtimes[name] = table
    if draw(st.booleans()):  # our own runtime, with the operator's extra keys
        runtimes[RUNTIME_CLASS_NAME] = {**draw(_extra), "options": draw(_extra)}
    cri: dict[str, Any] = {**draw(_extra), "containerd": {"runtimes": runtimes}}
    if draw(st.booleans()):
        cri["cdi_spec_dirs"] = draw(st.lists(st.sampled_from(["/etc/cdi", "/opt/cdi"]), max_size=2))
    data = {
        "version": draw(st.sampled_from(version.accepted_versions)),
        "plugins": {version.cri_plugin: cri, "io.containerd.gc.v1.scheduler": draw(_extra)},
        **draw(_extra),
    }
    return version, tomlkit.dumps(data)


def _without_ours(data: dict[str, Any], version: ContainerdVersion) -> dict[str, Any]:
    """``data`` less every key the merge owns (and our runtime table once it is empty)."""
    cri = data["plugins"][version.cri_plugin]
    cri.pop("enable_cdi", None)
    cri.pop("cdi_spec_dirs", None)
    runtimes = cri["containerd"]["runtimes"]
    ours = runtimes.get(RUNTIME_CLASS_NAME)
    if ours is not None:
        for key in ("runtime_type", "runtime_path", "privileged_without_host_devices"):
            ours.pop(key, None)
        ours.pop("pod_annotations", None)
        ours.get("options", {}).pop("ConfigPath", None)
        if ours.get("options") == {}:
            del ours["options"]
        if not ours:
            del runtimes[RUNTIME_CLASS_NAME]
    return data


@settings(max_examples=150, deadline=None)
@given(config=operator_configs())
def test_merge_never_drops_an_operator_key_and_is_idempotent(
    config: tuple[ContainerdVersion, str],
) -> None:
    version, before = config
    merged = merge_containerd_config(before, version)
    old, new = tomllib.loads(before), tomllib.loads(merged.text)
    old_dirs = old["plugins"][version.cri_plugin].get("cdi_spec_dirs", [])
    new_dirs = new["plugins"][version.cri_plugin]["cdi_spec_dirs"]
    assert new_dirs[: len(old_dirs)] == old_dirs
    assert set(CDI_SPEC_DIRS) <= set(new_dirs)
    ours = _runtime(merged.text, version)
    assert ours | KATA_TABLE | {"options": ours["options"]} == ours
    assert ours["options"]["ConfigPath"] == KATA_CONFIG_PATH
    assert _without_ours(new, version) == _without_ours(old, version)
    again = merge_containerd_config(merged.text, version)
    assert again.changes == ()
    assert again.text == merged.text

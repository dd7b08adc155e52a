"""CDI specs: generation, the version rules, every validation rule, atomic writing."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpucaas.cdi import (
    CdiDevice,
    CdiError,
    CdiSpec,
    ContainerEdits,
    DeviceNode,
    Hook,
    IntelRdt,
    Mount,
    NetDevice,
    Violation,
    ViolationCode,
    build_gpu_spec,
    minimum_version,
    qualified_name,
    spec_file_name,
    validate,
    write_spec,
)
from gpucaas.errors import InvalidRequest

EIGHT_GPUS = [(str(i), [str(63 + i)]) for i in range(8)]


def _node(path: str) -> dict[str, str]:
    return {"path": path, "type": "c", "permissions": "rwm"}


def _expected(names: list[str], nodes: list[str], shared: str, version: str) -> dict[str, Any]:
    return {
        "cdiVersion": version,
        "kind": "nvidia.com/gpu",
        "devices": [
            {"name": name, "containerEdits": {"deviceNodes": [_node(node)]}}
            for name, node in zip(names, nodes, strict=True)
        ],
        "containerEdits": {"deviceNodes": [_node(shared)]},
    }


# --------------------------------------------------------------------------- generation


@pytest.mark.parametrize(
    ("devices", "iommufd", "expected"),
    [
        pytest.param(
            EIGHT_GPUS,
            False,
            _expected(
                [str(i) for i in range(8)],
                [f"/dev/vfio/{63 + i}" for i in range(8)],
                "/dev/vfio/vfio",
                "0.5.0",
            ),
            id="8-gpus-digit-names-need-0.5.0",
        ),
        pytest.param(
            [(f"gpu{i}", [str(63 + i)]) for i in range(8)],
            False,
            _expected(
                [f"gpu{i}" for i in range(8)],
                [f"/dev/vfio/{63 + i}" for i in range(8)],
                "/dev/vfio/vfio",
                "0.3.0",
            ),
            id="8-gpus-letter-names-need-only-0.3.0",
        ),
        pytest.param(
            [(str(i), [f"vfio{i}"]) for i in range(8)],
            True,
            _expected(
                [str(i) for i in range(8)],
                [f"/dev/vfio/devices/vfio{i}" for i in range(8)],
                "/dev/iommu",
                "0.5.0",
            ),
            id="8-gpus-iommufd-cdevs-and-dev-iommu",
        ),
        pytest.param(
            [("0", ["/dev/vfio/63"]), ("1", ["/dev/vfio/64"])],
            False,
            _expected(["0", "1"], ["/dev/vfio/63", "/dev/vfio/64"], "/dev/vfio/vfio", "0.5.0"),
            id="absolute-group-paths-kept",
        ),
    ],
)
def test_build_gpu_spec_is_exactly_the_expected_json(
    devices: list[tuple[str, list[str]]], iommufd: bool, expected: dict[str, Any]
) -> None:
    spec = build_gpu_spec(devices, iommufd=iommufd)
    assert spec.to_json() == json.dumps(expected, indent=2) + "\n"
    assert validate(spec) == []


def test_build_gpu_spec_several_nodes_per_device_and_custom_kind() -> None:
    spec = build_gpu_spec([("a", ["10", "11"])], kind="example.com/vgpu")
    assert [n.path for n in spec.devices[0].edits.device_nodes] == ["/dev/vfio/10", "/dev/vfio/11"]
    assert spec.kind == "example.com/vgpu"
    assert spec.version == "0.3.0"


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        pytest.param(lambda: build_gpu_spec([]), "no GPUs", id="empty-device-list"),
        pytest.param(
            lambda: build_gpu_spec([("0", ["63"]), ("0", ["64"])]),
            "duplicate CDI device name",
            id="duplicate-name",
        ),
        pytest.param(
            lambda: build_gpu_spec(EIGHT_GPUS, kind="gpu"), "invalid CDI kind", id="kind-no-slash"
        ),
        pytest.param(
            lambda: build_gpu_spec(EIGHT_GPUS, kind="nvidia.com/gpu-"),
            "invalid CDI kind",
            id="kind-class-ends-with-dash",
        ),
        pytest.param(
            lambda: build_gpu_spec([("gpu 0", ["63"])]), "device name", id="bad-device-name"
        ),
        pytest.param(lambda: build_gpu_spec([("0", [])]), "no VFIO nodes", id="no-nodes"),
        pytest.param(
            lambda: build_gpu_spec([("0", ["63"])], iommufd=True),
            "not an iommufd node",
            id="group-number-in-iommufd-mode",
        ),
        pytest.param(
            lambda: build_gpu_spec([("0", ["vfio0"])]),
            "not a legacy VFIO node",
            id="cdev-in-legacy-mode",
        ),
        pytest.param(
            lambda: build_gpu_spec([("0", ["/dev/vfio/vfio"])]),
            "not a legacy VFIO node",
            id="container-as-device-node",
        ),
        pytest.param(
            lambda: build_gpu_spec([("0", ["63"]), ("1", ["63"])]),
            "given to devices '0' and '1'",
            id="one-group-two-devices",
        ),
    ],
)
def test_build_gpu_spec_refuses(call: Callable[[], object], fragment: str) -> None:
    with pytest.raises(CdiError) as info:
        call()
    assert isinstance(info.value, InvalidRequest)
    assert fragment in str(info.value)
    assert ";" in str(info.value)  # what; what to do


# --------------------------------------------------------------------------- names


def test_names_and_file_names() -> None:
    assert qualified_name("nvidia.com/gpu", "3") == "nvidia.com/gpu=3"
    assert spec_file_name("nvidia.com/gpu") == "nvidia.com-gpu.json"
    with pytest.raises(CdiError, match="invalid CDI kind"):
        spec_file_name("nvidia.com")
    with pytest.raises(CdiError, match="device name"):
        qualified_name("nvidia.com/gpu", "3:")


# --------------------------------------------------------------------------- versions


def _spec(**changes: Any) -> CdiSpec:
    base = CdiSpec(
        version="1.1.0",
        kind="nvidia.com/gpu",
        devices=(CdiDevice("gpu0", ContainerEdits(device_nodes=(DeviceNode("/dev/vfio/63"),))),),
    )
    return CdiSpec(**{**base.__dict__, **changes})


def _edits(**changes: Any) -> ContainerEdits:
    return ContainerEdits(device_nodes=(DeviceNode("/dev/vfio/63"),), **changes)


@pytest.mark.parametrize(
    ("spec", "version"),
    [
        pytest.param(_spec(), "0.3.0", id="plain-needs-earliest-0.3.0"),
        pytest.param(
            _spec(edits=ContainerEdits(mounts=(Mount("/a", "/b", type="bind"),))),
            "0.4.0",
            id="mount-type-0.4.0",
        ),
        pytest.param(
            _spec(devices=(CdiDevice("0", _edits()),)), "0.5.0", id="digit-first-name-0.5.0"
        ),
        pytest.param(
            _spec(edits=ContainerEdits(device_nodes=(DeviceNode("/d", host_path="/h"),))),
            "0.5.0",
            id="device-node-host-path-0.5.0",
        ),
        pytest.param(_spec(annotations={"a": "b"}), "0.6.0", id="spec-annotations-0.6.0"),
        pytest.param(
            _spec(devices=(CdiDevice("gpu0", _edits(), {"a": "b"}),)),
            "0.6.0",
            id="device-annotations-0.6.0",
        ),
        pytest.param(_spec(kind="nvidia.com/gpu.x"), "0.6.0", id="dot-in-class-0.6.0"),
        pytest.param(
            _spec(edits=ContainerEdits(intel_rdt=IntelRdt(clos_id="c"))),
            "0.7.0",
            id="intel-rdt-0.7.0",
        ),
        pytest.param(
            _spec(devices=(CdiDevice("gpu0", _edits(additional_gids=(5,))),)),
            "0.7.0",
            id="additional-gids-0.7.0",
        ),
        pytest.param(
            _spec(devices=(CdiDevice("gpu0", _edits(net_devices=(NetDevice("eth0", "n0"),))),)),
            "1.1.0",
            id="net-devices-1.1.0",
        ),
        pytest.param(
            _spec(edits=ContainerEdits(intel_rdt=IntelRdt(schemata=()))),
            "1.1.0",
            id="intel-rdt-schemata-1.1.0",
        ),
        pytest.param(
            _spec(edits=ContainerEdits(intel_rdt=IntelRdt(enable_monitoring=True))),
            "1.1.0",
            id="intel-rdt-monitoring-1.1.0",
        ),
        pytest.param(
            _spec(
                devices=(CdiDevice("0", _edits(additional_gids=(1,))),),
                annotations={"a": "b"},
            ),
            "0.7.0",
            id="highest-rule-wins",
        ),
    ],
)
def test_minimum_version(spec: CdiSpec, version: str) -> None:
    assert minimum_version(spec) == version


# --------------------------------------------------------------------------- validation


def _valid_raw() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(build_gpu_spec([("0", ["63"]), ("1", ["64"])]).to_json())
    return raw


def _dev_edits(raw: dict[str, Any], i: int = 0) -> dict[str, Any]:
    edits: dict[str, Any] = raw["devices"][i]["containerEdits"]
    return edits


def _mutate(fn: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    raw = copy.deepcopy(_valid_raw())
    fn(raw)
    return raw


# (description, mutation, code, location)
VALIDATION_CASES: list[tuple[str, Callable[[dict[str, Any]], object], ViolationCode, str]] = [
    ("unknown-top-field", lambda r: r.update(extra=1), ViolationCode.UNKNOWN_FIELD, "extra"),
    (
        "unknown-device-node-field",
        lambda r: _dev_edits(r)["deviceNodes"][0].update(majr=1),
        ViolationCode.UNKNOWN_FIELD,
        "devices[0].containerEdits.deviceNodes[0].majr",
    ),
    (
        "unknown-edits-field-1.2-annotations",
        lambda r: _dev_edits(r).update(annotations={}),
        ViolationCode.UNKNOWN_FIELD,
        "devices[0].containerEdits.annotations",
    ),
    ("missing-kind", lambda r: r.pop("kind"), ViolationCode.MISSING_FIELD, "kind"),
    (
        "missing-node-path",
        lambda r: _dev_edits(r)["deviceNodes"][0].pop("path"),
        ViolationCode.MISSING_FIELD,
        "devices[0].containerEdits.deviceNodes[0].path",
    ),
    (
        "name-not-a-string",
        lambda r: r["devices"][0].update(name=3),
        ViolationCode.WRONG_TYPE,
        "devices[0].name",
    ),
    (
        "gid-negative",
        lambda r: _dev_edits(r).update(additionalGids=[-1]),
        ViolationCode.WRONG_TYPE,
        "devices[0].containerEdits.additionalGids",
    ),
    (
        "unknown-version",
        lambda r: r.update(cdiVersion="0.9.0"),
        ViolationCode.UNKNOWN_VERSION,
        "cdiVersion",
    ),
    (
        "digit-name-below-0.5.0",
        lambda r: r.update(cdiVersion="0.4.0"),
        ViolationCode.VERSION_TOO_LOW,
        "cdiVersion",
    ),
    (
        "annotations-below-0.6.0",
        lambda r: r.update(annotations={"example.com/a": "b"}),
        ViolationCode.VERSION_TOO_LOW,
        "cdiVersion",
    ),
    (
        "empty-net-devices-below-1.1.0",
        lambda r: (r.update(cdiVersion="1.0.0"), _dev_edits(r).update(netDevices=[])),
        ViolationCode.FIELD_NOT_IN_VERSION,
        "devices[0].containerEdits.netDevices",
    ),
    (
        "bool-field-given-a-number",
        lambda r: (r.update(cdiVersion="1.1.0"), _dev_edits(r).update(intelRdt={"enableCMT": 1})),
        ViolationCode.WRONG_TYPE,
        "devices[0].containerEdits.intelRdt.enableCMT",
    ),
    (
        "enable-mbm-removed-in-1.1.0",
        lambda r: (
            r.update(cdiVersion="1.1.0"),
            _dev_edits(r).update(intelRdt={"enableMBM": True}),
        ),
        ViolationCode.FIELD_NOT_IN_VERSION,
        "devices[0].containerEdits.intelRdt.enableMBM",
    ),
    (
        "kind-without-class",
        lambda r: r.update(kind="nvidia.com"),
        ViolationCode.INVALID_KIND,
        "kind",
    ),
    (
        "vendor-starts-with-digit",
        lambda r: r.update(kind="1nvidia.com/gpu"),
        ViolationCode.INVALID_KIND,
        "kind",
    ),
    (
        "class-bad-character",
        lambda r: r.update(kind="nvidia.com/g@u"),
        ViolationCode.INVALID_KIND,
        "kind",
    ),
    (
        "name-starts-with-dash",
        lambda r: r["devices"][0].update(name="-0"),
        ViolationCode.INVALID_DEVICE_NAME,
        "devices[0].name",
    ),
    (
        "name-ends-with-colon",
        lambda r: r["devices"][0].update(name="gpu:"),
        ViolationCode.INVALID_DEVICE_NAME,
        "devices[0].name",
    ),
    (
        "name-with-space",
        lambda r: r["devices"][0].update(name="gpu 0"),
        ViolationCode.INVALID_DEVICE_NAME,
        "devices[0].name",
    ),
    (
        "duplicate-name",
        lambda r: r["devices"][1].update(name="0"),
        ViolationCode.DUPLICATE_DEVICE,
        "devices[1].name",
    ),
    ("no-devices", lambda r: r.update(devices=[]), ViolationCode.NO_DEVICES, "devices"),
    (
        "empty-device-edits",
        lambda r: r["devices"][0].update(containerEdits={}),
        ViolationCode.EMPTY_EDITS,
        "devices[0].containerEdits",
    ),
    (
        "env-without-equals",
        lambda r: r["containerEdits"].update(env=["FOO"]),
        ViolationCode.INVALID_ENV,
        "containerEdits.env[0]",
    ),
    (
        "device-node-bad-type",
        lambda r: _dev_edits(r)["deviceNodes"][0].update(type="x"),
        ViolationCode.INVALID_DEVICE_NODE,
        "devices[0].containerEdits.deviceNodes[0].type",
    ),
    (
        "device-node-bad-permissions",
        lambda r: _dev_edits(r)["deviceNodes"][0].update(permissions="rwx"),
        ViolationCode.INVALID_DEVICE_NODE,
        "devices[0].containerEdits.deviceNodes[0].permissions",
    ),
    (
        "mount-empty-container-path",
        lambda r: _dev_edits(r).update(mounts=[{"hostPath": "/a", "containerPath": ""}]),
        ViolationCode.INVALID_MOUNT,
        "devices[0].containerEdits.mounts[0].containerPath",
    ),
    (
        "hook-unknown-name",
        lambda r: _dev_edits(r).update(hooks=[{"hookName": "preStart", "path": "/bin/true"}]),
        ViolationCode.INVALID_HOOK,
        "devices[0].containerEdits.hooks[0].hookName",
    ),
    (
        "intel-rdt-bad-clos",
        lambda r: (r.update(cdiVersion="0.7.0"), _dev_edits(r).update(intelRdt={"closID": ".."})),
        ViolationCode.INVALID_INTEL_RDT,
        "devices[0].containerEdits.intelRdt.closID",
    ),
    (
        "net-device-duplicate-host-interface",
        lambda r: (
            r.update(cdiVersion="1.1.0"),
            _dev_edits(r).update(
                netDevices=[
                    {"hostInterfaceName": "eth0", "name": "a"},
                    {"hostInterfaceName": "eth0", "name": "b"},
                ]
            ),
        ),
        ViolationCode.INVALID_NET_DEVICE,
        "devices[0].containerEdits.netDevices[1].hostInterfaceName",
    ),
    (
        "annotation-bad-key",
        lambda r: (r.update(cdiVersion="0.6.0"), r["devices"][0].update(annotations={"a b": "c"})),
        ViolationCode.INVALID_ANNOTATION,
        "devices[0].annotations['a b']",
    ),
]


@pytest.mark.parametrize(
    ("mutation", "code", "location"),
    [pytest.param(m, c, loc, id=desc) for desc, m, c, loc in VALIDATION_CASES],
)
def test_each_rule_reports_its_violation(
    tmp_path: Path,
    mutation: Callable[[dict[str, Any]], object],
    code: ViolationCode,
    location: str,
) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(_mutate(mutation)))
    violations = validate(path)
    assert [(v.code, v.location) for v in violations] == [(code, location)]
    (violation,) = violations
    assert violation.is_error
    assert violation.source == str(path)
    assert ";" in violation.message or "." in violation.message  # says what to do
    assert str(path) in str(violation)


def test_valid_file_has_no_violations(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(_valid_raw()))
    assert validate(path) == []


def test_every_violation_is_reported_not_only_the_first(tmp_path: Path) -> None:
    raw = _valid_raw()
    raw["kind"] = "gpu"
    raw["devices"][1]["name"] = "0"
    raw["containerEdits"]["env"] = ["X"]
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(raw))
    codes = {v.code for v in validate(path)}
    assert codes == {
        ViolationCode.INVALID_KIND,
        ViolationCode.DUPLICATE_DEVICE,
        ViolationCode.INVALID_ENV,
    }


def test_version_below_minimum_names_the_needed_version() -> None:
    spec = build_gpu_spec(EIGHT_GPUS)
    old = CdiSpec("0.3.0", spec.kind, spec.devices, spec.edits)
    (violation,) = validate(old)
    assert violation.code == ViolationCode.VERSION_TOO_LOW
    assert "0.5.0" in violation.message


def test_v_prefixed_version_is_accepted() -> None:
    spec = build_gpu_spec(EIGHT_GPUS)
    assert validate(CdiSpec("v0.5.0", spec.kind, spec.devices, spec.edits)) == []


def test_not_json_is_a_parse_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    (violation,) = validate(path)
    assert violation.code == ViolationCode.PARSE_ERROR


def test_top_level_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[]")
    (violation,) = validate(path)
    assert violation.code == ViolationCode.PARSE_ERROR


def test_yaml_spec_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps(_mutate(lambda r: r.update(kind="gpu"))))  # JSON is YAML
    assert [v.code for v in validate(path)] == [ViolationCode.INVALID_KIND]


# --------------------------------------------------------------------------- spec directory


def test_same_device_in_two_files_of_a_spec_dir(tmp_path: Path) -> None:
    ours = build_gpu_spec(EIGHT_GPUS)
    other = build_gpu_spec([("3", ["90"])])
    (tmp_path / "vendor-other.json").write_text(other.to_json())
    violations = validate(ours, spec_dir=tmp_path)
    assert [(v.code, v.location) for v in violations] == [
        (ViolationCode.CONFLICTING_SPEC, "devices[3].name")
    ]
    assert "nvidia.com/gpu=3" in violations[0].message
    assert "vendor-other.json" in violations[0].message


def test_spec_dir_same_name_other_kind_is_no_conflict(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(build_gpu_spec([("3", ["90"])], kind="x.com/y").to_json())
    assert validate(build_gpu_spec(EIGHT_GPUS), spec_dir=tmp_path) == []


def test_spec_dir_does_not_compare_a_file_with_itself(tmp_path: Path) -> None:
    path = tmp_path / "nvidia.com-gpu.json"
    path.write_text(build_gpu_spec(EIGHT_GPUS).to_json())
    (tmp_path / "notes.txt").write_text("not a spec")
    assert validate(path, spec_dir=tmp_path) == []


def test_spec_dir_unreadable_neighbour_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{")
    (violation,) = validate(build_gpu_spec(EIGHT_GPUS), spec_dir=tmp_path)
    assert violation.code == ViolationCode.OTHER_SPEC_UNREADABLE
    assert not violation.is_error


# --------------------------------------------------------------------------- round trip


FULL_SPEC = CdiSpec(
    version="1.1.0",
    kind="example.com/dev.x",
    annotations={"example.com/owner": "gpucaas", "a": "1"},
    devices=(
        CdiDevice(
            "dev-0",
            ContainerEdits(
                env=("A=1",),
                device_nodes=(
                    DeviceNode(
                        "/dev/x0",
                        host_path="/dev/y0",
                        major=195,
                        minor=0,
                        file_mode=0o666,
                        uid=0,
                        gid=0,
                    ),
                    DeviceNode("/dev/x1", type="", permissions=""),
                ),
                net_devices=(NetDevice("eth1", "net1"),),
                hooks=(Hook("createContainer", "/bin/hook", ("hook", "x"), ("B=2",), 5),),
                mounts=(Mount("/h", "/c", ("ro", "bind"), "bind"),),
                intel_rdt=IntelRdt(clos_id="c1", schemata=("L3:0=f",), enable_monitoring=True),
                additional_gids=(44, 45),
            ),
            annotations={"example.com/slot": "0"},
        ),
    ),
    edits=ContainerEdits(env=("GLOBAL=1",), intel_rdt=IntelRdt(l3_cache_schema="L3:0=ff")),
)


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(build_gpu_spec(EIGHT_GPUS), id="generated-gpu-spec"),
        pytest.param(build_gpu_spec([("a", ["vfio0"])], iommufd=True, kind="a.b/c"), id="iommufd"),
        pytest.param(FULL_SPEC, id="every-1.1.0-field"),
    ],
)
def test_round_trip(spec: CdiSpec) -> None:
    text = spec.to_json()
    again = CdiSpec.from_json(text)
    assert again == spec
    assert again.to_json() == text
    assert validate(again) == []


def test_to_json_key_order_follows_the_reference_types() -> None:
    raw = json.loads(FULL_SPEC.to_json())
    assert list(raw) == ["cdiVersion", "kind", "annotations", "devices", "containerEdits"]
    assert list(raw["annotations"]) == ["a", "example.com/owner"]
    edits = raw["devices"][0]["containerEdits"]
    assert list(edits) == [
        "env",
        "deviceNodes",
        "netDevices",
        "hooks",
        "mounts",
        "intelRdt",
        "additionalGids",
    ]
    assert list(edits["deviceNodes"][0]) == [
        "path",
        "hostPath",
        "type",
        "major",
        "minor",
        "fileMode",
        "permissions",
        "uid",
        "gid",
    ]
    assert edits["deviceNodes"][1] == {"path": "/dev/x1"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param('{"cdiVersion": "0.5.0"', "not valid JSON", id="bad-json"),
        pytest.param(
            json.dumps({**_valid_raw(), "extra": 1}), "unknown field 'extra'", id="unknown-field"
        ),
        pytest.param(
            json.dumps({k: v for k, v in _valid_raw().items() if k != "devices"}),
            "'devices' is missing",
            id="missing-devices",
        ),
    ],
)
def test_from_json_is_strict(text: str, fragment: str) -> None:
    with pytest.raises(CdiError, match=fragment):
        CdiSpec.from_json(text)


# --------------------------------------------------------------------------- writing


def test_write_spec_is_atomic_and_named_after_the_kind(tmp_path: Path) -> None:
    directory = tmp_path / "cdi"
    spec = build_gpu_spec(EIGHT_GPUS)
    path = write_spec(spec, directory)
    assert path == directory / "nvidia.com-gpu.json"
    assert [p.name for p in directory.iterdir()] == ["nvidia.com-gpu.json"]  # no temp file
    assert CdiSpec.from_json(path.read_text()) == spec
    # Rewriting our own file is no conflict with itself.
    again = build_gpu_spec(EIGHT_GPUS[:4])
    assert write_spec(again, directory) == path
    assert [p.name for p in directory.iterdir()] == ["nvidia.com-gpu.json"]
    assert CdiSpec.from_json(path.read_text()) == again


def test_write_spec_refuses_an_invalid_spec(tmp_path: Path) -> None:
    good = build_gpu_spec(EIGHT_GPUS)
    bad = CdiSpec("0.3.0", good.kind, good.devices + good.devices[:1], good.edits)
    with pytest.raises(CdiError) as info:
        write_spec(bad, tmp_path)
    codes = {v.code for v in info.value.violations}
    assert codes == {ViolationCode.VERSION_TOO_LOW, ViolationCode.DUPLICATE_DEVICE}
    assert "refusing to write" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_write_spec_refuses_a_device_another_file_defines(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text(build_gpu_spec([("7", ["99"])]).to_json())
    with pytest.raises(CdiError) as info:
        write_spec(build_gpu_spec(EIGHT_GPUS), tmp_path)
    assert [v.code for v in info.value.violations] == [ViolationCode.CONFLICTING_SPEC]
    assert [p.name for p in tmp_path.iterdir()] == ["other.json"]


def test_violation_str() -> None:
    v = Violation(ViolationCode.NO_DEVICES, "devices", "add one", source="/x.json")
    assert str(v) == "/x.json: devices: no-devices: add one"

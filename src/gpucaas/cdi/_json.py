"""The JSON form of a CDI spec: field tables in the order of the reference Go types, a
structural check as strict as the reference parser (``UnmarshalStrict``: unknown fields are
errors), and the mapping between raw documents and the typed model."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from ._errors import CdiError
from ._model import (
    CdiDevice,
    CdiSpec,
    ContainerEdits,
    DeviceNode,
    Hook,
    IntelRdt,
    Mount,
    NetDevice,
    Violation,
    ViolationCode,
)

# Field tables in the order of the reference Go types, which is also our JSON key order.
# Kinds: str, int, uint32, bool, strs, uint32s, strmap, or the name of a nested object
# (suffix "[]" for a list of them).
_SCHEMA: Final[dict[str, dict[str, str]]] = {
    "spec": {
        "cdiVersion": "str",
        "kind": "str",
        "annotations": "strmap",
        "devices": "device[]",
        "containerEdits": "edits",
    },
    "device": {"name": "str", "annotations": "strmap", "containerEdits": "edits"},
    "edits": {
        "env": "strs",
        "deviceNodes": "deviceNode[]",
        "netDevices": "netDevice[]",
        "hooks": "hook[]",
        "mounts": "mount[]",
        "intelRdt": "intelRdt",
        "additionalGids": "uint32s",
    },
    "deviceNode": {
        "path": "str",
        "hostPath": "str",
        "type": "str",
        "major": "int",
        "minor": "int",
        "fileMode": "uint32",
        "permissions": "str",
        "uid": "uint32",
        "gid": "uint32",
    },
    "mount": {"hostPath": "str", "containerPath": "str", "options": "strs", "type": "str"},
    "hook": {"hookName": "str", "path": "str", "args": "strs", "env": "strs", "timeout": "int"},
    "intelRdt": {
        "closID": "str",
        "l3CacheSchema": "str",
        "memBwSchema": "str",
        "schemata": "strs",
        "enableMonitoring": "bool",
        # In 0.7.0 to 1.0.0 only; judged against cdiVersion in validate().
        "enableCMT": "bool",
        "enableMBM": "bool",
    },
    "netDevice": {"hostInterfaceName": "str", "name": "str"},
}
_REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "spec": ("cdiVersion", "kind", "devices"),
    "device": ("name",),
    "deviceNode": ("path",),
    "mount": ("hostPath", "containerPath"),
    "hook": ("hookName", "path"),
    "netDevice": ("hostInterfaceName", "name"),
}
_UINT32_MAX: Final = 2**32 - 1
_INT64_RANGE: Final = range(-(2**63), 2**63)


def _check_structure(raw: object, obj: str, where: str, out: list[Violation]) -> None:
    """Append a violation for every unknown, missing or mistyped field under ``raw``."""
    if not isinstance(raw, dict):
        out.append(_type_violation(where or "(top)", f"an object ({obj})", raw))
        return
    fields = _SCHEMA[obj]
    for key in raw:
        if key not in fields:
            known = ", ".join(fields)
            out.append(
                Violation(
                    ViolationCode.UNKNOWN_FIELD,
                    _join(where, str(key)),
                    f"unknown field {key!r}; the CDI parser rejects the whole file. "
                    f"Remove it or fix its spelling (known here: {known})",
                )
            )
    for key in _REQUIRED.get(obj, ()):
        if raw.get(key) is None:
            out.append(
                Violation(
                    ViolationCode.MISSING_FIELD,
                    _join(where, key),
                    f"required field {key!r} is missing; add it",
                )
            )
    for key, kind in fields.items():
        value = raw.get(key)
        if value is None:
            continue
        loc = _join(where, key)
        if kind.endswith("[]"):
            if not isinstance(value, list):
                out.append(_type_violation(loc, "a list", value))
                continue
            for i, item in enumerate(value):
                _check_structure(item, kind[:-2], f"{loc}[{i}]", out)
        elif kind in _SCHEMA:
            _check_structure(value, kind, loc, out)
        else:
            expected = _scalar_problem(kind, value)
            if expected:
                out.append(_type_violation(loc, expected, value))


def _scalar_problem(kind: str, value: object) -> str | None:
    """The expected type if ``value`` does not fit ``kind``, else None."""
    if kind == "str":
        return None if isinstance(value, str) else "a string"
    if kind == "bool":
        return None if isinstance(value, bool) else "true or false"
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and value in _INT64_RANGE
        return None if ok else "an integer"
    if kind == "uint32":
        return None if _is_uint32(value) else "an integer from 0 to 4294967295"
    if kind == "strs":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return None if ok else "a list of strings"
    if kind == "uint32s":
        ok = isinstance(value, list) and all(_is_uint32(v) for v in value)
        return None if ok else "a list of integers from 0 to 4294967295"
    if kind == "strmap":
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        return None if ok else "an object of string values"
    raise AssertionError(f"unknown schema kind {kind}")  # pragma: no cover


def _is_uint32(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _UINT32_MAX


def _type_violation(where: str, expected: str, value: object) -> Violation:
    return Violation(
        ViolationCode.WRONG_TYPE,
        where,
        f"expected {expected}, found {type(value).__name__} {_short(value)}; fix the value",
    )


def _short(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str | int | float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _spec_from_structured(raw: object) -> CdiSpec:
    """Typed spec from a decoded document; CdiError on structural violations."""
    problems: list[Violation] = []
    _check_structure(raw, "spec", "", problems)
    if problems:
        raise CdiError(
            "CDI spec has invalid structure",
            f"{len(problems)} problem(s)",
            "fix the fields listed below",
            problems,
        )
    assert isinstance(raw, dict)
    return _spec_from_raw(raw)


def _spec_from_raw(raw: Mapping[str, Any]) -> CdiSpec:
    """Typed spec from a structurally checked document (see :func:`_check_structure`)."""
    return CdiSpec(
        version=raw["cdiVersion"],
        kind=raw["kind"],
        devices=tuple(
            CdiDevice(
                name=d["name"],
                edits=_edits_from_raw(d.get("containerEdits") or {}),
                annotations=dict(d.get("annotations") or {}),
            )
            for d in raw["devices"]
        ),
        edits=_edits_from_raw(raw.get("containerEdits") or {}),
        annotations=dict(raw.get("annotations") or {}),
    )


def _edits_from_raw(raw: Mapping[str, Any]) -> ContainerEdits:
    rdt = raw.get("intelRdt")
    return ContainerEdits(
        env=tuple(raw.get("env") or ()),
        device_nodes=tuple(
            DeviceNode(
                path=n["path"],
                type=n.get("type") or "",
                permissions=n.get("permissions") or "",
                major=n.get("major"),
                minor=n.get("minor"),
                host_path=n.get("hostPath") or "",
                file_mode=n.get("fileMode"),
                uid=n.get("uid"),
                gid=n.get("gid"),
            )
            for n in raw.get("deviceNodes") or ()
        ),
        net_devices=tuple(
            NetDevice(host_interface_name=n["hostInterfaceName"], name=n["name"])
            for n in raw.get("netDevices") or ()
        ),
        hooks=tuple(
            Hook(
                hook_name=h["hookName"],
                path=h["path"],
                args=tuple(h.get("args") or ()),
                env=tuple(h.get("env") or ()),
                timeout=h.get("timeout"),
            )
            for h in raw.get("hooks") or ()
        ),
        mounts=tuple(
            Mount(
                host_path=m["hostPath"],
                container_path=m["containerPath"],
                options=tuple(m.get("options") or ()),
                type=m.get("type") or "",
            )
            for m in raw.get("mounts") or ()
        ),
        intel_rdt=None
        if rdt is None
        else IntelRdt(
            clos_id=rdt.get("closID") or "",
            l3_cache_schema=rdt.get("l3CacheSchema") or "",
            mem_bw_schema=rdt.get("memBwSchema") or "",
            schemata=None if rdt.get("schemata") is None else tuple(rdt["schemata"]),
            enable_monitoring=bool(rdt.get("enableMonitoring")),
            enable_cmt=bool(rdt.get("enableCMT")),
            enable_mbm=bool(rdt.get("enableMBM")),
        ),
        additional_gids=tuple(raw.get("additionalGids") or ()),
    )


def _spec_to_raw(spec: CdiSpec) -> dict[str, Any]:
    raw: dict[str, Any] = {"cdiVersion": spec.version, "kind": spec.kind}
    if spec.annotations:
        raw["annotations"] = dict(sorted(spec.annotations.items()))
    devices = []
    for device in spec.devices:
        entry: dict[str, Any] = {"name": device.name}
        if device.annotations:
            entry["annotations"] = dict(sorted(device.annotations.items()))
        entry["containerEdits"] = _edits_to_raw(device.edits)
        devices.append(entry)
    raw["devices"] = devices
    if not spec.edits.is_empty():
        raw["containerEdits"] = _edits_to_raw(spec.edits)
    return raw


def _edits_to_raw(edits: ContainerEdits) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if edits.env:
        raw["env"] = list(edits.env)
    if edits.device_nodes:
        raw["deviceNodes"] = [_node_to_raw(n) for n in edits.device_nodes]
    if edits.net_devices:
        raw["netDevices"] = [
            {"hostInterfaceName": n.host_interface_name, "name": n.name} for n in edits.net_devices
        ]
    if edits.hooks:
        raw["hooks"] = [_hook_to_raw(h) for h in edits.hooks]
    if edits.mounts:
        raw["mounts"] = [_mount_to_raw(m) for m in edits.mounts]
    if edits.intel_rdt is not None:
        raw["intelRdt"] = _rdt_to_raw(edits.intel_rdt)
    if edits.additional_gids:
        raw["additionalGids"] = list(edits.additional_gids)
    return raw


def _node_to_raw(node: DeviceNode) -> dict[str, Any]:
    raw: dict[str, Any] = {"path": node.path}
    if node.host_path:
        raw["hostPath"] = node.host_path
    if node.type:
        raw["type"] = node.type
    if node.major is not None:
        raw["major"] = node.major
    if node.minor is not None:
        raw["minor"] = node.minor
    if node.file_mode is not None:
        raw["fileMode"] = node.file_mode
    if node.permissions:
        raw["permissions"] = node.permissions
    if node.uid is not None:
        raw["uid"] = node.uid
    if node.gid is not None:
        raw["gid"] = node.gid
    return raw


def _hook_to_raw(hook: Hook) -> dict[str, Any]:
    raw: dict[str, Any] = {"hookName": hook.hook_name, "path": hook.path}
    if hook.args:
        raw["args"] = list(hook.args)
    if hook.env:
        raw["env"] = list(hook.env)
    if hook.timeout is not None:
        raw["timeout"] = hook.timeout
    return raw


def _mount_to_raw(mount: Mount) -> dict[str, Any]:
    raw: dict[str, Any] = {"hostPath": mount.host_path, "containerPath": mount.container_path}
    if mount.options:
        raw["options"] = list(mount.options)
    if mount.type:
        raw["type"] = mount.type
    return raw


def _rdt_to_raw(rdt: IntelRdt) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if rdt.clos_id:
        raw["closID"] = rdt.clos_id
    if rdt.l3_cache_schema:
        raw["l3CacheSchema"] = rdt.l3_cache_schema
    if rdt.mem_bw_schema:
        raw["memBwSchema"] = rdt.mem_bw_schema
    if rdt.schemata is not None:
        raw["schemata"] = list(rdt.schemata)
    if rdt.enable_monitoring:
        raw["enableMonitoring"] = True
    if rdt.enable_cmt:
        raw["enableCMT"] = True
    if rdt.enable_mbm:
        raw["enableMBM"] = True
    return raw

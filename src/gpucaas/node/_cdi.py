"""CDI (Container Device Interface) specs for the Kata cold-plug path.

Why this module exists: the Kata shim resolves the kubelet's ``<resource>=<device id>`` names
through the CDI spec files in ``/var/run/cdi`` to ``/dev/vfio/...`` nodes and from there to the
GPU's BDF. The spec we write must therefore be one the reference library
(cncf-tags/container-device-interface) accepts, or the pod never starts. We write our own
reader and checker from the published definitions instead of shelling out to a Go tool,
because the node agent must validate before it writes and report every problem at once.

What it covers (CDI spec 1.1.0, ``specs-go/config.go``):

* typed, frozen values for every field of a spec (:class:`CdiSpec`, :class:`CdiDevice`,
  :class:`ContainerEdits`, :class:`DeviceNode`, :class:`Mount`, :class:`Hook`,
  :class:`IntelRdt`, :class:`NetDevice`), with :meth:`CdiSpec.to_json` and
  :meth:`CdiSpec.from_json`;
* :func:`minimum_version`, the lowest ``cdiVersion`` the used fields need, by the rules of
  ``specs-go/version.go`` (``requiresV040`` ... ``requiresV110``);
* :func:`validate`, which returns every :class:`Violation` (code, location, message) instead
  of stopping at the first, including devices that another spec file in the same directory
  also defines (the CDI cache then refuses both);
* :func:`build_gpu_spec` and :func:`write_spec` for the spec the device plugin needs.

What it refuses to do: write a spec with any error-level violation, guess module IDs, or put
both the legacy VFIO container and the iommufd nodes in one spec (see :func:`build_gpu_spec`).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from gpucaas._files import write_atomically
from gpucaas.errors import InvalidRequest

__all__ = [
    "CDI_SPEC_DIR",
    "CURRENT_VERSION",
    "CdiDevice",
    "CdiError",
    "CdiSpec",
    "ContainerEdits",
    "DeviceNode",
    "HOOK_NAMES",
    "Hook",
    "IOMMU_DEVICE",
    "IntelRdt",
    "KNOWN_VERSIONS",
    "Mount",
    "NetDevice",
    "VFIO_CONTAINER",
    "Violation",
    "ViolationCode",
    "build_gpu_spec",
    "minimum_version",
    "qualified_name",
    "spec_file_name",
    "validate",
    "write_spec",
]

#: The directory containerd and the Kata shim read dynamic (runtime-generated) CDI specs from.
CDI_SPEC_DIR: Final = Path("/var/run/cdi")

#: The newest CDI spec version this module knows (``specs-go/version.go`` CurrentVersion).
CURRENT_VERSION: Final = "1.1.0"

#: Every released spec version, oldest first. 0.1.0 and 0.2.0 are still accepted as values,
#: but no spec can need less than 0.3.0 (``vEarliest`` in the reference).
KNOWN_VERSIONS: Final = (
    "0.1.0",
    "0.2.0",
    "0.3.0",
    "0.4.0",
    "0.5.0",
    "0.6.0",
    "0.7.0",
    "0.8.0",
    "1.0.0",
    "1.1.0",
)
_EARLIEST: Final = "0.3.0"

#: The OCI hook names a CDI hook may use (``pkg/cdi/container-edits.go``).
HOOK_NAMES: Final = frozenset(
    {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}
)
_DEVICE_NODE_TYPES: Final = frozenset({"", "b", "c", "u", "p"})
#: Kubernetes' limit on the total size of one object's annotations, which CDI reuses.
_ANNOTATIONS_MAX_BYTES: Final = 256 * 1024

#: Default legacy VFIO container node, shared by every device in the spec.
VFIO_CONTAINER: Final = "/dev/vfio/vfio"
#: Default iommufd control node, the iommufd counterpart of the VFIO container.
IOMMU_DEVICE: Final = "/dev/iommu"


class CdiError(InvalidRequest):
    """A CDI spec, or the input to build one, is invalid; the message says what to change."""

    def __init__(
        self,
        what: str,
        value: object,
        hint: str,
        violations: Sequence[Violation] = (),
    ) -> None:
        super().__init__(what, value, hint)
        self.what = what
        self.value = value
        self.hint = hint
        self.violations = tuple(violations)

    def __str__(self) -> str:
        text = f"{self.what}: {self.value!r}; {self.hint}"
        if self.violations:
            text += "".join(f"\n  {v}" for v in self.violations)
        return text


class ViolationCode(enum.StrEnum):
    """What a :class:`Violation` is about. The value is stable and printed to users."""

    PARSE_ERROR = "parse-error"  # not JSON/YAML, or not an object at the top
    UNKNOWN_FIELD = "unknown-field"  # the reference parser (UnmarshalStrict) rejects it
    MISSING_FIELD = "missing-field"
    WRONG_TYPE = "wrong-type"
    UNKNOWN_VERSION = "unknown-version"  # cdiVersion is no released version
    VERSION_TOO_LOW = "version-too-low"  # cdiVersion below what the used fields need
    FIELD_NOT_IN_VERSION = "field-not-in-version"  # a field the stated version does not have
    INVALID_KIND = "invalid-kind"
    INVALID_DEVICE_NAME = "invalid-device-name"
    DUPLICATE_DEVICE = "duplicate-device"  # two devices of one spec with one name
    NO_DEVICES = "no-devices"
    EMPTY_EDITS = "empty-edits"  # a device that changes nothing
    INVALID_ANNOTATION = "invalid-annotation"
    INVALID_ENV = "invalid-env"
    INVALID_DEVICE_NODE = "invalid-device-node"
    INVALID_MOUNT = "invalid-mount"
    INVALID_HOOK = "invalid-hook"
    INVALID_INTEL_RDT = "invalid-intel-rdt"
    INVALID_NET_DEVICE = "invalid-net-device"
    CONFLICTING_SPEC = "conflicting-spec"  # another file in the directory defines the device
    OTHER_SPEC_UNREADABLE = "other-spec-unreadable"  # a neighbour could not be checked


@dataclass(frozen=True)
class Violation:
    """One broken CDI rule: where (``devices[3].name``), what, and what to do."""

    code: ViolationCode
    location: str
    message: str
    #: ``"warning"`` for problems that do not make this spec unusable (an unreadable
    #: neighbour spec file); everything else is an error.
    severity: Literal["error", "warning"] = "error"
    #: The file the violation was found in, when it came from a file.
    source: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.location}: {self.code}: {self.message}"


# --------------------------------------------------------------------------- typed values


@dataclass(frozen=True)
class DeviceNode:
    """A device node to create in the container (``deviceNodes[]``).

    ``type`` and ``permissions`` default to what a VFIO node needs. An empty string means
    "not set" (the runtime then takes it from the host node) and is omitted from JSON.
    """

    path: str
    type: str = "c"
    permissions: str = "rwm"
    major: int | None = None
    minor: int | None = None
    host_path: str = ""  # needs 0.5.0
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True)
class Mount:
    """A bind or other mount (``mounts[]``)."""

    host_path: str
    container_path: str
    options: tuple[str, ...] = ()
    type: str = ""  # needs 0.4.0


@dataclass(frozen=True)
class Hook:
    """An OCI hook (``hooks[]``); ``hook_name`` is one of :data:`HOOK_NAMES`."""

    hook_name: str
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None


@dataclass(frozen=True)
class IntelRdt:
    """Intel RDT settings (``intelRdt``; needs 0.7.0).

    ``schemata`` and ``enable_monitoring`` need 1.1.0. ``enable_cmt`` and ``enable_mbm``
    existed from 0.7.0 and were dropped in 1.1.0; they are kept to read older specs.
    """

    clos_id: str = ""
    l3_cache_schema: str = ""
    mem_bw_schema: str = ""
    schemata: tuple[str, ...] | None = None
    enable_monitoring: bool = False
    enable_cmt: bool = False
    enable_mbm: bool = False


@dataclass(frozen=True)
class NetDevice:
    """A host network interface moved into the container (``netDevices[]``; needs 1.1.0)."""

    host_interface_name: str
    name: str


@dataclass(frozen=True)
class ContainerEdits:
    """The changes a runtime makes to the container for a device or a whole spec."""

    env: tuple[str, ...] = ()
    device_nodes: tuple[DeviceNode, ...] = ()
    net_devices: tuple[NetDevice, ...] = ()
    hooks: tuple[Hook, ...] = ()
    mounts: tuple[Mount, ...] = ()
    intel_rdt: IntelRdt | None = None
    additional_gids: tuple[int, ...] = ()

    def is_empty(self) -> bool:
        return not (
            self.env
            or self.device_nodes
            or self.net_devices
            or self.hooks
            or self.mounts
            or self.intel_rdt is not None
            or self.additional_gids
        )


@dataclass(frozen=True)
class CdiDevice:
    """One device of a spec; its fully qualified name is ``<kind>=<name>``."""

    name: str
    edits: ContainerEdits
    annotations: Mapping[str, str] = field(default_factory=dict)  # needs 0.6.0


@dataclass(frozen=True)
class CdiSpec:
    """A whole CDI spec file. Build it with :func:`build_gpu_spec` or :meth:`from_json`."""

    version: str
    kind: str
    devices: tuple[CdiDevice, ...]
    edits: ContainerEdits = field(default_factory=ContainerEdits)
    annotations: Mapping[str, str] = field(default_factory=dict)  # needs 0.6.0

    def to_json(self) -> str:
        """The spec as JSON: fields in the order of the reference types, two-space indent."""
        return json.dumps(_spec_to_raw(self), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> CdiSpec:
        """Parse a spec as strictly as the reference parser (unknown fields are errors).

        This checks structure only; call :func:`validate` for the CDI rules.

        Raises:
            CdiError: the text is not JSON, or has unknown, missing or mistyped fields.
        """
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CdiError("CDI spec is not valid JSON", str(exc), "fix the file") from exc
        return _spec_from_structured(raw)


# --------------------------------------------------------------------------- names

_NAME_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def _is_letter(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z")


def _is_alnum(c: str) -> bool:
    return c in _NAME_CHARS


def _vendor_or_class_problem(part: str) -> str | None:
    """Why ``part`` is no valid vendor or class name, or None (``api/validator``)."""
    if not part:
        return "is empty"
    if not _is_letter(part[0]):
        return "must start with a letter"
    for c in part[1:-1]:
        if not (_is_alnum(c) or c in "_-."):
            return f"contains {c!r} (allowed: letters, digits, '_', '-', '.')"
    if not _is_alnum(part[-1]):
        return "must end with a letter or digit"
    return None


def _kind_problem(kind: str) -> str | None:
    vendor, sep, klass = kind.partition("/")
    if not sep or not vendor or not klass:
        return "must be '<vendor>/<class>', e.g. 'nvidia.com/gpu'"
    for label, part in (("vendor", vendor), ("class", klass)):
        problem = _vendor_or_class_problem(part)
        if problem:
            return f"{label} {part!r} {problem}"
    return None


def _device_name_problem(name: str) -> str | None:
    """Why ``name`` is no valid device name, or None (``api/validator``)."""
    if not name:
        return "is empty"
    if not _is_alnum(name[0]):
        return "must start with a letter or digit"
    if len(name) == 1:
        return None
    for c in name[1:-1]:
        if not (_is_alnum(c) or c in "_-.:"):
            return f"contains {c!r} (allowed: letters, digits, '_', '-', '.', ':')"
    if not _is_alnum(name[-1]):
        return "must end with a letter or digit"
    return None


def qualified_name(kind: str, name: str) -> str:
    """The fully qualified CDI device name, ``nvidia.com/gpu=3``.

    Raises:
        CdiError: the kind or the name breaks the CDI syntax.
    """
    _check_kind(kind)
    problem = _device_name_problem(name)
    if problem:
        raise CdiError(
            f"CDI device name {problem}", name, "use letters, digits, '_', '-', '.', ':'"
        )
    return f"{kind}={name}"


def spec_file_name(kind: str) -> str:
    """The spec's file name, ``<vendor>-<class>.json`` (``GenerateSpecName`` + ``.json``).

    Raises:
        CdiError: the kind breaks the CDI syntax.
    """
    _check_kind(kind)
    vendor, _, klass = kind.partition("/")
    return f"{vendor}-{klass}.json"


def _check_kind(kind: str) -> None:
    problem = _kind_problem(kind)
    if problem:
        raise CdiError(
            f"invalid CDI kind ({problem})",
            kind,
            "the kind must equal the Kubernetes resource name, e.g. 'nvidia.com/gpu'",
        )


# --------------------------------------------------------------------------- versions


def _version_key(version: str) -> int:
    """Index of a known version in :data:`KNOWN_VERSIONS` (a leading 'v' is allowed)."""
    return KNOWN_VERSIONS.index(version.removeprefix("v"))


def _is_known_version(version: str) -> bool:
    return version.removeprefix("v") in KNOWN_VERSIONS


def _all_edits(spec: CdiSpec) -> Iterator[ContainerEdits]:
    yield spec.edits
    for device in spec.devices:
        yield device.edits


def _requires_v110(spec: CdiSpec) -> bool:
    for edits in _all_edits(spec):
        if edits.net_devices:
            return True
        rdt = edits.intel_rdt
        if rdt is not None and (rdt.schemata is not None or rdt.enable_monitoring):
            return True
    return False


def _requires_v070(spec: CdiSpec) -> bool:
    return any(e.intel_rdt is not None or e.additional_gids for e in _all_edits(spec))


def _requires_v060(spec: CdiSpec) -> bool:
    if spec.annotations or any(d.annotations for d in spec.devices):
        return True
    _, sep, klass = spec.kind.partition("/")
    return bool(sep) and "." in klass


def _requires_v050(spec: CdiSpec) -> bool:
    if any(d.name[:1].isascii() and d.name[:1].isdigit() for d in spec.devices):
        return True
    return any(n.host_path for e in _all_edits(spec) for n in e.device_nodes)


def _requires_v040(spec: CdiSpec) -> bool:
    return any(m.type for e in _all_edits(spec) for m in e.mounts)


# Newest first, as in the reference: the first rule that holds gives the minimum. 0.8.0
# (removal of the Go ToOCI helpers) and 1.0.0 (checks moved into specs-go) changed no field.
_VERSION_RULES: Final = (
    ("1.1.0", _requires_v110),
    ("0.7.0", _requires_v070),
    ("0.6.0", _requires_v060),
    ("0.5.0", _requires_v050),
    ("0.4.0", _requires_v040),
)


def minimum_version(spec: CdiSpec) -> str:
    """The lowest ``cdiVersion`` whose fields cover everything ``spec`` uses.

    The rules are those of ``MinimumRequiredVersion`` in the reference ``specs-go/version.go``:
    1.1.0 for ``netDevices`` or ``intelRdt.schemata``/``enableMonitoring``; 0.7.0 for
    ``intelRdt`` or ``additionalGids``; 0.6.0 for annotations or a '.' in the class; 0.5.0 for
    a device name starting with a digit or a ``hostPath`` on a device node; 0.4.0 for a mount
    ``type``; otherwise 0.3.0.
    """
    for version, required in _VERSION_RULES:
        if required(spec):
            return version
    return _EARLIEST


# --------------------------------------------------------------------------- JSON mapping

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


# --------------------------------------------------------------------------- validation

# A Kubernetes qualified name: optional DNS-subdomain prefix and '/', then a name of at most
# 63 characters. CDI checks annotation keys with these rules.
_QUALIFIED_NAME: Final = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN: Final = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)


def _annotation_key_problem(key: str) -> str | None:
    prefix, sep, name = key.rpartition("/")
    if sep:
        if not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix):
            return "prefix must be a lower-case DNS subdomain of at most 253 characters"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        return (
            "name must be 1-63 characters of letters, digits, '-', '_', '.', "
            "starting and ending with a letter or digit"
        )
    return None


def _check_annotations(annotations: Mapping[str, str], where: str, out: list[Violation]) -> None:
    size = 0
    for key, value in annotations.items():
        size += len(key.encode()) + len(value.encode())
        problem = _annotation_key_problem(key)
        if problem:
            out.append(
                Violation(
                    ViolationCode.INVALID_ANNOTATION,
                    f"{where}[{key!r}]",
                    f"annotation key {key!r} is invalid: {problem}",
                )
            )
    if size > _ANNOTATIONS_MAX_BYTES:
        out.append(
            Violation(
                ViolationCode.INVALID_ANNOTATION,
                where,
                f"annotations total {size} bytes, more than the {_ANNOTATIONS_MAX_BYTES} "
                "allowed; shorten or drop some",
            )
        )


def _check_env(env: Sequence[str], where: str, out: list[Violation]) -> None:
    for i, item in enumerate(env):
        if item.find("=") <= 0:
            out.append(
                Violation(
                    ViolationCode.INVALID_ENV,
                    f"{where}[{i}]",
                    f"environment entry {item!r} is not NAME=VALUE; write it as NAME=VALUE",
                )
            )


def _check_edits(edits: ContainerEdits, where: str, out: list[Violation]) -> None:
    _check_env(edits.env, _join(where, "env"), out)
    for i, node in enumerate(edits.device_nodes):
        loc = f"{_join(where, 'deviceNodes')}[{i}]"
        if not node.path:
            out.append(
                Violation(
                    ViolationCode.INVALID_DEVICE_NODE,
                    f"{loc}.path",
                    "device node path is empty; set the path inside the container",
                )
            )
        if node.type not in _DEVICE_NODE_TYPES:
            out.append(
                Violation(
                    ViolationCode.INVALID_DEVICE_NODE,
                    f"{loc}.type",
                    f"device node {node.path!r} has type {node.type!r}; use 'c', 'b', "
                    "'u', 'p' or leave it out",
                )
            )
        if any(bit not in "rwm" for bit in node.permissions):
            out.append(
                Violation(
                    ViolationCode.INVALID_DEVICE_NODE,
                    f"{loc}.permissions",
                    f"device node {node.path!r} has permissions {node.permissions!r}; "
                    "use only the letters r, w and m",
                )
            )
    for i, hook in enumerate(edits.hooks):
        loc = f"{_join(where, 'hooks')}[{i}]"
        if hook.hook_name not in HOOK_NAMES:
            out.append(
                Violation(
                    ViolationCode.INVALID_HOOK,
                    f"{loc}.hookName",
                    f"hook name {hook.hook_name!r} is unknown; use one of "
                    f"{', '.join(sorted(HOOK_NAMES))}",
                )
            )
        if not hook.path:
            out.append(
                Violation(
                    ViolationCode.INVALID_HOOK,
                    f"{loc}.path",
                    f"hook {hook.hook_name!r} has an empty path; set the hook binary",
                )
            )
        _check_env(hook.env, f"{loc}.env", out)
    for i, mount in enumerate(edits.mounts):
        loc = f"{_join(where, 'mounts')}[{i}]"
        for attr, key in (("host_path", "hostPath"), ("container_path", "containerPath")):
            if not getattr(mount, attr):
                out.append(
                    Violation(
                        ViolationCode.INVALID_MOUNT,
                        f"{loc}.{key}",
                        f"mount {key} is empty; set it",
                    )
                )
    rdt = edits.intel_rdt
    if rdt is not None:
        clos = rdt.clos_id
        bad = clos != "/" and (
            len(clos) >= 4096 or clos in (".", "..") or "/" in clos or "\n" in clos
        )
        if bad:
            out.append(
                Violation(
                    ViolationCode.INVALID_INTEL_RDT,
                    f"{_join(where, 'intelRdt')}.closID",
                    f"closID {clos!r} is not a valid file name; use a plain name or '/'",
                )
            )
    hosts: dict[str, int] = {}
    names: dict[str, int] = {}
    for i, net in enumerate(edits.net_devices):
        loc = f"{_join(where, 'netDevices')}[{i}]"
        for attr, key, seen in (
            ("host_interface_name", "hostInterfaceName", hosts),
            ("name", "name", names),
        ):
            value = getattr(net, attr)
            if not value:
                out.append(
                    Violation(
                        ViolationCode.INVALID_NET_DEVICE,
                        f"{loc}.{key}",
                        f"net device {key} is empty; set it",
                    )
                )
            elif value in seen:
                out.append(
                    Violation(
                        ViolationCode.INVALID_NET_DEVICE,
                        f"{loc}.{key}",
                        f"net device {key} {value!r} is already used by "
                        f"netDevices[{seen[value]}]; each interface may appear once",
                    )
                )
            else:
                seen[value] = i


def _check_versioned_contents(raw: Mapping[str, Any], version: str, out: list[Violation]) -> None:
    """Fields whose mere presence matters (``ValidateVersionContents`` in the reference)."""
    at_least_110 = _version_key(version) >= _version_key("1.1.0")
    edits_at: list[tuple[str, object]] = [("containerEdits", raw.get("containerEdits"))]
    for i, device in enumerate(raw.get("devices") or ()):
        edits_at.append((f"devices[{i}].containerEdits", device.get("containerEdits")))
    for where, edits in edits_at:
        if not isinstance(edits, dict):
            continue
        if "netDevices" in edits and not at_least_110:
            out.append(
                Violation(
                    ViolationCode.FIELD_NOT_IN_VERSION,
                    f"{where}.netDevices",
                    f"netDevices needs cdiVersion 1.1.0 or later, the spec says {version}; "
                    "raise cdiVersion or remove the field",
                )
            )
        rdt = edits.get("intelRdt")
        if not isinstance(rdt, dict):
            continue
        for key in ("enableCMT", "enableMBM"):
            if key in rdt and at_least_110:
                out.append(
                    Violation(
                        ViolationCode.FIELD_NOT_IN_VERSION,
                        f"{where}.intelRdt.{key}",
                        f"{key} was removed in cdiVersion 1.1.0 and the spec says {version}; "
                        "use enableMonitoring instead",
                    )
                )
        for key in ("schemata", "enableMonitoring"):
            if key in rdt and not at_least_110:
                out.append(
                    Violation(
                        ViolationCode.FIELD_NOT_IN_VERSION,
                        f"{where}.intelRdt.{key}",
                        f"{key} needs cdiVersion 1.1.0 or later, the spec says {version}; "
                        "raise cdiVersion or remove the field",
                    )
                )


def _check_spec(spec: CdiSpec, out: list[Violation]) -> None:
    """The CDI rules for one typed spec (``pkg/cdi/spec.go`` validate and friends)."""
    if not _is_known_version(spec.version):
        out.append(
            Violation(
                ViolationCode.UNKNOWN_VERSION,
                "cdiVersion",
                f"cdiVersion {spec.version!r} is no released CDI version; use one of "
                f"{', '.join(KNOWN_VERSIONS)} (at least {minimum_version(spec)} for this spec)",
            )
        )
    else:
        needed = minimum_version(spec)
        if _version_key(needed) > _version_key(spec.version):
            out.append(
                Violation(
                    ViolationCode.VERSION_TOO_LOW,
                    "cdiVersion",
                    f"cdiVersion {spec.version} is below {needed}, which the fields used here "
                    f"need; set cdiVersion to {needed}",
                )
            )
    problem = _kind_problem(spec.kind)
    if problem:
        out.append(
            Violation(
                ViolationCode.INVALID_KIND,
                "kind",
                f"kind {spec.kind!r}: {problem}; use the Kubernetes resource name",
            )
        )
    _check_annotations(spec.annotations, "annotations", out)
    _check_edits(spec.edits, "containerEdits", out)
    if not spec.devices:
        out.append(
            Violation(
                ViolationCode.NO_DEVICES,
                "devices",
                "the spec defines no devices; add at least one",
            )
        )
    first_index: dict[str, int] = {}
    for i, device in enumerate(spec.devices):
        loc = f"devices[{i}]"
        problem = _device_name_problem(device.name)
        if problem:
            out.append(
                Violation(
                    ViolationCode.INVALID_DEVICE_NAME,
                    f"{loc}.name",
                    f"device name {device.name!r} {problem}; use letters, digits, "
                    "'_', '-', '.', ':' starting and ending with a letter or digit",
                )
            )
        elif device.name in first_index:
            out.append(
                Violation(
                    ViolationCode.DUPLICATE_DEVICE,
                    f"{loc}.name",
                    f"device name {device.name!r} is already used by "
                    f"devices[{first_index[device.name]}]; give each device its own name",
                )
            )
        else:
            first_index[device.name] = i
        _check_annotations(device.annotations, f"{loc}.annotations", out)
        if device.edits.is_empty():
            out.append(
                Violation(
                    ViolationCode.EMPTY_EDITS,
                    f"{loc}.containerEdits",
                    f"device {device.name!r} has no container edits; give it at least "
                    "one device node, env entry, mount or hook",
                )
            )
        _check_edits(device.edits, f"{loc}.containerEdits", out)


def _load_document(path: Path) -> tuple[object, Violation | None]:
    """Decode a spec file. Returns (document, None) or (None, the reason it failed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, Violation(
            ViolationCode.PARSE_ERROR, "(file)", f"cannot read the file: {exc}", source=str(path)
        )
    if path.suffix == ".json":
        try:
            return json.loads(text), None
        except json.JSONDecodeError as exc:
            return None, Violation(
                ViolationCode.PARSE_ERROR,
                f"line {exc.lineno}",
                f"not valid JSON ({exc.msg}); fix the syntax",
                source=str(path),
            )
    try:
        return yaml.safe_load(text), None
    except yaml.YAMLError as exc:
        return None, Violation(
            ViolationCode.PARSE_ERROR,
            "(file)",
            f"not valid YAML ({exc}); fix the syntax",
            source=str(path),
        )


def _validate_document(raw: object, source: str | None) -> tuple[CdiSpec | None, list[Violation]]:
    out: list[Violation] = []
    if not isinstance(raw, dict):
        out.append(
            Violation(
                ViolationCode.PARSE_ERROR,
                "(top)",
                f"a CDI spec must be an object, found {type(raw).__name__}",
            )
        )
        return None, _with_source(out, source)
    _check_structure(raw, "spec", "", out)
    blocking = {ViolationCode.MISSING_FIELD, ViolationCode.WRONG_TYPE}
    if any(v.code in blocking for v in out):
        return None, _with_source(out, source)
    spec = _spec_from_raw(raw)
    if _is_known_version(spec.version):
        _check_versioned_contents(raw, spec.version, out)
    _check_spec(spec, out)
    return spec, _with_source(out, source)


def _with_source(violations: list[Violation], source: str | None) -> list[Violation]:
    if source is None:
        return violations
    return [
        Violation(v.code, v.location, v.message, v.severity, v.source or source) for v in violations
    ]


def _spec_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".json", ".yaml") and p.is_file())


def _check_directory(
    spec: CdiSpec, directory: Path, exclude: Path | None, out: list[Violation]
) -> None:
    """Report devices of ``spec`` that another spec file in ``directory`` also defines."""
    if _kind_problem(spec.kind):
        return
    ours = {d.name: i for i, d in enumerate(spec.devices)}
    skip = exclude.resolve() if exclude is not None else None
    for path in _spec_files(directory):
        if skip is not None and path.resolve() == skip:
            continue
        raw, failure = _load_document(path)
        other: CdiSpec | None = None
        if failure is None:
            other, problems = _validate_document(raw, str(path))
            if other is None:
                failure = problems[0] if problems else None
        if other is None:
            reason = failure.message if failure is not None else "unreadable"
            out.append(
                Violation(
                    ViolationCode.OTHER_SPEC_UNREADABLE,
                    "(directory)",
                    f"{path.name} could not be checked for conflicting devices ({reason})",
                    severity="warning",
                    source=str(path),
                )
            )
            continue
        if other.kind != spec.kind:
            continue
        for device in other.devices:
            if device.name in ours:
                out.append(
                    Violation(
                        ViolationCode.CONFLICTING_SPEC,
                        f"devices[{ours[device.name]}].name",
                        f"{qualified_name(spec.kind, device.name)} is also defined in "
                        f"{path}; the CDI cache then refuses the device. Remove one of the "
                        "two definitions",
                    )
                )


def validate(spec_or_path: CdiSpec | Path, *, spec_dir: Path | None = None) -> list[Violation]:
    """Every CDI rule ``spec_or_path`` breaks, in file order; an empty list means valid.

    Checks: known fields only (the reference parser is strict), field types, the kind's
    ``vendor/class`` syntax, device-name syntax, unique names, at least one device, non-empty
    edits per device, env ``NAME=VALUE``, device-node type and permissions, hook names, mount
    paths, net devices, annotation keys, a known ``cdiVersion`` not below
    :func:`minimum_version`, and fields the stated version lacks. With ``spec_dir``, also
    that no other ``*.json``/``*.yaml`` file there defines one of the same qualified devices.

    YAML files are read too (other tools, e.g. nvidia-ctk, write YAML specs). Warnings
    (``Violation.is_error`` false) do not make the spec unusable.
    """
    out: list[Violation]
    exclude: Path | None = None
    if isinstance(spec_or_path, CdiSpec):
        spec: CdiSpec | None = spec_or_path
        out = []
        _check_spec(spec_or_path, out)
    else:
        exclude = spec_or_path
        raw, failure = _load_document(spec_or_path)
        if failure is not None:
            return [failure]
        spec, out = _validate_document(raw, str(spec_or_path))
    if spec is not None and spec_dir is not None:
        _check_directory(spec, spec_dir, exclude, out)
    return out


# --------------------------------------------------------------------------- building


def _node_path(entry: str, *, iommufd: bool, device: str, container: str) -> str:
    """The /dev path for one node entry of a device (see :func:`build_gpu_spec`)."""
    hint = (
        "give iommufd cdev names like 'vfio3' or paths under /dev/vfio/devices/"
        if iommufd
        else "give IOMMU group numbers like '63' or paths /dev/vfio/<group>"
    )
    if iommufd:
        if re.fullmatch(r"vfio[0-9]+", entry):
            return f"/dev/vfio/devices/{entry}"
        if re.fullmatch(r"/dev/vfio/devices/vfio[0-9]+", entry):
            return entry
    else:
        if re.fullmatch(r"[0-9]+", entry):
            return f"/dev/vfio/{entry}"
        if re.fullmatch(r"/dev/vfio/[0-9]+", entry) and entry != container:
            return entry
    mode = "an iommufd" if iommufd else "a legacy VFIO"
    raise CdiError(f"device {device!r}: not {mode} node", entry, hint)


def build_gpu_spec(
    devices: Sequence[tuple[str, Sequence[str]]],
    *,
    kind: str = "nvidia.com/gpu",
    iommufd: bool = False,
    vfio_container: str = VFIO_CONTAINER,
    iommu_device: str = IOMMU_DEVICE,
) -> CdiSpec:
    """The CDI spec that lets Kata cold-plug each GPU: one CDI device per kubelet device.

    ``devices`` holds ``(name, nodes)`` pairs: ``name`` is the device ID given to the kubelet
    (the Kata shim builds ``<kind>=<name>`` from the PodResources answer, so both must
    match), ``nodes`` are the GPU's IOMMU group numbers (``"63"`` -> ``/dev/vfio/63``) or, with
    ``iommufd``, its vfio cdev names (``"vfio3"`` -> ``/dev/vfio/devices/vfio3``); absolute
    paths of the right form are taken as they are. Every node is a character device with
    ``rwm`` permissions; major and minor are left to the runtime, which reads the host node.

    The spec-level edits hold the one node every device shares: the legacy VFIO container
    ``/dev/vfio/vfio`` or, with ``iommufd``, the iommufd control node ``/dev/iommu``. QEMU
    opens ``/dev/iommu`` plus ``/dev/vfio/devices/vfioN`` for iommufd passthrough, and the
    container plus ``/dev/vfio/<group>`` for the legacy backend. We never emit both backends
    in one spec: the same GPU would reach the OCI spec through two handles, which Kata
    maintainers reject (kubernetes-sigs/dra-driver-nvidia-gpu#1036); NVIDIA's and AMD's
    passthrough drivers pair the nodes the same way.

    ``cdiVersion`` is :func:`minimum_version` of the result: 0.5.0 for names that start with
    a digit such as "0".."7", 0.3.0 for names such as "gpu0".

    Raises:
        CdiError: no devices, a device without nodes, a bad or duplicate name, a bad kind, a
            node entry of the wrong form, or one node given to two devices.
    """
    _check_kind(kind)
    if not devices:
        raise CdiError(
            "no GPUs to put in the CDI spec", list(devices), "pass at least one (name, nodes)"
        )
    container = iommu_device if iommufd else vfio_container
    if not container.startswith("/dev/"):
        raise CdiError("shared VFIO node must be under /dev", container, "pass a /dev path")
    seen_names: set[str] = set()
    node_owner: dict[str, str] = {}
    built: list[CdiDevice] = []
    for name, nodes in devices:
        problem = _device_name_problem(name)
        if problem:
            raise CdiError(
                f"CDI device name {problem}",
                name,
                "use the kubelet device ID: letters, digits, '_', '-', '.', ':'",
            )
        if name in seen_names:
            raise CdiError(
                "duplicate CDI device name", name, "give each GPU its own kubelet device ID"
            )
        seen_names.add(name)
        if isinstance(nodes, str) or not nodes:
            raise CdiError(
                f"device {name!r} has no VFIO nodes",
                nodes,
                "pass a sequence of its IOMMU groups (or iommufd cdevs)",
            )
        paths: list[str] = []
        for entry in nodes:
            path = _node_path(entry, iommufd=iommufd, device=name, container=container)
            owner = node_owner.get(path)
            if owner is not None:
                raise CdiError(
                    f"VFIO node is given to devices {owner!r} and {name!r}",
                    path,
                    "a VFIO group or cdev can be opened by one VM only; give each GPU its own",
                )
            node_owner[path] = name
            paths.append(path)
        built.append(
            CdiDevice(name, ContainerEdits(device_nodes=tuple(DeviceNode(p) for p in paths)))
        )
    draft = CdiSpec(
        version=_EARLIEST,
        kind=kind,
        devices=tuple(built),
        edits=ContainerEdits(device_nodes=(DeviceNode(container),)),
    )
    spec = CdiSpec(minimum_version(draft), draft.kind, draft.devices, draft.edits)
    errors = [v for v in validate(spec) if v.is_error]
    if errors:  # pragma: no cover - the checks above rule these out
        raise CdiError("generated CDI spec is invalid", kind, "report this bug", errors)
    return spec


def write_spec(spec: CdiSpec, directory: Path = CDI_SPEC_DIR) -> Path:
    """Write ``spec`` to ``directory/<vendor>-<class>.json`` atomically and return the path.

    The spec is validated first, together with the other spec files in ``directory``
    (the file being replaced excluded); readers see the old file or the new one, never a
    part of either.

    Raises:
        CdiError: the spec has error-level violations (listed in ``violations``); nothing
            is written.
        OSError: the directory cannot be created or written.
    """
    path = directory / spec_file_name(spec.kind)
    violations: list[Violation] = []
    _check_spec(spec, violations)
    _check_directory(spec, directory, path, violations)
    errors = [v for v in violations if v.is_error]
    if errors:
        raise CdiError(
            "refusing to write an invalid CDI spec",
            str(path),
            "fix the violations below",
            errors,
        )
    write_atomically(path, spec.to_json())
    return path

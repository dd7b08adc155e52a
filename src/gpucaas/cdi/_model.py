"""The typed CDI model: frozen values for every field of a spec (``specs-go/config.go``)
and the :class:`Violation` that :func:`validate` reports.

The JSON form lives in ``_json`` (strict, like the reference parser); the values here do no
I/O and check nothing beyond their types.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ._errors import CdiError


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
        from ._json import _spec_to_raw  # the mapping needs these classes: import at use

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
        except RecursionError:
            raise CdiError(
                "CDI spec is not usable JSON", "nested too deeply to parse", "fix the file"
            ) from None
        except ValueError as exc:  # a number of over 4300 digits (int's conversion limit)
            raise CdiError("CDI spec is not usable JSON", str(exc), "fix the file") from exc
        from ._json import _spec_from_structured

        return _spec_from_structured(raw)

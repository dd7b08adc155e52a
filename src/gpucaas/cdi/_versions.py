"""CDI spec versions and :func:`minimum_version`, by the rules of the reference
``specs-go/version.go`` (``requiresV040`` ... ``requiresV110``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from ._model import CdiSpec, ContainerEdits

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

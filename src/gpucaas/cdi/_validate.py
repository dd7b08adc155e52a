"""Validation: every CDI rule a spec (or a spec file, JSON or YAML) breaks, reported all at
once as :class:`Violation` values instead of stopping at the first, including devices that
another spec file in the same directory also defines (the CDI cache then refuses both).

YAML is imported only when a YAML file is read, so ``import gpucaas.cdi`` stays light.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from ._json import _check_structure, _join, _spec_from_raw
from ._model import CdiSpec, ContainerEdits, Violation, ViolationCode
from ._names import _device_name_problem, _kind_problem, qualified_name
from ._versions import KNOWN_VERSIONS, _is_known_version, _version_key, minimum_version

#: The OCI hook names a CDI hook may use (``pkg/cdi/container-edits.go``).
HOOK_NAMES: Final = frozenset(
    {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}
)
_DEVICE_NODE_TYPES: Final = frozenset({"", "b", "c", "u", "p"})
#: Kubernetes' limit on the total size of one object's annotations, which CDI reuses.
_ANNOTATIONS_MAX_BYTES: Final = 256 * 1024


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


_MAX_DEPTH = 64
"""Nesting a spec file may have: a CDI spec nests a few levels, and the checks that follow
(and ``repr`` in their messages) recurse once a level, so deeper is refused up front."""


def _load_document(path: Path) -> tuple[object, Violation | None]:
    """Decode a spec file. Returns (document, None) or (None, the reason it failed)."""
    raw, failure = _parse_document(path)
    if failure is None and _deeper_than(raw, _MAX_DEPTH):
        return None, _too_deep(path)
    return raw, failure


def _deeper_than(raw: object, limit: int) -> bool:
    """Whether lists and objects nest more than ``limit`` levels. Iterative (no recursion),
    and each object is walked again only when reached deeper, so YAML aliases that share one
    list many times over cost no more than the tree they spell."""
    deepest: dict[int, int] = {}
    stack: list[tuple[object, int]] = [(raw, 1)]
    while stack:
        value, depth = stack.pop()
        if not isinstance(value, (dict, list)) or deepest.get(id(value), 0) >= depth:
            continue
        if depth > limit:
            return True
        deepest[id(value)] = depth
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children)
    return False


def _parse_document(path: Path) -> tuple[object, Violation | None]:
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
        except RecursionError:
            return None, _too_deep(path)
        except ValueError as exc:  # an integer of over 4300 digits (int's conversion limit)
            return None, Violation(
                ViolationCode.PARSE_ERROR, "(file)", _unusable("JSON", exc), source=str(path)
            )
    import yaml  # only here: most specs are JSON, and importing the package stays light

    try:
        return yaml.safe_load(text), None
    except yaml.YAMLError as exc:
        return None, Violation(
            ViolationCode.PARSE_ERROR,
            "(file)",
            f"not valid YAML ({exc}); fix the syntax",
            source=str(path),
        )
    except RecursionError:
        return None, _too_deep(path)
    except ValueError as exc:  # YAML's int resolver hits the same 4300-digit limit
        return None, Violation(
            ViolationCode.PARSE_ERROR, "(file)", _unusable("YAML", exc), source=str(path)
        )


def _unusable(kind: str, exc: ValueError) -> str:
    if "4300" in str(exc):  # int's conversion limit (CVE-2020-10735), not a syntax error
        return f"a number in this {kind} has over 4300 digits; fix the file"
    return f"not a usable {kind} document ({exc}); fix the file"


def _too_deep(path: Path) -> Violation:
    """The parsers recurse once per level of nesting; a CDI spec has fewer than ten."""
    return Violation(
        ViolationCode.PARSE_ERROR,
        "(file)",
        f"nested more than {_MAX_DEPTH} levels deep (a CDI spec nests a few); fix the file",
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

"""CDI names: the ``vendor/class`` kind, device names, fully qualified names
(``nvidia.com/gpu=3``) and spec file names, by the rules of the reference ``api/validator``.

Light on purpose: the control plane builds qualified names without loading the rest of the
library.
"""

from __future__ import annotations

from typing import Final

from ._errors import CdiError

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

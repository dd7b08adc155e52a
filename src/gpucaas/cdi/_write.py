"""Writing a spec where containerd and the Kata shim read it, validated first (with its
neighbours in the directory) and replaced atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from gpucaas._files import write_atomically

from ._errors import CdiError
from ._model import CdiSpec, Violation
from ._names import spec_file_name
from ._validate import _check_directory, _check_spec

#: The directory containerd and the Kata shim read dynamic (runtime-generated) CDI specs from.
CDI_SPEC_DIR: Final = Path("/var/run/cdi")


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

"""Errors of the module-ID map::

InvalidRequest
└── ModuleMapError            bad XML, a GPU with no/duplicate/out-of-range module ID,
    │                         a corrupt or foreign map file, an invalid map to save
    └── ModuleMapMissing      no map file yet; says how to capture one
Unavailable
└── NvidiaSmiUnavailable      nvidia-smi is missing, failed or timed out
"""

from __future__ import annotations

from collections.abc import Sequence

from gpucaas.errors import InvalidRequest, Unavailable, errorclass


@errorclass
class ModuleMapError(InvalidRequest):
    """The module map, or the nvidia-smi XML it is built from, is wrong; says what to do."""

    what: str
    value: object
    todo: str
    source: str | None = None

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.what}: {self.value}; {self.todo}"


class ModuleMapMissing(ModuleMapError):
    """No module map has been stored on this node yet."""


@errorclass
class NvidiaSmiUnavailable(Unavailable):
    """``nvidia-smi -q -x`` could not be run, failed, or timed out."""

    template = (
        "cannot read module IDs from `{command: }`: {reason}; run it on the node while the "
        "NVIDIA driver is bound to the GPUs, or pass --from FILE with `nvidia-smi -q -x` "
        "output saved while it was"
    )
    command: Sequence[str]
    reason: str

    def __post_init__(self) -> None:
        self.command = tuple(self.command)

"""Errors of VFIO binding, all in the VFIO family (where they came from) and each under the
branch that says what the caller can do::

GpucaasError
├── VfioFailure            family base of every VFIO error
├── Refused
│   └── Conflict
│       └── VfioError         a group cannot move as asked (lists every VfioProblem;
│           │                 also VfioFailure)
│           └── DeviceInUse   a process holds a device the plan would unbind
├── InvalidRequest
│   └── UnknownDevice     a --device that is no NVIDIA GPU or NVSwitch here (also VfioFailure)
└── Unavailable
    └── KernelWriteError  a sysfs write failed for another reason than EBUSY (also VfioFailure)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gpucaas.errors import Conflict, GpucaasError, InvalidRequest, Unavailable, errorclass
from gpucaas.node.discovery import BDF


@dataclass(frozen=True, slots=True)
class VfioProblem:
    """One reason a device cannot be moved: the device and a sentence with what to do."""

    bdf: BDF
    message: str

    def __str__(self) -> str:
        return self.message


class VfioFailure(GpucaasError):
    """Base of the errors of moving devices to and from vfio-pci."""


@errorclass
class VfioError(VfioFailure, Conflict):
    """The devices cannot be moved as asked; each problem names its device and what to do.

    A Conflict: the host's state (a device in the group, a driver, a process) stands in
    the way. ``changed`` lists devices already moved when the error came part-way through
    :func:`apply` (empty when nothing was written).
    """

    action: str
    problems: Sequence[VfioProblem]
    changed: Sequence[BDF] = ()

    def __post_init__(self) -> None:
        self.problems, self.changed = tuple(self.problems), tuple(self.changed)

    @property
    def bdfs(self) -> tuple[BDF, ...]:
        return tuple(p.bdf for p in self.problems)

    def __str__(self) -> str:
        text = f"cannot {self.action}: " + "; ".join(p.message for p in self.problems)
        if self.changed:
            text += (
                f"; already changed before stopping: {', '.join(self.changed)} "
                "(run the command again once the cause is fixed, or run the opposite one)"
            )
        else:
            text += "; nothing was changed"
        return text


class DeviceInUse(VfioError):
    """A process holds a device (or the kernel answered EBUSY), so it was not unbound."""


@errorclass
class UnknownDevice(VfioFailure, InvalidRequest):
    """A ``--device`` address is no GPU or NVSwitch found under the sysfs root."""

    template = (
        "no NVIDIA GPU or NVSwitch at {bdf} under {sysfs_root}; "
        "`gpucaas node inspect` lists the devices this host has"
    )
    bdf: str
    sysfs_root: Path


@errorclass
class KernelWriteError(VfioFailure, Unavailable):
    """A sysfs write failed for a reason other than a busy device (names the file)."""

    template = "cannot write {path}: {reason}; {hint}"
    path: Path
    reason: str
    hint: str

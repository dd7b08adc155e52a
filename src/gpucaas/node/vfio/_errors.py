"""Errors of VFIO binding::

GpucaasError
├── Conflict
│   └── VfioError         a group cannot move as asked (lists every VfioProblem)
│       └── DeviceInUse   a process holds a device the plan would unbind
├── InvalidRequest
│   └── UnknownDevice     a --device that is no NVIDIA GPU or NVSwitch here
└── Unavailable
    └── KernelWriteError  a sysfs write failed for another reason than EBUSY
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gpucaas.errors import Conflict, InvalidRequest, Unavailable
from gpucaas.node.discovery import BDF


@dataclass(frozen=True, slots=True)
class VfioProblem:
    """One reason a device cannot be moved: the device and a sentence with what to do."""

    bdf: BDF
    message: str

    def __str__(self) -> str:
        return self.message


class VfioError(Conflict):
    """The devices cannot be moved as asked; each problem names its device and what to do.

    A :class:`~gpucaas.errors.Conflict`: the host's state (a device in the group, a driver,
    a process) stands in the way. ``changed`` lists devices already moved when the error
    came part-way through :func:`apply` (empty when nothing was written).
    """

    def __init__(
        self, action: str, problems: Sequence[VfioProblem], changed: Sequence[BDF] = ()
    ) -> None:
        super().__init__(action, tuple(problems), tuple(changed))
        self.action = action
        self.problems = tuple(problems)
        self.changed = tuple(changed)

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


class UnknownDevice(InvalidRequest):
    """A ``--device`` address is no GPU or NVSwitch found under the sysfs root."""

    def __init__(self, bdf: str, sysfs_root: Path) -> None:
        super().__init__(bdf, sysfs_root)
        self.bdf = bdf
        self.sysfs_root = sysfs_root

    def __str__(self) -> str:
        return (
            f"no NVIDIA GPU or NVSwitch at {self.bdf} under {self.sysfs_root}; "
            "`gpucaas node inspect` lists the devices this host has"
        )


class KernelWriteError(Unavailable):
    """A sysfs write failed for a reason other than a busy device (names the file)."""

    def __init__(self, path: Path, reason: str, hint: str) -> None:
        super().__init__(path, reason, hint)
        self.path = path
        self.reason = reason
        self.hint = hint

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}; {self.hint}"

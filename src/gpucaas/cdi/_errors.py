"""Errors of the CDI package::

GpucaasError
└── InvalidRequest
    └── CdiError      a CDI spec, or the input to build one, is invalid (lists violations)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gpucaas.errors import InvalidRequest

if TYPE_CHECKING:
    from ._model import Violation


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

"""Errors of the CDI package::

GpucaasError
└── InvalidRequest
    └── CdiError      a CDI spec, or the input to build one, is invalid (lists violations)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gpucaas.errors import InvalidRequest, errorclass

if TYPE_CHECKING:
    from ._model import Violation


@errorclass
class CdiError(InvalidRequest):
    """A CDI spec, or the input to build one, is invalid; the message says what to change."""

    what: str
    value: object
    hint: str
    violations: Sequence[Violation] = ()

    def __post_init__(self) -> None:
        self.violations = tuple(self.violations)

    def __str__(self) -> str:
        text = f"{self.what}: {self.value!r}; {self.hint}"
        if self.violations:
            text += "".join(f"\n  {v}" for v in self.violations)
        return text

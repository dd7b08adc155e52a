"""Errors of the sim package: bad input to the simulator, each naming where it was wrong.

::

    InvalidRequest
    ├── TraceError          a trace file is missing or malformed (names file, line, column)
    └── SyntheticSpecError  a --synthetic spec has a bad key or value (shows the accepted form)

Both keep structured attributes and build their text from their fields, so the CLI can print one
line and an API can map them to JSON without parsing the message.
"""

from __future__ import annotations

from pathlib import PurePath

from gpucaas.errors import InvalidRequest, errorclass

SKIP_BAD_HINT = "fix the row or pass --skip-bad to skip malformed rows"
"""What to do about one malformed data row; the default hint of :class:`TraceError`."""

SYNTHETIC_FORM = (
    "pods=2000,rate=20,mix=1:60+2:15+4:15+8:10,duration=exp|lognormal|fixed,"
    "mean=3600,sigma=1,seed=0"
)
"""The accepted ``--synthetic`` form, every key shown (an empty spec means all defaults)."""


@errorclass
class TraceError(InvalidRequest):
    """A trace file is missing, unreadable or has a malformed header or row.

    ``line`` is 1-based (the header is line 1) and ``None`` when the error concerns the whole
    file; ``column`` and ``value`` are ``None`` when the error is not about one field.
    """

    path: str
    line: int | None
    column: str | None
    value: str | None
    reason: str
    hint: str = SKIP_BAD_HINT

    def __str__(self) -> str:
        where = PurePath(self.path).name or self.path
        if self.line is not None:
            where += f" line {self.line}"
        if self.column is not None:
            where += f", column {self.column}"
        what = self.reason if self.value is None else f"{self.value!r} {self.reason}"
        return f"{where}: {what}; {self.hint}"


@errorclass
class SyntheticSpecError(InvalidRequest):
    """A synthetic trace spec (the text after ``--synthetic``) has a bad key or value."""

    template = (
        "bad synthetic trace spec {spec!r}: {reason}; "
        f"write comma-separated key=value pairs like {SYNTHETIC_FORM}"
    )
    spec: str
    reason: str

"""What every command shares: the ``--json`` option, error rendering, plain tables."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from gpucaas.errors import GpucaasError

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]

EXIT_USER_ERROR = 2
"""Exit status when gpucaas refused the input (a GpucaasError); 1 stays for crashes."""


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`GpucaasError` into one line on stderr and exit status 2, no traceback."""
    try:
        yield
    except GpucaasError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain, left-aligned text table (stable for scripts, greppable, no box drawing)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)

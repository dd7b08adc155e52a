"""What every command shares: the ``--json`` option, error rendering, plain tables.

Exit statuses, the same for ``gpucaas`` and ``fmctl`` (:func:`gpucaas.errors.exit_code`
derives them from the error tree): 0 ok; 1 refused or failed (in use, quota, not ready:
retry may help); 2 bad input or usage (click's usage errors too); 3 a server cannot be
reached. A :class:`GpucaasError` is one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from gpucaas.errors import GpucaasError, exit_code

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]

EXIT_STATUS_HELP = (
    "Exit status: 0 ok; 1 refused or failed (in use, over quota, not ready: retry may help); "
    "2 bad input or usage; 3 a server (the API, the fm-controller, Fabric Manager) cannot be "
    "reached."
)
"""The exit statuses of :func:`gpucaas.errors.exit_code`, for the commands' --help."""


@contextmanager
def user_errors(prefix: str = "error") -> Iterator[None]:
    """Turn a :class:`GpucaasError` into one line on stderr (``prefix: message``) and the
    exit status of its branch of the error tree, with no traceback."""
    try:
        yield
    except GpucaasError as exc:
        typer.echo(f"{prefix}: {exc}", err=True)
        raise typer.Exit(exit_code(exc)) from None


class ErrorsGroup(TyperGroup):
    """The root group of a command line: any :class:`GpucaasError` a command raises ends as
    :func:`user_errors` says, whether or not the command caught it itself."""

    error_prefix = "error"

    def invoke(self, ctx: Any) -> Any:  # a typer._click.Context (typer vendors click)
        with user_errors(self.error_prefix):
            return super().invoke(ctx)


class FmctlGroup(ErrorsGroup):
    """``fmctl``'s root group: its messages start with ``fmctl:``."""

    error_prefix = "fmctl"


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

"""The ``gpucaas`` command line: each command opens what it needs, calls one library
function and renders the result. No logic lives here.

Exit statuses: 0 ok; 1 refused or failed (in use, quota, not ready: retry may help); 2 bad
input or usage; 3 a server cannot be reached (``gpucaas.errors.exit_code``, shared with
``fmctl``). ``run --wait`` and ``run --follow`` exit with the container's own status.
"""

from __future__ import annotations

import typer

from gpucaas import __version__

from . import admin as _admin
from . import fabric as _fabric
from . import node as _node
from . import sim as _sim
from . import tenant as _tenant
from . import topology as _topology
from . import trace as _trace
from . import up as _up
from ._common import EXIT_STATUS_HELP, ErrorsGroup

app = typer.Typer(
    name="gpucaas",
    cls=ErrorsGroup,
    help="GPU Containers-as-a-Service on NVIDIA HGX boards.\n\n" + EXIT_STATUS_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(_topology.app, name="topology")
app.add_typer(_trace.app, name="trace")
app.add_typer(_fabric.app, name="fabric")
app.add_typer(_node.app, name="node")
app.command("sim")(_sim.sim)
app.command("up")(_up.up)
app.command("run")(_tenant.run)
app.command("ps")(_tenant.ps)
app.command("logs")(_tenant.logs)
app.command("describe")(_tenant.describe)
app.command("stop")(_tenant.stop)
app.add_typer(_admin.app, name="admin")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gpucaas {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """GPU Containers-as-a-Service on NVIDIA HGX boards."""


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]

"""``gpucaas fabric``: run the fm-controller daemon."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from gpucaas._secrets import read_secret_file
from gpucaas.errors import InvalidRequest

from ._common import user_errors

app = typer.Typer(
    help="The fm-controller: Fabric Manager partitions of one board, served.", no_args_is_help=True
)


def read_token(path: Path | None) -> str | None:
    """The shared token from a file (its whole text, surrounding whitespace dropped), or None.

    Raises InvalidRequest: unreadable; open to group or others (``chmod 600``, as ssh asks);
    not a printable-ASCII token; shorter than 16 characters. No message shows the token.
    """
    if path is None:
        return None
    token = read_secret_file(path)
    if len(token) < 16:
        raise InvalidRequest(
            f"the token in {path} is shorter than 16 characters; use a "
            "random one, e.g. `openssl rand -hex 32`"
        )
    return token


@app.command("serve")
def serve_cmd(
    backend: Annotated[
        str, typer.Option(help="simulated (an in-process Fabric Manager) or nvfm (libnvfm).")
    ] = "nvfm",
    board: Annotated[str, typer.Option(help="Board model.")] = "hgx-h100-8",
    name: Annotated[
        str | None,
        typer.Option(help="This board's name in logs and messages (default: the model)."),
    ] = None,
    nvfm_address: Annotated[
        str, typer.Option(help="Fabric Manager address for the nvfm backend.")
    ] = "127.0.0.1",
    nvfm_library: Annotated[str, typer.Option(help="Path or name of libnvfm.")] = "libnvfm.so.1",
    listen: Annotated[
        str, typer.Option(help="Unix socket path or host:port to serve gRPC on.")
    ] = "/run/gpucaas/fm-controller.sock",
    state_dir: Annotated[
        Path, typer.Option(help="Where the desired activated set (and the simulated FM) are kept.")
    ] = Path("/var/lib/gpucaas/fabric"),
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="File holding the shared token clients must send (needed off loopback); "
            "mode 0600 or stricter, as ssh asks of a private key."
        ),
    ] = None,
    http_listen: Annotated[
        str | None, typer.Option(help="host:port for /metrics and /healthz.")
    ] = "127.0.0.1:9466",
    reconcile_interval: Annotated[
        float,
        typer.Option(help="Seconds between checks that FM's active set equals the desired one."),
    ] = 2.0,
    sim_init_s: Annotated[
        float,
        typer.Option(help="Simulated backend: seconds FM answers NOT_CONFIGURED after start."),
    ] = 0.0,
) -> None:
    """Serve one board's fabric over gRPC, keep the desired set, replay it after FM restarts.

    Example: gpucaas fabric serve --backend simulated --listen /tmp/fm.sock --state-dir /tmp/fm
    """
    from gpucaas._jsonlog import JsonFormatter
    from gpucaas.fabric import (
        ControllerMetrics,
        FabricController,
        FabricManager,
        SimulatedFabric,
        run_until_signalled,
        serve_controller,
    )
    from gpucaas.topology import get_model

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    with user_errors():
        model = get_model(board)
        label = name or model.name
        fabric: FabricManager
        if backend == "simulated":
            fabric = SimulatedFabric(
                model, board=label, init_s=sim_init_s, state_file=state_dir / "simulated-fm.json"
            )
        elif backend == "nvfm":
            from gpucaas.fabric import NvfmLibrary

            fabric = NvfmLibrary(nvfm_address, library=nvfm_library, board=label)
        else:
            raise InvalidRequest(f"--backend {backend!r}: choose simulated or nvfm")
        metrics = ControllerMetrics()
        controller = FabricController(
            fabric, model, state_dir=state_dir, board=label, backend=backend, observer=metrics
        )
        daemon = serve_controller(
            controller,
            listen,
            token=read_token(token_file),
            http_listen=http_listen,
            reconcile_interval_s=reconcile_interval,
        )
    # serve_controller() logged where it listens (JSON on stderr, like every other line).
    run_until_signalled(daemon)

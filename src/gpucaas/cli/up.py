"""``gpucaas up``: the whole system on this machine (API, store, scheduler, local fleet)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpucaas._secrets import clean_token

from ._common import user_errors


def up(
    state_dir: Annotated[
        Path, typer.Option(help="Where the store, logs and fabric state live.")
    ] = Path(".gpucaas"),
    listen: Annotated[str, typer.Option(help="HOST:PORT for the API and dashboard.")] = (
        "127.0.0.1:8080"
    ),
    nodes: Annotated[int, typer.Option(help="Simulated HGX boards in the fleet.")] = 100,
    board: Annotated[str, typer.Option(help="Board model of every board.")] = "hgx-h100-8",
    executor: Annotated[
        str,
        typer.Option(
            help="What runs containers: auto, process, podman or docker. auto takes podman or "
            "docker when their engine answers, else process (host processes, NO isolation)."
        ),
    ] = "auto",
    engine_arg: Annotated[
        list[str] | None,
        typer.Option(
            help="An extra option of `podman run`/`docker run` (repeatable), e.g. "
            "--engine-arg=--ulimit=nofile=1024:1024."
        ),
    ] = None,
    cdi_kind: Annotated[
        str | None,
        typer.Option(
            help="Pass each container's GPUs to the engine as CDI devices KIND=<device ID> "
            "(0..7 in module-ID order), e.g. nvidia.com/gpu. Needs this host's CDI spec "
            "(gpucaas node cdi generate); off by default."
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            envvar="GPUCAAS_STORE_URL",
            help="Store URL (default: SQLite in the state dir). postgresql+psycopg://… for "
            "several replicas.",
        ),
    ] = None,
    policy: Annotated[
        str, typer.Option(help="Placement policy (gpucaas sim --policy all compares them).")
    ] = "adaptive-fit",
    backend: Annotated[
        str,
        typer.Option(
            help="local: simulated boards on this machine; kubernetes: the cluster's gpucaas "
            "nodes (pods in Kata VMs, bound by gpucaas)."
        ),
    ] = "local",
    kubeconfig: Annotated[
        str | None,
        typer.Option(help="kubernetes backend: kubeconfig file (default $KUBECONFIG, in-cluster)."),
    ] = None,
    runtime_class: Annotated[
        str, typer.Option(help="kubernetes backend: RuntimeClass of tenant pods.")
    ] = "kata-qemu-nvidia-gpu",
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="GPUCAAS_ADMIN_TOKEN",
            show_default=False,
            help="On first start, install this admin token (gpc_…) instead of printing a new "
            "one and making a demo tenant. Give it by the environment, not the command line.",
        ),
    ] = None,
    toleration: Annotated[
        list[str] | None,
        typer.Option(
            help="kubernetes backend: a toleration of tenant pods, KEY[=VALUE]:EFFECT (repeatable)."
        ),
    ] = None,
    pod_cpu_per_gpu: Annotated[
        str,
        typer.Option(help="kubernetes backend: CPU a pod requests per GPU (e.g. 14, 500m)."),
    ] = "14",
    pod_memory_per_gpu: Annotated[
        str | None,
        typer.Option(
            show_default=False,
            help="kubernetes backend: memory a pod requests per GPU (e.g. 160Gi; default: "
            "the VM size of gpucaas.runtime.vm_memory_for, 160Gi per GPU).",
        ),
    ] = None,
) -> None:
    """Start API + store + scheduler + a local fleet of simulated HGX boards in one process.

    On first start it creates an admin token and a tenant 'demo', prints both once and
    writes them to STATE_DIR/credentials.json (mode 0600).

    Example: gpucaas up --state-dir /tmp/gpucaas --nodes 10 --executor process
    """
    from gpucaas.control import ControlPlaneConfig, parse_toleration, serve  # loads only for `up`

    with user_errors():
        if admin_token is not None:
            # A Secret or `$(cat file)` often ends in a newline; a token never does.
            admin_token = clean_token(admin_token, "GPUCAAS_ADMIN_TOKEN (or --admin-token)")
        tolerations = [parse_toleration(t) for t in toleration or ()]
        serve(
            ControlPlaneConfig(
                state_dir=state_dir,
                listen=listen,
                nodes=nodes,
                board=board,
                executor=executor,
                engine_args=list(engine_arg or ()),
                cdi_kind=cdi_kind,
                store_url=store,
                policy=policy,
                backend=backend,
                kubeconfig=kubeconfig,
                runtime_class=runtime_class,
                tolerations=tolerations,
                pod_cpu_per_gpu=pod_cpu_per_gpu,
                pod_memory_per_gpu=pod_memory_per_gpu,
                admin_token=admin_token,
            )
        )

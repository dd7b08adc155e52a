"""``gpucaas up``: the whole system on this machine (API, store, scheduler, local fleet)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpucaas._secrets import clean_token
from gpucaas.errors import InvalidRequest

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
            help="What runs containers: auto, sandbox, podman, docker or process. auto takes "
            "podman or docker when their engine answers, else sandbox (bubblewrap: an "
            "unprivileged user in its own namespaces, read-only host). process runs host "
            "processes with NO isolation and needs --unsafe-process."
        ),
    ] = "auto",
    unsafe_process: Annotated[
        bool,
        typer.Option(
            "--unsafe-process",
            help="Allow --executor process: tenants' commands run as this user's host "
            "processes and can read the state dir (tokens, other tenants' logs). Development only.",
        ),
    ] = False,
    sandbox_user: Annotated[
        str,
        typer.Option(help="sandbox executor: the unprivileged user commands run as when root."),
    ] = "nobody",
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
            "one and making a demo tenant; later, when no admin token is active (all revoked), "
            "it restores admin access. Give it by the environment, not the command line.",
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
    max_body_bytes: Annotated[
        int, typer.Option(help="Largest request body (413 beyond; checked before the token).")
    ] = 1 << 20,
    max_header_bytes: Annotated[
        int,
        typer.Option(help="Largest request headers, all together (431 beyond; before the token)."),
    ] = 16 << 10,
    max_env_bytes: Annotated[
        int, typer.Option(help="Largest env of a container, names and values (422 beyond).")
    ] = 64 << 10,
    max_command_bytes: Annotated[
        int, typer.Option(help="Largest command plus args of a container (422 beyond).")
    ] = 64 << 10,
    max_log_bytes: Annotated[
        int,
        typer.Option(
            help="Local backend: keep this much of each container's log, the tail (a marker "
            "line says what was cut); 0 keeps all."
        ),
    ] = 16 << 20,
    retain_finished: Annotated[
        int,
        typer.Option(
            help="Finished containers kept per tenant; older ones are purged in the "
            "background with their events and logs. 0: no count limit."
        ),
    ] = 1000,
    retain_finished_days: Annotated[
        float,
        typer.Option(
            help="Finished containers are purged this many days after they ended; 0: never."
        ),
    ] = 7.0,
    max_followers_per_tenant: Annotated[
        int,
        typer.Option(
            envvar="GPUCAAS_MAX_FOLLOWERS_PER_TENANT",
            help="Open `logs --follow` streams a tenant may hold at once; more get 429.",
        ),
    ] = 8,
    max_followers: Annotated[
        int,
        typer.Option(
            envvar="GPUCAAS_MAX_FOLLOWERS",
            help="Open `logs --follow` streams of all tenants together; more get 429.",
        ),
    ] = 256,
    api_workers: Annotated[
        int,
        typer.Option(
            envvar="GPUCAAS_API_WORKERS",
            help="Processes serving the API. 1: this one, which also runs the scheduler and "
            "the containers. N > 1: N forked workers share the listening socket and forward "
            "admin routes, /healthz and /metrics to this process. Log-follow bounds apply per "
            "worker.",
        ),
    ] = 1,
) -> None:
    """Start API + store + scheduler + a local fleet of simulated HGX boards in one process.

    On first start it creates an admin token and a tenant 'demo', prints both once and
    writes them to STATE_DIR/credentials.json (mode 0600). SIGTERM or Ctrl-C stops it
    cleanly: log followers end, the scheduler lease is released, exit status 0.

    Example: gpucaas up --state-dir /tmp/gpucaas --nodes 10 --executor sandbox
    """
    from gpucaas.control import ControlPlaneConfig, parse_toleration, serve  # loads only for `up`

    with user_errors():
        if executor == "process" and not unsafe_process:
            raise InvalidRequest(
                "--executor process runs tenants' commands as host processes with NO isolation "
                "(they can read the state dir: tokens, other tenants' logs); add "
                "--unsafe-process to mean it, or use --executor sandbox (bubblewrap)"
            )
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
                sandbox_user=sandbox_user,
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
                max_body_bytes=max_body_bytes,
                max_header_bytes=max_header_bytes,
                max_env_bytes=max_env_bytes,
                max_command_bytes=max_command_bytes,
                max_log_bytes=max_log_bytes or None,
                retain_finished=retain_finished or None,
                retain_finished_days=retain_finished_days or None,
                max_followers_per_tenant=max_followers_per_tenant,
                max_followers=max_followers,
                api_workers=api_workers,
            )
        )

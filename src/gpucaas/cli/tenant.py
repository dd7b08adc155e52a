"""A tenant's commands: ``gpucaas run``, ``ps``, ``logs``, ``describe``, ``stop``.

Each opens a :class:`~gpucaas.client.Client` from ``--url``/``--token`` (or
``GPUCAAS_URL``/``GPUCAAS_TOKEN``, or the config file), makes one API call and renders it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gpucaas._states import ACTIVE_STATES, State
from gpucaas.errors import InvalidRequest
from gpucaas.runtime import boot_budget

from ._common import JsonOption, print_json, table, user_errors

if TYPE_CHECKING:  # the client (httpx, pydantic) loads when a command calls the API, not for --help
    from pydantic import BaseModel

    from gpucaas.client import Client, Container


UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="GPUCAAS_URL",
        help="The API's URL (else the config file's url, else http://127.0.0.1:8080).",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="GPUCAAS_TOKEN",
        help="An API token, gpc_… (else the config file's token).",
        show_default=False,
    ),
]


@contextmanager
def api(url: str | None, token: str | None) -> Iterator[Client]:
    """The client for these flags, inside :func:`user_errors`, closed afterwards."""
    from gpucaas.client import ClientConfig

    with user_errors():
        with ClientConfig.resolve(url, token).client() as client:
            yield client


def pairs(values: Sequence[str] | None, flag: str) -> dict[str, str]:
    """``K=V`` flags as a dict; raises InvalidRequest naming the flag."""
    out: dict[str, str] = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"{flag} {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def nfs_mount(value: str) -> dict[str, Any]:
    """``SERVER:/PATH:/MOUNT[:ro|:rw]`` as the API's NFS mount object."""
    server = ""
    rest = value
    if value.startswith("["):  # [IPv6]:/path:/mount
        end = value.find("]")
        server, rest = value[: end + 1], value[end + 1 :].removeprefix(":")
    else:
        server, _, rest = value.partition(":")
    parts = rest.split(":")
    read_only = False
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        read_only = parts.pop() == "ro"
    if not server or len(parts) != 2 or not all(parts):
        raise InvalidRequest(
            f"--nfs {value!r} is not SERVER:/PATH:/MOUNT[:ro], e.g. nfs1:/datasets:/data:ro"
        )
    return {"server": server, "path": parts[0], "mount_path": parts[1], "read_only": read_only}


def exit_status(container: Container) -> int:
    """The shell exit status for a finished container: its code, else 0 if it succeeded."""
    code = container.exit_code
    if code is not None:
        return code if 0 <= code <= 255 else (128 - code if -64 < code < 0 else 1)
    return 0 if container.state == State.SUCCEEDED else 1


def to_json(model: BaseModel) -> dict[str, Any]:
    """A reply model as the API's JSON object (what ``--json`` prints)."""
    data: dict[str, Any] = model.model_dump(mode="json")
    return data


def _partition(c: Container) -> str:
    p = c.partition
    if not p:
        return "-"
    mods = ",".join(str(m) for m in p.module_ids)
    return f"{p.board}/p{p.partition_id}[{mods}]"


def _ended(c: Container) -> str:
    line = f"{c.id}: {c.state}"
    if c.exit_code is not None:
        line += f", exit code {c.exit_code}"
    if c.reason:
        line += f" ({c.reason}{': ' + c.message if c.message else ''})"
    return line


def run(
    image: Annotated[str, typer.Argument(help="OCI image, e.g. nvcr.io/nvidia/pytorch:25.01-py3")],
    command: Annotated[
        list[str] | None, typer.Argument(help="The command and its arguments, after --.")
    ] = None,
    gpus: Annotated[int, typer.Option(help="GPUs wanted, 1-8 (granted as a partition).")] = 1,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE; repeat for several.")
    ] = None,
    nfs: Annotated[
        list[str] | None,
        typer.Option(help="SERVER:/PATH:/MOUNT[:ro] NFS mount; repeat for several."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="A name (a DNS label).")] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE; repeat for several.")
    ] = None,
    max_runtime: Annotated[
        int | None, typer.Option(help="Stop it after this many seconds.", metavar="DURATION_S")
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Wait until it ends; exit with its exit code.")
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream its output until it ends, then exit.")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a container on whole GPUs of one board; prints its ID, the partition size and state.

    With --wait or --follow, exit with the container's exit code (1 if it failed without one).

    Example: gpucaas run --gpus 2 --wait docker.io/library/busybox -- sh -c 'echo hi'
    """
    with api(url, token) as client:
        body: dict[str, Any] = {
            "image": image,
            "command": list(command or []),
            "gpus": gpus,
            "env": pairs(env, "--env"),
            "nfs": [nfs_mount(n) for n in nfs or ()],
            "labels": pairs(label, "--label"),
        }
        if name is not None:
            body["name"] = name
        if max_runtime is not None:
            body["max_runtime_s"] = max_runtime
        created = client.run(body)
        if not as_json:
            typer.echo(created.id)
            typer.echo(f"gpus: {created.gpus} asked, partition size {created.gpus_granted} granted")
            typer.echo(f"state: {created.state}")
        if not (wait or follow):
            if as_json:
                print_json(to_json(created))
            return
        if follow:
            sys.stdout.flush()
            for chunk in client.logs(created.id, follow=True):
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
        final = client.wait(created.id)
        if as_json:
            print_json(to_json(final))
        else:
            typer.echo(_ended(final), err=True)
    raise typer.Exit(exit_status(final))


def ps(
    all_: Annotated[bool, typer.Option("--all", "-a", help="Include finished containers.")] = False,
    state: Annotated[
        list[State] | None, typer.Option(help="Only these states; repeat for several.")
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", "-l", help="KEY=VALUE; repeat to require several."),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """List your containers, newest first (unfinished ones unless --all or --state).

    Example: gpucaas ps --all --label team=vision
    """
    with api(url, token) as client:
        states = state or ([] if all_ else sorted(ACTIVE_STATES))
        items = client.containers(state=states, label=pairs(label, "--label"), all_pages=True)
    if as_json:
        print_json({"items": [to_json(c) for c in items]})
        return
    rows = [
        (
            c.id,
            c.name or "-",
            c.image,
            f"{c.gpus}/{c.gpus_granted}",
            c.state if c.exit_code is None else f"{c.state} ({c.exit_code})",
            _partition(c),
            c.created_at,
        )
        for c in items
    ]
    typer.echo(table(["ID", "NAME", "IMAGE", "GPUS", "STATE", "PARTITION", "CREATED"], rows))


def logs(
    container_id: Annotated[str, typer.Argument(metavar="ID", help="The container's ID.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep streaming until it ends.")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print a container's output (stdout and stderr together).

    --json prints {"id": ..., "logs": ...} once the output is complete.

    Example: gpucaas logs -f 3f2a9c1d0e4b
    """
    with api(url, token) as client:
        if as_json:
            text = b"".join(client.logs(container_id, follow=follow))
            print_json({"id": container_id, "logs": text.decode("utf-8", "replace")})
            return
        for chunk in client.logs(container_id, follow=follow):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()


BOOT_SPANS = (
    ("queued", "created", State.PLACING.value, "submitted -> placing"),
    ("placing", State.PLACING.value, State.STARTING.value, "placing -> starting"),
    ("starting", State.STARTING.value, State.RUNNING.value, "starting -> running (the boot)"),
    ("total", "created", State.RUNNING.value, "submitted -> running"),
)
"""The measured spans of ``describe``: name, from-state, to-state (``created`` is the submit
time), and how it reads."""


def _at(c: Container, state: str) -> datetime | None:
    stamp = c.created_at if state == "created" else c.timestamps.get(state)
    return None if stamp is None else datetime.fromisoformat(stamp)


def boot_view(c: Container) -> dict[str, Any]:
    """The container's measured submit -> running spans (seconds, None until reached) next to
    the boot budget of a Kata GPU VM of its partition size and default memory."""
    measured: dict[str, float | None] = {}
    for name, start, end, _ in BOOT_SPANS:
        t0, t1 = _at(c, start), _at(c, end)
        measured[f"{name}_s"] = None if t0 is None or t1 is None else (t1 - t0).total_seconds()
    try:
        estimate: dict[str, Any] | None = boot_budget(c.gpus_granted).to_dict()
    except InvalidRequest:
        estimate = None
    return {
        "measured": measured,
        "estimate": estimate,
        "note": "measured: the control plane's state times on its backend (under the local "
        "'process' executor the workload is a process, not a VM, so its boot is short); "
        "estimate: a Kata GPU VM of the granted partition size and default memory, from "
        "published measurements (gpucaas node boot-budget)",
    }


def _boot_lines(view: dict[str, Any]) -> list[str]:
    measured = view["measured"]
    rows = []
    for name, _, _, span in BOOT_SPANS:
        seconds = measured[f"{name}_s"]
        rows.append((name, "-" if seconds is None else f"{seconds:.3f}s", span))
    lines = ["boot, measured:"]
    lines += ["  " + line for line in table(["SPAN", "SECONDS", "FROM -> TO"], rows).splitlines()]
    estimate = view["estimate"]
    if estimate is None:
        return lines
    pages = "1 GiB hugepages" if estimate["hugepages"] == "1Gi" else "4 KiB pages"
    verdict = "within" if estimate["within_target"] else "over"
    lines.append(
        f"boot, estimate for a Kata GPU VM ({estimate['gpus']} GPUs, "
        f"{estimate['memory_gib']:g} GiB, {pages}): {estimate['total_seconds']:.0f}s, "
        f"{verdict} the {estimate['target_seconds']:g}s target (gpucaas node boot-budget)"
    )
    phases = [(p["name"], f"{p['seconds']:.1f}s") for p in estimate["phases"]]
    lines += ["  " + line for line in table(["PHASE", "SECONDS"], phases).splitlines()]
    return lines


def describe(
    container_id: Annotated[str, typer.Argument(metavar="ID", help="The container's ID.")],
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show everything about a container: spec, state, partition, when it entered each state.

    Also the measured submit -> running spans next to the estimated boot of a Kata GPU VM of
    the same partition size (under the local executor the container is a process, not a VM).

    Example: gpucaas describe 3f2a9c1d0e4b
    """
    with api(url, token) as client:
        c = client.container(container_id)
    boot = boot_view(c)
    if as_json:
        print_json({**to_json(c), "boot": boot})
        return
    part = c.partition
    fields: list[tuple[str, object]] = [
        ("id", c.id),
        ("name", c.name or "-"),
        ("tenant", c.tenant),
        ("image", c.image),
        ("command", " ".join(c.command) or "-"),
        ("args", " ".join(c.args) or "-"),
        ("gpus", f"{c.gpus} asked, partition size {c.gpus_granted} granted"),
        ("state", c.state),
        ("reason", c.reason or "-"),
        ("message", c.message or "-"),
        ("exit code", "-" if c.exit_code is None else c.exit_code),
        ("board", part.board if part else "-"),
        ("partition id", part.partition_id if part else "-"),
        ("module ids", ",".join(str(m) for m in part.module_ids) if part else "-"),
        ("max runtime", f"{c.max_runtime_s}s" if c.max_runtime_s else "-"),
        ("boot seconds", "-" if c.boot_seconds is None else c.boot_seconds),
        ("created", c.created_at),
        ("updated", c.updated_at),
    ]
    width = max(len(k) for k, _ in fields) + 1
    for key, value in fields:
        typer.echo(f"{key + ':':<{width}} {value}")
    for title, mapping in (("env", c.env), ("labels", c.labels)):
        typer.echo(f"{title}:" + ("" if mapping else " -"))
        for k, v in sorted(mapping.items()):
            typer.echo(f"  {k}={v}")
    typer.echo("nfs:" + ("" if c.nfs else " -"))
    for m in c.nfs:
        mode = "ro" if m.read_only else "rw"
        typer.echo(f"  {m.server}:{m.path} -> {m.mount_path} ({mode})")
    typer.echo("timestamps:" + ("" if c.timestamps else " -"))
    for st, at in sorted(c.timestamps.items(), key=lambda kv: kv[1]):
        typer.echo(f"  {st + ':':<{width}} {at}")
    for line in _boot_lines(boot):
        typer.echo(line)


def stop(
    container_ids: Annotated[
        list[str], typer.Argument(metavar="ID...", help="The containers' IDs.")
    ],
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop containers (SIGTERM, then SIGKILL after the grace period); stopping twice is fine.

    Example: gpucaas stop 3f2a9c1d0e4b 9b1e0c7a5d2f
    """
    stopped = []
    with api(url, token) as client:
        for cid in container_ids:
            c = client.stop(cid)
            stopped.append(c)
            if not as_json:
                typer.echo(f"{c.id}  {c.state}{'' if c.state.final else ' (stopping)'}")
    if as_json:
        print_json({"items": [to_json(c) for c in stopped]})

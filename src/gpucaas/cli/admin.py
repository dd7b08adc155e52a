"""``gpucaas admin``: the operator's commands (tenants, tokens, the fleet). They need an
admin token (``gpucaas up`` printed one)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from gpucaas.errors import InvalidRequest

if TYPE_CHECKING:
    from gpucaas.client import BoardView, Tenant, Token

from ._common import JsonOption, print_json, table
from .tenant import TokenOption, UrlOption, api, to_json

app = typer.Typer(
    help="The operator's commands: tenants, tokens, the fleet (need an admin token).",
    no_args_is_help=True,
)
tenant_app = typer.Typer(help="Create, list and delete tenants.", no_args_is_help=True)
token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
app.add_typer(token_app, name="token")

_CELL = {"free": ".", "unhealthy": "x", "cordoned": "c", "reserved": "r"}


def _tenant_row(t: Tenant) -> tuple[object, ...]:
    return (
        t.name,
        f"{t.gpus_in_use}/{t.max_gpus}",
        f"{t.containers_active}/{t.max_containers}",
        ",".join(t.nfs_exports) or "-",
        t.created_at,
    )


_TENANT_HEADERS = ["NAME", "GPUS", "CONTAINERS", "NFS EXPORTS", "CREATED"]
_TOKEN_HEADERS = ["ID", "TENANT", "LABEL", "CREATED", "REVOKED"]


def _token_row(t: Token) -> tuple[object, ...]:
    return (t.id, t.tenant or "(admin)", t.label or "-", t.created_at, t.revoked_at or "-")


def board_line(b: BoardView) -> tuple[object, ...]:
    """One board as a row: name, cordoned flag, 8 one-letter cells, its containers.

    A used GPU shows its tenant's initial in upper case; free ones on a cordoned board 'c'.
    """
    cells = ""
    for g in b.gpus:
        if g.state == "used":
            cells += (g.tenant or "?")[:1].upper()
        elif g.state == "free" and b.cordoned:
            cells += "c"
        else:
            cells += _CELL.get(g.state, "?")
    held = " ".join(
        f"{p.container[:8]}({p.tenant}):{','.join(str(m) for m in p.module_ids)}"
        for p in b.partitions
    )
    return (b.name, "yes" if b.cordoned else "-", cells, held or "-")


_BOARD_HEADERS = ["BOARD", "CORDONED", "GPUS", "CONTAINERS"]


@tenant_app.command("create")
def tenant_create(
    name: Annotated[str, typer.Argument(help="A DNS label, up to 40 characters.")],
    max_gpus: Annotated[
        int | None, typer.Option(help="GPUs the tenant may hold at once (default 8).")
    ] = None,
    max_containers: Annotated[
        int | None, typer.Option(help="Unfinished containers it may have (default 16).")
    ] = None,
    nfs_export: Annotated[
        list[str] | None,
        typer.Option(help="SERVER:/PATH it may mount (and below); repeat for several."),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a tenant and its first token (the secret is shown once).

    Example: gpucaas admin tenant create vision --max-gpus 16 --nfs-export nfs1:/datasets
    """
    with api(url, token) as client:
        created = client.create_tenant(name, max_gpus, max_containers, nfs_export or [])
    if as_json:
        print_json(to_json(created))
        return
    typer.echo(table(_TENANT_HEADERS, [_tenant_row(created.tenant)]))
    typer.echo(f"token {created.token.id} (shown once; keep it):")
    typer.echo(f"  {created.token.token}")


@tenant_app.command("list")
def tenant_list(
    url: UrlOption = None, token: TokenOption = None, as_json: JsonOption = False
) -> None:
    """List tenants with their quotas and what they use now.

    Example: gpucaas admin tenant list
    """
    with api(url, token) as client:
        items = client.tenants()
    if as_json:
        print_json({"items": [to_json(t) for t in items]})
        return
    typer.echo(table(_TENANT_HEADERS, [_tenant_row(t) for t in items]))


@tenant_app.command("delete")
def tenant_delete(
    name: Annotated[str, typer.Argument(help="The tenant's name.")],
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a tenant with no unfinished containers, its tokens and its history.

    Example: gpucaas admin tenant delete vision
    """
    with api(url, token) as client:
        client.delete_tenant(name)
    if as_json:
        print_json({"deleted": name})
    else:
        typer.echo(f"tenant {name} deleted")


@token_app.command("create")
def token_create(
    tenant: Annotated[str | None, typer.Option(help="The tenant the token acts for.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="An admin token instead.")] = False,
    label: Annotated[str, typer.Option(help="A note: who or what uses it.")] = "",
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a token for a tenant (--tenant) or an admin token (--admin); shown once.

    Example: gpucaas admin token create --tenant vision --label ci
    """
    with api(url, token) as client:
        if (tenant is None) == (not admin):
            raise InvalidRequest("give exactly one of --tenant NAME or --admin")
        created = client.create_token(tenant, label)
    if as_json:
        print_json(to_json(created))
        return
    typer.echo(table(_TOKEN_HEADERS, [_token_row(created)]))
    typer.echo("secret (shown once; keep it):")
    typer.echo(f"  {created.token}")


@token_app.command("list")
def token_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's tokens.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """List tokens (never their secrets), of one tenant or all.

    Example: gpucaas admin token list --tenant vision
    """
    with api(url, token) as client:
        items = client.tokens(tenant)
    if as_json:
        print_json({"items": [to_json(t) for t in items]})
        return
    typer.echo(table(_TOKEN_HEADERS, [_token_row(t) for t in items]))


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's ID (not secret).")],
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a token; it stops working at once. Revoking twice is fine.

    Example: gpucaas admin token revoke 5c1f0e9a2b7d
    """
    with api(url, token) as client:
        revoked = client.revoke_token(token_id)
    if as_json:
        print_json(to_json(revoked))
        return
    typer.echo(f"token {revoked.id} revoked at {revoked.revoked_at}")


@app.command("fleet")
def fleet(url: UrlOption = None, token: TokenOption = None, as_json: JsonOption = False) -> None:
    """Show every board as a line of 8 GPU cells, then totals.

    Cells: '.' free, a tenant's initial (upper case) used, 'x' unhealthy, 'c' cordoned,
    'r' reserved.

    Example: gpucaas admin fleet
    """
    with api(url, token) as client:
        view = client.fleet()
    if as_json:
        print_json(to_json(view))
        return
    typer.echo(table(_BOARD_HEADERS, [board_line(b) for b in view.boards]))
    typer.echo(
        f"{len(view.boards)} boards, {view.capacity} GPUs: {view.allocated} used, "
        f"{view.free} free; {view.partitions_active} partitions active, "
        f"{view.queued} queued"
    )


@app.command("cordon")
def cordon(
    board: Annotated[str, typer.Argument(help="The board's name (see gpucaas admin fleet).")],
    gpu: Annotated[
        int | None, typer.Option(help="Only this GPU (module ID 1-8).", metavar="MODULE_ID")
    ] = None,
    undo: Annotated[bool, typer.Option("--undo", help="Uncordon instead.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Keep new containers off a board or one of its GPUs (--undo lets them back).

    Example: gpucaas admin cordon node-007 --gpu 3
    """
    with api(url, token) as client:
        view = client.cordon(board, gpu, cordoned=not undo)
    if as_json:
        print_json(to_json(view))
        return
    typer.echo(table(_BOARD_HEADERS, [board_line(view)]))


@app.command("drain")
def drain(
    board: Annotated[str, typer.Argument(help="The board's name (see gpucaas admin fleet).")],
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cordon a board and stop every container on it.

    Example: gpucaas admin drain node-007
    """
    with api(url, token) as client:
        result = client.drain(board)
    if as_json:
        print_json(to_json(result))
        return
    stopping = result.stopping
    typer.echo(
        f"board {result.board} cordoned; stopping {len(stopping)} container(s)"
        + (": " + " ".join(stopping) if stopping else "")
    )

"""The dashboard (``GET /``) end to end: a real control plane served by uvicorn, containers
submitted through the API, and Debian's headless Chromium driven by Playwright reading the
page's grid and table (their ``data-*`` attributes) while it polls the API live.

Needs ``/usr/bin/chromium`` (Debian: ``apt-get install chromium``); skips without it.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from gpucaas.control import ControlPlane, ControlPlaneConfig, Credentials

NODES = 6
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IMAGE = "docker.io/library/busybox:1.36"


def chromium_path() -> str | None:
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


@pytest.fixture
def chromium() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip(
            "the dashboard test drives Debian's headless Chromium: apt-get install chromium "
            "(/usr/bin/chromium not found)"
        )
    return path


@dataclass
class Served:
    url: str
    plane: ControlPlane
    creds: Credentials


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A real control plane (6 boards, process executor) on an ephemeral port."""
    plane = ControlPlane(
        ControlPlaneConfig(state_dir=tmp_path / "state", nodes=NODES, executor="process")
    )
    creds = plane.bootstrap("http://127.0.0.1")
    assert creds is not None
    plane.start()
    server = uvicorn.Server(
        uvicorn.Config(plane.app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "uvicorn exited during startup"
            assert time.monotonic() < deadline, "uvicorn did not start in 10 s"
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        try:
            yield Served(url, plane, creds)
        finally:
            _stop_all(url, creds.admin_token)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        plane.stop()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ACTIVE = ("queued", "placing", "starting", "running")


def _stop_all(url: str, admin: str, timeout: float = 15) -> None:
    """Stop every unfinished container (the process executor's workloads are host processes)."""
    with httpx.Client(base_url=url, timeout=10, headers=_auth(admin)) as client:
        deadline = time.monotonic() + timeout
        while True:
            page = client.get("/v1/containers", params={"limit": 500, "state": list(ACTIVE)})
            active = [c["id"] for c in page.json()["items"]]
            if not active:
                return
            assert time.monotonic() < deadline, f"containers did not stop: {active}"
            for cid in active:
                client.delete(f"/v1/containers/{cid}")
            time.sleep(0.1)


def _submit(client: httpx.Client, token: str, gpus: int, command: list[str]) -> str:
    reply = client.post(
        "/v1/containers",
        json={"image": IMAGE, "gpus": gpus, "command": command},
        headers=_auth(token),
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def _wait_state(
    client: httpx.Client, token: str, cid: str, states: set[str], timeout: float = 15
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        c: dict[str, Any] = client.get(f"/v1/containers/{cid}", headers=_auth(token)).json()
        if c["state"] in states:
            return c
        assert time.monotonic() < deadline, f"{cid} stayed {c['state']} ({c['message']})"
        time.sleep(0.05)


# Everything the assertions need from the page, read in one round trip.
READ_PAGE = """() => ({
  boards: document.querySelectorAll('#grid .board').length,
  cells: [...document.querySelectorAll('#grid .gpu')].map((c) => ({
    board: c.dataset.board,
    module: Number(c.dataset.module),
    state: c.dataset.state,
    tenant: c.dataset.tenant,
    container: c.dataset.container,
    partition: c.dataset.partition || null,
    label: c.getAttribute('aria-label'),
    title: c.title,
    bg: getComputedStyle(c).backgroundColor,
  })),
  rows: Object.fromEntries([...document.querySelectorAll('tr[data-container-id]')]
    .map((r) => [r.dataset.containerId, r.dataset.state])),
  hash: location.hash,
  conn: document.getElementById('conn-text').textContent,
})"""


def test_dashboard_shows_fleet_and_containers_live(
    chromium: str, served: Served, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    admin = served.creds.admin_token
    demo = served.creds.tenant_token
    started = time.monotonic()
    with httpx.Client(base_url=served.url, timeout=10) as client:
        reply = client.post(
            "/v1/admin/tenants",
            json={"name": "acme", "max_gpus": 64, "max_containers": 64},
            headers=_auth(admin),
        )
        assert reply.status_code == 201, reply.text
        acme = reply.json()["token"]["token"]
        tokens = {"demo": demo, "acme": acme}

        sleepers = {
            _submit(client, demo, 2, ["sleep", "60"]): "demo",
            _submit(client, demo, 3, ["sleep", "60"]): "demo",
            _submit(client, demo, 1, ["sleep", "60"]): "demo",
            _submit(client, acme, 8, ["sleep", "60"]): "acme",
        }
        quick = _submit(client, demo, 1, ["true"])
        running = {
            cid: _wait_state(client, tokens[tenant], cid, {"running"})
            for cid, tenant in sleepers.items()
        }
        quick_final = _wait_state(client, demo, quick, {"succeeded", "failed"})
        assert quick_final["state"] == "succeeded", quick_final
        granted = {c["gpus"]: c["gpus_granted"] for c in running.values() if c["tenant"] == "demo"}
        assert granted == {2: 2, 3: 4, 1: 1}
        expected_states = {cid: "running" for cid in running} | {quick: "succeeded"}

        # Where each running container sits, per the API: (board, module) -> container.
        holder = {
            (c["partition"]["board"], m): cid
            for cid, c in running.items()
            for m in c["partition"]["module_ids"]
        }
        acme_board = next(
            c["partition"]["board"] for c in running.values() if c["tenant"] == "acme"
        )

        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium, headless=True, args=CHROMIUM_ARGS
            )
            try:
                context = browser.new_context(viewport={"width": 1440, "height": 900})
                page = context.new_page()
                page.set_default_timeout(10_000)
                page.goto(f"{served.url}/#token={admin}")
                page.wait_for_function(
                    """(ids) => ids.every((id) => document.querySelector(
                        `#grid .gpu[data-container="${id}"]`)) &&
                      document.querySelector('tr[data-container-id][data-state="succeeded"]')""",
                    arg=list(running),
                )
                seen = page.evaluate(READ_PAGE)

                assert seen["boards"] == NODES
                assert len(seen["cells"]) == NODES * 8
                assert seen["hash"] == "", "the token must leave the address bar"
                assert "live" in seen["conn"]
                cells = {(c["board"], c["module"]): c for c in seen["cells"]}
                for cid, c in running.items():
                    mine = [
                        cells[(c["partition"]["board"], m)] for m in c["partition"]["module_ids"]
                    ]
                    assert len(mine) == c["gpus_granted"]
                    for cell in mine:
                        assert cell["state"] == "used", cell
                        assert cell["tenant"] == c["tenant"], cell
                        assert cell["container"] == cid, cell
                        assert cid in cell["title"] and c["tenant"] in cell["title"]
                        assert "used" in cell["label"] and cid in cell["label"]
                    assert len({cell["partition"] for cell in mine}) == 1, mine
                    assert mine[0]["partition"].startswith(f"{c['partition']['board']}/")
                    # one colour per tenant
                    assert len({cell["bg"] for cell in mine}) == 1
                # Different partitions never share a data-partition.
                partitions = {
                    cells[(c["partition"]["board"], c["partition"]["module_ids"][0])]["partition"]
                    for c in running.values()
                }
                assert len(partitions) == len(running)
                colour = {
                    cell["tenant"]: cell["bg"] for cell in seen["cells"] if cell["state"] == "used"
                }
                assert set(colour) == {"demo", "acme"}
                assert colour["demo"] != colour["acme"]
                assert all(
                    cells[(acme_board, m)]["state"] == "used"
                    and cells[(acme_board, m)]["tenant"] == "acme"
                    for m in range(1, 9)
                )
                free_bg = set()
                for key, cell in cells.items():
                    if key not in holder:
                        assert cell["state"] == "free", cell
                        assert cell["tenant"] == "" and cell["container"] == "", cell
                        assert cell["partition"] is None, cell
                        free_bg.add(cell["bg"])
                assert len(free_bg) == 1 and free_bg.isdisjoint(colour.values())
                assert seen["rows"] == expected_states

                page.wait_for_function(
                    "() => [...document.querySelectorAll('tr[data-container-id] td:nth-child(7)')]"
                    ".filter((td) => td.textContent).length >= 4"
                )
                shot = tmp_path / "dashboard.png"
                page.screenshot(path=str(shot), full_page=True)
                # only under tmp_path: pytest keeps the last runs' (-s shows where)
                print(f"dashboard screenshot: {shot}")

                # Live update: stop a container; the table and the grid follow.
                victim = next(cid for cid, c in running.items() if c["gpus"] == 2)
                where = running[victim]["partition"]
                reply = client.delete(f"/v1/containers/{victim}", headers=_auth(demo))
                assert reply.status_code == 200, reply.text
                page.wait_for_function(
                    """([id, board, modules]) =>
                      document.querySelector(`tr[data-container-id="${id}"]`)
                        ?.dataset.state === 'stopped' &&
                      modules.every((m) => {
                        const c = document.querySelector(
                          `.gpu[data-board="${board}"][data-module="${m}"]`);
                        return c.dataset.state === 'free' && !c.dataset.container &&
                          !c.dataset.partition;
                      })""",
                    arg=[victim, where["board"], where["module_ids"]],
                    timeout=8_000,
                )
                context.close()

                # No token: the sign-in form. A wrong token: an auth error and the form.
                context = browser.new_context()
                page = context.new_page()
                page.set_default_timeout(10_000)
                page.goto(f"{served.url}/")
                page.locator("#login-form").wait_for(state="visible")
                assert page.locator("#app").is_hidden()
                page.goto(f"{served.url}/#token=gpc_wrong")
                page.locator("#banner[data-kind='auth']").wait_for(state="visible")
                assert "401" in page.locator("#banner").inner_text()
                assert page.locator("#login-form").is_visible()
                # Signing in through the form opens the dashboard.
                page.fill("#token-input", admin)
                page.click("#login-form button[type=submit]")
                page.wait_for_function("() => document.querySelectorAll('#grid .board').length")
                assert page.locator("#grid .board").count() == NODES
                context.close()
            finally:
                browser.close()
    print(f"dashboard e2e took {time.monotonic() - started:.1f} s")

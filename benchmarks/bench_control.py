"""Control-plane benchmark: ``gpucaas up`` over HTTP, as a tenant sees it.

Starts ``gpucaas up --executor process`` as a subprocess (a fresh state directory and
SQLite store for each section, so one section's backlog does not slow the next) and
measures, against baselines taken in the same run on the same machine:

1. submit latency under open-loop load: ``POST /v1/containers`` sent on a fixed schedule
   whether or not earlier requests finished, latency counted from the *scheduled* send
   time (queueing delay included: no coordinated omission), on three fresh servers: containers
   that run long (``sleep 3600``: the fleet fills, then the queue grows while the scheduler
   keeps working; the target case), a cordoned fleet (API + store alone), and churn (``true``:
   every submit is also a process start and exit). Baseline: ``GET /healthz`` at the same
   rate (the HTTP floor of this server and client). Target: submit p99 < 50 ms with SQLite.
2. list pages (``GET /v1/containers?limit=50``: first page, a page half-way down, the
   ``state=succeeded`` and ``label=bench=1`` filters) with about 100 containers of the
   tenant in the store, then with about 10,000. Target: ratio ~1 (no slowdown).
3. submit → running with the process executor (``boot_seconds`` from the server's own
   timestamps) for ``sleep 0.5`` containers at 20/s and at 5/s. Baseline: spawning the
   same command with ``subprocess.Popen`` here and reading its first line.
   Target: p99 < 1 s.

4. (``--mixed``, run alone) mixed open-loop load, 75 % GET (a container by ID, a list page of
   20) and 25 % POST (``sleep 3600``), on 20 boards, at 100 and 200 requests/s for 60 s,
   against each ``--api-workers`` count (default 1,2). The client is compiled
   (``benchmarks/loadgen``, Go standard library; ``go build`` needs no download) and reports
   its own lag, with the load average before and after. Targets: no errors, p99 < 50 ms at
   100/s and < 250 ms at 200/s.

Times are reported, never asserted: this script gates nothing.

Run: .venv/bin/python benchmarks/bench_control.py [--quick] [--rate R] [--seconds S]
     .venv/bin/python benchmarks/bench_control.py --mixed [--rate R] [--api-workers 1,3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

NODES = 100
BOARD = "hgx-h100-8"
SEED = 1
SUBMIT_P99_TARGET_MS = 50.0
BOOT_P99_TARGET_S = 1.0
LIST_REPEATS = 50
GROW_CONCURRENCY = 16
TIMEOUT = httpx.Timeout(30.0)
LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=256)


@dataclass(frozen=True, slots=True)
class Settings:
    rate: float
    """Submit requests per second (section 1)."""
    seconds: float
    """How long the submit load runs."""
    healthz_seconds: float
    """How long the /healthz baseline runs (same rate)."""
    small: int
    """Containers in the store for the first list measurement."""
    large: int
    """Containers in the store for the second one."""
    boots: tuple[tuple[int, float], ...]
    """Section 3's runs: (containers, submits per second)."""


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        rate, seconds = args.rate or 100.0, args.seconds or 5.0
        return Settings(rate, seconds, seconds, 100, 1_000, boots=((40, 20.0), (20, 5.0)))
    rate, seconds = args.rate or 200.0, args.seconds or 60.0
    return Settings(rate, seconds, max(5.0, seconds / 3), 100, 10_000, ((200, 20.0), (100, 5.0)))


# -- the server ------------------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    state_dir: Path
    url: str
    admin_token: str
    log: Path

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gpucaas_script() -> str:
    script = Path(sys.executable).parent / "gpucaas"
    if not script.exists():
        raise SystemExit(f"no gpucaas script next to {sys.executable}; install the project")
    return str(script)


def start_server(root: Path, name: str, *, nodes: int = NODES, extra: Sequence[str] = ()) -> Server:
    """``gpucaas up`` in a subprocess with its own state dir; waits for /healthz."""
    state_dir = root / name
    log = root / f"{name}.log"
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        gpucaas_script(),
        "up",
        "--state-dir",
        str(state_dir),
        "--nodes",
        str(nodes),
        "--board",
        BOARD,
        "--executor",
        "process",
        "--unsafe-process",
        "--listen",
        url.removeprefix("http://"),
        *extra,
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"gpucaas up exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError, OSError, ValueError, KeyError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                creds = json.loads((state_dir / "credentials.json").read_text())
                return Server(proc, state_dir, creds["url"], creds["admin_token"], log)
        if time.monotonic() > deadline:
            stop_server_process(proc)
            raise SystemExit(f"gpucaas up did not answer within 60 s:\n{log.read_text()}")
        time.sleep(0.1)


def stop_server_process(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def supervisors_of(state_dir: Path) -> list[int]:
    """Pids of processes (container supervisors) whose command line names ``state_dir``."""
    needle = str(state_dir).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return pids


def stop_server(server: Server) -> int:
    """Stop the server, then any container supervisor it left; returns how many were left."""
    stop_server_process(server.proc)
    left = supervisors_of(server.state_dir)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    return len(left)


@contextlib.contextmanager
def running_server(
    root: Path, name: str, *, nodes: int = NODES, extra: Sequence[str] = ()
) -> Iterator[Server]:
    server = start_server(root, name, nodes=nodes, extra=extra)
    try:
        yield server
    finally:
        left = stop_server(server)
        if left:
            print(f"  ({left} container supervisors were still running at the end; sent SIGTERM)")


def create_tenant(server: Server, name: str) -> dict[str, str]:
    """A tenant with quotas that never bind; returns the headers for its token."""
    reply = httpx.post(
        f"{server.url}/v1/admin/tenants",
        json={"name": name, "max_gpus": 1_000_000, "max_containers": 1_000_000},
        headers=server.admin(),
        timeout=TIMEOUT,
    )
    reply.raise_for_status()
    return {"Authorization": f"Bearer {reply.json()['token']['token']}"}


def container_body(rng: random.Random, command: Sequence[str]) -> dict[str, Any]:
    return {
        "image": "busybox",
        "command": list(command),
        "gpus": rng.randint(1, 8),
        "labels": {"bench": "1"},
    }


# -- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (the max is the 100th)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.4999)))
    return ordered[rank - 1]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {
        "p50": 1000 * percentile(values, 50),
        "p90": 1000 * percentile(values, 90),
        "p99": 1000 * percentile(values, 99),
        "max": 1000 * max(values),
    }


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b > 0 else "—"


# -- 1. open-loop load -----------------------------------------------------------------------


@dataclass
class Load:
    """One open-loop run: latencies from the scheduled send time, and what went wrong."""

    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    max_send_lag: float = 0.0
    """How late the client sent a request after its scheduled time (client saturation)."""
    wall: float = 0.0
    replies: list[httpx.Response] = field(default_factory=list)


Send = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


async def open_loop(
    url: str, rate: float, seconds: float, send: Send, expect: int, *, keep: bool = False
) -> Load:
    """Send ``rate × seconds`` requests at ``t0 + i / rate``, each in its own task.

    Only failed replies are kept unless ``keep``: on two CPUs shared with the server, a
    client that holds 12,000 replies falls behind its own schedule."""
    load = Load()
    count = int(rate * seconds)
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT, limits=LIMITS) as client:
        loop = asyncio.get_running_loop()

        async def one(i: int, at: float) -> None:
            try:
                reply = await send(client, i)
            except httpx.HTTPError as exc:
                load.errors[type(exc).__name__] += 1
                return
            done = loop.time()
            if reply.status_code != expect:
                load.errors[f"HTTP {reply.status_code}"] += 1
                load.replies.append(reply)
                return
            load.latencies.append(done - at)
            if keep:
                load.replies.append(reply)

        tasks = []
        t0 = loop.time() + 0.1
        for i in range(count):
            at = t0 + i / rate
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                load.max_send_lag = max(load.max_send_lag, -delay)
            tasks.append(asyncio.create_task(one(i, at)))
            load.sent += 1
        await asyncio.gather(*tasks)
        load.wall = loop.time() - t0
    return load


def submit_sender(headers: dict[str, str], command: Sequence[str], seed: int) -> Send:
    rng = random.Random(seed)

    async def send(client: httpx.AsyncClient, _i: int) -> httpx.Response:
        return await client.post(
            "/v1/containers", json=container_body(rng, command), headers=headers
        )

    return send


async def healthz(client: httpx.AsyncClient, _i: int) -> httpx.Response:
    return await client.get("/healthz")


def print_load_table(rows: list[tuple[str, Load]], rate: float) -> None:
    print(f"{'':18}{'sent':>7}{'ok':>7}{'errors':>8}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for name, load in rows:
        s = summary_ms(load.latencies)
        print(
            f"{name:18}{load.sent:>7}{len(load.latencies):>7}{sum(load.errors.values()):>8}"
            f"{s['p50']:>9.1f}{s['p90']:>9.1f}{s['p99']:>9.1f}{s['max']:>9.1f}   (ms)"
        )
    for name, load in rows:
        if load.errors:
            print(f"  {name} errors: {dict(load.errors)}")
        achieved = load.sent / load.wall if load.wall else 0.0
        print(
            f"  {name}: {achieved:.0f} req/s over {load.wall:.1f} s (asked {rate:g}/s); client "
            f"sent up to {1000 * load.max_send_lag:.1f} ms late"
        )


def server_errors(load: Load) -> list[str]:
    """The first few non-2xx replies, for the report."""
    out: list[str] = []
    for reply in load.replies:
        if reply.status_code >= 400 and len(out) < 3:
            out.append(f"HTTP {reply.status_code}: {reply.text[:300]}")
    return out


def server_share_under(server: Server, route: str, method: str, le: str) -> tuple[int, int]:
    """(requests, those the app answered within ``le`` seconds) from the server's own
    latency histogram at /metrics: time inside the app, without the client or the wire."""
    text = httpx.get(f"{server.url}/metrics", headers=server.admin(), timeout=TIMEOUT).text
    labels = f'method="{method}",route="{route}"'
    total = under = 0
    for line in text.splitlines():
        if line.startswith("gpucaas_http_request_seconds_bucket{") and labels in line:
            if 'le="+Inf"' in line:
                total = int(float(line.rsplit(" ", 1)[1]))
            elif f'le="{le}"' in line:
                under = int(float(line.rsplit(" ", 1)[1]))
    return total, under


def submit_load(
    root: Path, name: str, settings: Settings, command: Sequence[str], *, cordoned: bool
) -> tuple[Load, dict[str, int], tuple[int, int]]:
    """Open-loop submits against a fresh server; also its store's states and the app's own
    share of submits handled within 50 ms."""
    with running_server(root, name) as server:
        headers = create_tenant(server, "bench")
        if cordoned:
            cordon_fleet(server, True)
        send = submit_sender(headers, command, SEED)
        load = asyncio.run(open_loop(server.url, settings.rate, settings.seconds, send, 201))
        states = state_counts(server, headers)
        share = server_share_under(server, "/v1/containers", "POST", "0.05")
    return load, states, share


def section_submit(root: Path, settings: Settings) -> None:
    print(
        f"\n1. Submit latency, open loop at {settings.rate:g}/s (latency from the scheduled "
        "send time, so queueing counts); a fresh server for each row"
    )
    print(
        "   long-running: containers `sleep 3600` (GPU jobs run for minutes to days): the "
        "800-GPU fleet fills in the first seconds, then the scheduler keeps passing over a "
        "growing queue while submits arrive. cordoned: nothing ever starts (API + store "
        "alone). churn: every container is `true`, so each submit is also a process start "
        "and exit on this 2-CPU machine (a capacity test of the process executor)"
    )
    with running_server(root, "healthz") as server:
        base = asyncio.run(
            open_loop(server.url, settings.rate, settings.healthz_seconds, healthz, 200)
        )
    long, long_states, long_share = submit_load(
        root, "submit-long", settings, ["sleep", "3600"], cordoned=False
    )
    idle, _, idle_share = submit_load(root, "submit-cordoned", settings, ["true"], cordoned=True)
    churn, churn_states, churn_share = submit_load(
        root, "submit-churn", settings, ["true"], cordoned=False
    )
    rows = [
        ("GET /healthz", base),
        ("POST, long-running", long),
        ("POST, cordoned", idle),
        ("POST, churn (true)", churn),
    ]
    print_load_table(rows, settings.rate)
    for load in (long, idle, churn):
        for line in server_errors(load):
            print(f"  {line}")
    print(f"  store after long-running: {long_states}; after churn: {churn_states}")
    for label, (total, under) in (
        ("long-running", long_share),
        ("cordoned", idle_share),
        ("churn", churn_share),
    ):
        if total:
            print(
                f"  inside the app ({label}, its /metrics histogram): {under / total:.1%} of "
                f"{total} submits took ≤ 50 ms"
            )
    hz = summary_ms(base.latencies)["p99"]
    sub = summary_ms(long.latencies)["p99"]
    met = "met" if sub < SUBMIT_P99_TARGET_MS and not long.errors else "NOT met"
    print(
        f"submit p99 / healthz p99: long-running {ratio(sub, hz)} ({sub:.1f} / {hz:.1f} ms), "
        f"cordoned {ratio(summary_ms(idle.latencies)['p99'], hz)}, churn "
        f"{ratio(summary_ms(churn.latencies)['p99'], hz)}; target p99 < "
        f"{SUBMIT_P99_TARGET_MS:g} ms with SQLite (long-running): {met}"
    )


def state_counts(server: Server, headers: dict[str, str]) -> dict[str, int]:
    """Containers of the tenant by state (admin /v1/admin/tenants has only active ones)."""
    counts: Counter[str] = Counter()
    token: str | None = None
    with httpx.Client(base_url=server.url, headers=headers, timeout=TIMEOUT) as client:
        while True:
            params: dict[str, Any] = {"limit": 500}
            if token:
                params["page_token"] = token
            page = client.get("/v1/containers", params=params).json()
            counts.update(item["state"] for item in page["items"])
            token = page["next_page_token"]
            if not token:
                return dict(sorted(counts.items()))


# -- 2. list pages ---------------------------------------------------------------------------


ListCase = tuple[str, dict[str, Any]]


def page_token_at(client: httpx.Client, depth: int) -> str | None:
    """The page token that starts the page after the ``depth`` newest containers."""
    token: str | None = None
    seen = 0
    while seen < depth:
        params: dict[str, Any] = {"limit": min(500, depth - seen)}
        if token:
            params["page_token"] = token
        page = client.get("/v1/containers", params=params).json()
        seen += len(page["items"])
        token = page["next_page_token"]
        if not token:
            return None
    return token


def list_cases(client: httpx.Client, stored: int) -> list[ListCase]:
    deep = page_token_at(client, stored // 2)
    return [
        ("first page", {"limit": 50}),
        ("middle page", {"limit": 50, "page_token": deep}),
        ("state=succeeded", {"limit": 50, "state": "succeeded"}),
        ("label=bench=1", {"limit": 50, "label": "bench=1"}),
    ]


def time_lists(server: Server, headers: dict[str, str], stored: int) -> dict[str, float]:
    """Median seconds of ``LIST_REPEATS`` sequential requests of each case."""
    out = {}
    with httpx.Client(base_url=server.url, headers=headers, timeout=TIMEOUT) as client:
        for name, params in list_cases(client, stored):
            client.get("/v1/containers", params=params).raise_for_status()  # warm up
            times = []
            for _ in range(LIST_REPEATS):
                start = time.perf_counter()
                reply = client.get("/v1/containers", params=params)
                times.append(time.perf_counter() - start)
                reply.raise_for_status()
                if not reply.json()["items"]:
                    raise SystemExit(f"list {name} came back empty: {params}")
            out[name] = statistics.median(times)
    return out


async def submit_many(
    server: Server, headers: dict[str, str], count: int, command: Sequence[str], seed: int
) -> list[str]:
    """Submit ``count`` containers, ``GROW_CONCURRENCY`` at a time; returns their ids."""
    rng = random.Random(seed)
    gate = asyncio.Semaphore(GROW_CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=server.url, headers=headers, timeout=TIMEOUT, limits=LIMITS
    ) as client:

        async def one() -> str:
            async with gate:
                reply = await client.post("/v1/containers", json=container_body(rng, command))
                reply.raise_for_status()
                return str(reply.json()["id"])

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def stop_all(server: Server, headers: dict[str, str], ids: Sequence[str]) -> None:
    gate = asyncio.Semaphore(GROW_CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=server.url, headers=headers, timeout=TIMEOUT, limits=LIMITS
    ) as client:

        async def one(cid: str) -> None:
            async with gate:
                (await client.delete(f"/v1/containers/{cid}")).raise_for_status()

        await asyncio.gather(*(one(cid) for cid in ids))


def cordon_fleet(server: Server, cordoned: bool) -> None:
    with httpx.Client(base_url=server.url, headers=server.admin(), timeout=TIMEOUT) as client:
        boards = [b["name"] for b in client.get("/v1/admin/fleet").json()["boards"]]
        for board in boards:
            client.put(
                f"/v1/admin/boards/{board}/cordon", json={"cordoned": cordoned}
            ).raise_for_status()


def wait_final(server: Server, headers: dict[str, str], ids: Sequence[str], limit_s: float) -> None:
    """Until every container in ``ids`` is in a final state (or ``limit_s`` passes)."""
    final = {"succeeded", "failed", "stopped", "lost"}
    pending = set(ids)
    deadline = time.monotonic() + limit_s
    with httpx.Client(base_url=server.url, headers=headers, timeout=TIMEOUT) as client:
        while pending and time.monotonic() < deadline:
            for cid in list(pending):
                if client.get(f"/v1/containers/{cid}").json()["state"] in final:
                    pending.discard(cid)
            if pending:
                time.sleep(0.2)
    if pending:
        raise SystemExit(f"{len(pending)} containers did not end within {limit_s:g} s")


def section_lists(root: Path, settings: Settings) -> None:
    small, large = settings.small, settings.large
    print(
        f"\n2. List pages (limit=50), median of {LIST_REPEATS} sequential requests, with "
        f"{small:,} then {large:,} containers of the tenant in the store"
    )
    print(
        f"   the first {small:,} ran `true` and succeeded; the other {large - small:,} were "
        "submitted with the fleet cordoned and stopped while queued (the newest rows), so the "
        "state=succeeded page lies under all of them; the scheduler is idle while timing"
    )
    with running_server(root, "lists") as server:
        headers = create_tenant(server, "bench")
        first = asyncio.run(submit_many(server, headers, small, ["true"], SEED))
        wait_final(server, headers, first, limit_s=120)
        at_small = time_lists(server, headers, small)
        cordon_fleet(server, True)
        started = time.perf_counter()
        more = asyncio.run(submit_many(server, headers, large - small, ["true"], SEED + 1))
        grow_s = time.perf_counter() - started
        asyncio.run(stop_all(server, headers, more))
        time.sleep(1.0)  # one idle scheduler pass drops the stopped ones from its queue
        states = state_counts(server, headers)
        at_large = time_lists(server, headers, large)
    print(
        f"   grew by {large - small:,} submits in {grow_s:.1f} s at concurrency "
        f"{GROW_CONCURRENCY} ({(large - small) / grow_s:.0f}/s); store: {states}"
    )
    print(f"{'':18}{f'{small:,} (ms)':>12}{f'{large:,} (ms)':>14}{'ratio':>9}")
    for name, t_small in at_small.items():
        t_large = at_large[name]
        print(
            f"{name:18}{1000 * t_small:>12.2f}{1000 * t_large:>14.2f}{ratio(t_large, t_small):>9}"
        )
    worst = max(at_large[n] / at_small[n] for n in at_small)
    verdict = "does not slow" if worst < 1.5 else "SLOWS"
    print(f"list latency at {large:,} / at {small:,}: worst {worst:.2f}× (target ~1): {verdict}")


# -- 3. submit → running ---------------------------------------------------------------------


BOOT_COMMAND = ("sh", "-c", "echo up; sleep 0.5")


def spawn_times(count: int) -> list[float]:
    """Seconds from Popen to the first line of the same command, run here."""
    out = []
    for _ in range(count):
        start = time.perf_counter()
        proc = subprocess.Popen(BOOT_COMMAND, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        proc.stdout.readline()
        out.append(time.perf_counter() - start)
        proc.kill()
        proc.wait()
        proc.stdout.close()
    return out


def boot_seconds(server: Server, headers: dict[str, str], ids: Sequence[str]) -> list[float]:
    with httpx.Client(base_url=server.url, headers=headers, timeout=TIMEOUT) as client:
        out = []
        for cid in ids:
            view = client.get(f"/v1/containers/{cid}").json()
            if view["boot_seconds"] is None:
                raise SystemExit(f"container {cid} never ran: {view['state']} {view['message']}")
            out.append(float(view["boot_seconds"]))
    return out


def boot_run(root: Path, count: int, rate: float) -> tuple[list[float], Counter[str]]:
    """boot_seconds of ``count`` containers submitted at ``rate`` to a fresh server."""
    with running_server(root, f"boot-{rate:g}") as server:
        headers = create_tenant(server, "bench")
        send = submit_sender(headers, BOOT_COMMAND, SEED)
        load = asyncio.run(open_loop(server.url, rate, count / rate, send, 201, keep=True))
        ids = [str(r.json()["id"]) for r in load.replies if r.status_code == 201]
        wait_final(server, headers, ids, limit_s=180)
        return boot_seconds(server, headers, ids), load.errors


def section_boot(root: Path, settings: Settings) -> None:
    command = f"{' '.join(BOOT_COMMAND[:2])} '{BOOT_COMMAND[2]}'"
    print(f"\n3. Submit → running, process executor, containers `{command}`")
    print(
        "   boot_seconds = created → running from the server's timestamps; baseline: "
        "Popen of the same command here until its first line"
    )
    runs = [(f"boot at {rate:g}/s", *boot_run(root, count, rate)) for count, rate in settings.boots]
    spawns = spawn_times(max(len(boots) for _, boots, _ in runs))
    p = summary_ms(spawns)
    print(f"{'':22}{'n':>6}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    rows = [(name, boots) for name, boots, _ in runs] + [("Popen → first line", spawns)]
    for name, values in rows:
        s = summary_ms(values)
        print(
            f"{name:22}{len(values):>6}{s['p50']:>9.1f}{s['p90']:>9.1f}{s['p99']:>9.1f}"
            f"{s['max']:>9.1f}   (ms)"
        )
    for name, boots, errors in runs:
        b = summary_ms(boots)
        if errors:
            print(f"  {name}: submit errors {dict(errors)}")
        met = "met" if b["p99"] < 1000 * BOOT_P99_TARGET_S else "NOT met"
        print(
            f"{name}: boot p50 / spawn p50 = {ratio(b['p50'], p['p50'])}, p99 / p99 = "
            f"{ratio(b['p99'], p['p99'])}; target boot p99 < {BOOT_P99_TARGET_S:g} s: {met}"
        )


# -- 4. mixed load, API workers ---------------------------------------------------------------

MIXED_NODES = 20
MIXED_GET_SHARE = 0.75
MIXED_SEEDED = 20
MIXED_P99_TARGET_MS = {100.0: 50.0, 200.0: 250.0}
LOADGEN = Path(__file__).with_name("loadgen")


def build_loadgen(root: Path) -> Path:
    """The open-loop client, compiled (Go, standard library only): a Python client on the
    same two CPUs as the server falls behind its own schedule at 200/s."""
    binary = root / "loadgen"
    subprocess.run(
        ["go", "build", "-o", str(binary), "."],
        cwd=LOADGEN,
        check=True,
        env={**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"},
    )
    return binary


def mixed_run(
    root: Path, loadgen: Path, rate: float, seconds: float, workers: int
) -> dict[str, Any]:
    """One fresh server with ``workers`` API processes and 20 boards; the tenant's first
    containers (``sleep 3600``) seeded, then ``rate``/s for ``seconds``: 75 % GET (by ID,
    list pages of 20), 25 % POST (``sleep 3600``: the fleet fills, then the queue grows)."""
    name = f"mixed-{rate:g}-w{workers}"
    extra = ["--api-workers", str(workers)]
    with running_server(root, name, nodes=MIXED_NODES, extra=extra) as server:
        headers = create_tenant(server, "bench")
        rng = random.Random(SEED)
        with httpx.Client(base_url=server.url, headers=headers, timeout=TIMEOUT) as c:
            ids = []
            for _ in range(MIXED_SEEDED):
                r = c.post("/v1/containers", json=container_body(rng, ["sleep", "3600"]))
                r.raise_for_status()
                ids.append(r.json()["id"])
        load1 = os.getloadavg()[0]
        out = subprocess.run(
            [
                str(loadgen),
                f"-url={server.url}",
                f"-token={headers['Authorization'].removeprefix('Bearer ')}",
                f"-rate={rate}",
                f"-seconds={seconds}",
                f"-get={MIXED_GET_SHARE}",
                f"-ids={','.join(ids)}",
                f"-seed={SEED}",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        result: dict[str, Any] = json.loads(out.stdout)
        result["load_before"] = load1
        result["load_after"] = os.getloadavg()[0]
        return result


def print_mixed(rate: float, runs: dict[int, dict[str, Any]]) -> None:
    target = MIXED_P99_TARGET_MS.get(rate)
    print(
        f"\n{rate:g} requests/s, 75 % GET / 25 % POST, {MIXED_NODES} boards"
        + (f" (target: no errors, p99 < {target:g} ms)" if target else "")
    )
    print(
        f"{'API workers':14}{'sent':>7}{'ok':>7}{'errors':>8}{'p50':>9}{'p90':>9}{'p99':>9}"
        f"{'max':>9}{'lag p99':>9}{'lag max':>9}   load 1m"
    )
    for workers, r in runs.items():
        s, lag = r["latency_ms"], r["lag_ms"]
        errors = sum(r["errors"].values())
        print(
            f"{workers:<14}{r['sent']:>7}{r['ok']:>7}{errors:>8}{s['p50']:>9.1f}{s['p90']:>9.1f}"
            f"{s['p99']:>9.1f}{s['max']:>9.1f}{lag['p99']:>9.1f}{lag['max']:>9.1f}   "
            f"{r['load_before']:.2f} → {r['load_after']:.2f}   (ms)"
        )
        if errors:
            print(f"  errors: {r['errors']}")
        for kind, k in sorted(r["by_kind"].items()):
            print(f"  {kind:10} ok {k['ok']:>6.0f}  p50 {k['p50']:7.1f}  p99 {k['p99']:8.1f} ms")
    if len(runs) > 1:
        base = runs[min(runs)]["latency_ms"]["p99"]
        for workers, r in runs.items():
            if workers != min(runs):
                print(
                    f"  p99 of {min(runs)} worker / {workers} workers: "
                    f"{ratio(base, r['latency_ms']['p99'])}"
                )


def section_mixed(
    root: Path, rates: Sequence[float], seconds: float, workers: Sequence[int]
) -> None:
    print(
        "\n== 4. mixed open-loop load against API worker processes (Go client, latency from "
        "the scheduled send time; 'lag' is how late the client itself sent) =="
    )
    loadgen = build_loadgen(root)
    for rate in rates:
        print_mixed(rate, {w: mixed_run(root, loadgen, rate, seconds, w) for w in workers})


# -- main ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="everything small (under a minute)")
    parser.add_argument("--rate", type=float, help="submit requests/s (default 200; quick 100)")
    parser.add_argument("--seconds", type=float, help="submit load duration (default 60; quick 5)")
    parser.add_argument(
        "--mixed",
        action="store_true",
        help="only section 4: 75 %% GET / 25 %% POST at --rate (default: 100 then 200/s) "
        "against each --api-workers count",
    )
    parser.add_argument(
        "--api-workers",
        default="1,2",
        help="section 4: comma-separated API worker counts to compare (default 1,2)",
    )
    args = parser.parse_args(argv)
    if args.mixed:
        rates = [args.rate] if args.rate else [100.0, 200.0]
        workers = [int(w) for w in args.api_workers.split(",")]
        print(
            f"gpucaas up, {MIXED_NODES} × {BOARD}, executor process, SQLite; client and server "
            f"share this machine: {os.cpu_count()} CPUs; {args.seconds or 60:g} s per run"
        )
        with tempfile.TemporaryDirectory(prefix="bench-control-") as tmp:
            section_mixed(Path(tmp), rates, args.seconds or 60.0, workers)
        return 0
    settings = settings_from(args)
    started = time.perf_counter()
    boots = ", ".join(f"{n} at {r:g}/s" for n, r in settings.boots)
    print(
        f"gpucaas up, {NODES} × {BOARD}, executor process, SQLite; client and server share "
        f"this machine: {os.cpu_count()} CPUs (timings are noisy; compare the ratios)"
    )
    print(
        f"parameters: submit {settings.rate:g}/s × {settings.seconds:g} s, healthz "
        f"{settings.rate:g}/s × {settings.healthz_seconds:g} s; lists at {settings.small:,} and "
        f"{settings.large:,}; boots {boots}; seed {SEED}; "
        f"Python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-control-") as tmp:
        root = Path(tmp)
        section_submit(root, settings)
        section_lists(root, settings)
        section_boot(root, settings)
    print(f"\n{time.perf_counter() - started:.0f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())

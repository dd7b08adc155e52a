"""fm-controller benchmark: activate/deactivate round trips through the daemon's socket.

Starts ``gpucaas fabric serve --backend simulated`` as a subprocess on a unix socket (what
a node agent talks to) and times activate/deactivate pairs of one partition through
:class:`RemoteFabric`: round trips per second and the p50/p99 latency of one activation
(target: p99 under 5 ms). The baseline, in this process, is the same work without gRPC:
the same calls on a :class:`FabricController` over a :class:`SimulatedFabric` with a state
file, as the daemon runs it. Persistence is reported apart: every controller operation
writes ``desired.json`` twice (the intent, then the outcome) and the simulated Fabric
Manager writes its state file once, each write fsync'ed; the rows without a state file
show what is left without the simulator's disk writes.

Run: .venv/bin/python benchmarks/bench_fabric.py [--json] [--pairs N] [--budget-s S]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gpucaas.fabric import FabricController, FabricManagerDown, RemoteFabric, SimulatedFabric
from gpucaas.topology import get_model

BOARD = "hgx-h100-8"
PARTITION = 3  # GPUs 1,3: a typical two-GPU tenant
WARMUP = 20
Op = Callable[[int], None]


def measure(activate: Op, deactivate: Op, pairs: int, budget_s: float) -> dict[str, float]:
    """Time ``pairs`` activate/deactivate pairs (fewer if ``budget_s`` runs out)."""
    for _ in range(WARMUP):
        activate(PARTITION)
        deactivate(PARTITION)
    up: list[float] = []
    down: list[float] = []
    started = time.perf_counter()
    for _ in range(pairs):
        t0 = time.perf_counter()
        activate(PARTITION)
        t1 = time.perf_counter()
        deactivate(PARTITION)
        t2 = time.perf_counter()
        up.append(t1 - t0)
        down.append(t2 - t1)
        if t2 - started > budget_s:
            break
    elapsed = time.perf_counter() - started
    return {
        "pairs": len(up),
        "round_trips_per_s": round(len(up) / elapsed, 1),
        "activate_p50_ms": round(1000 * statistics.median(up), 3),
        "activate_p99_ms": round(1000 * percentile(up, 99), 3),
        "activate_max_ms": round(1000 * max(up), 3),
        "deactivate_p50_ms": round(1000 * statistics.median(down), 3),
        "deactivate_p99_ms": round(1000 * percentile(down, 99), 3),
    }


def percentile(values: list[float], pct: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def controller(state_dir: Path, *, fm_state_file: bool) -> FabricController:
    model = get_model(BOARD)
    fabric = SimulatedFabric(
        model, state_file=state_dir / "simulated-fm.json" if fm_state_file else None
    )
    return FabricController(fabric, model, state_dir=state_dir, board=BOARD, backend="simulated")


def start_daemon(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``gpucaas fabric serve`` with the CLI's defaults, except the paths; waits until it
    answers on its socket."""
    sock = str(root / "fm.sock")
    command = [
        sys.executable,
        "-c",
        "from gpucaas.cli import main; main()",
        "fabric",
        "serve",
        "--backend",
        "simulated",
        "--board",
        BOARD,
        "--listen",
        sock,
        "--state-dir",
        str(root / "daemon-state"),
        "--http-listen",
        "127.0.0.1:0",
    ]
    log = open(root / "daemon.log", "wb")  # noqa: SIM115 - the child holds it
    with log:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise SystemExit(
                f"the fm-controller exited with {proc.returncode}:\n"
                + (root / "daemon.log").read_text()
            )
        try:
            with RemoteFabric(sock, timeout_s=2) as client:
                client.list_partitions()
            return proc, sock
        except FabricManagerDown:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise SystemExit("the fm-controller did not answer within 30 s") from None
            time.sleep(0.05)


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--pairs", type=int, default=1500, help="activate/deactivate pairs")
    parser.add_argument(
        "--budget-s", type=float, default=4.0, help="stop each measurement after this long"
    )
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fabric-") as tmp:
        root = Path(tmp)
        proc, sock = start_daemon(root)
        try:
            with RemoteFabric(sock) as client:
                results["grpc_daemon"] = measure(
                    client.activate, client.deactivate, args.pairs, args.budget_s
                )
        finally:
            stop_daemon(proc)
        for name, fm_state_file in (
            ("controller_direct", True),
            ("controller_fm_in_memory", False),
        ):
            c = controller(root / name, fm_state_file=fm_state_file)
            results[name] = measure(c.activate, c.deactivate, args.pairs, args.budget_s)
        for name, state in (("simulated_fm_file", True), ("simulated_fm_memory", False)):
            fm = SimulatedFabric(
                get_model(BOARD), state_file=root / f"{name}.json" if state else None
            )
            results[name] = measure(fm.activate, fm.deactivate, args.pairs, args.budget_s)

    grpc, direct = results["grpc_daemon"], results["controller_direct"]
    in_memory = results["controller_fm_in_memory"]
    derived = {
        "direct_over_grpc_throughput": round(
            direct["round_trips_per_s"] / grpc["round_trips_per_s"], 2
        ),
        "grpc_overhead_activate_p50_ms": round(
            grpc["activate_p50_ms"] - direct["activate_p50_ms"], 3
        ),
        "fm_state_file_activate_p50_ms": round(
            direct["activate_p50_ms"] - in_memory["activate_p50_ms"], 3
        ),
        "desired_json_activate_p50_ms": round(
            in_memory["activate_p50_ms"] - results["simulated_fm_memory"]["activate_p50_ms"], 3
        ),
        "activate_p99_under_5_ms": grpc["activate_p99_ms"] < 5.0,
    }
    out = {
        "board": BOARD,
        "partition": PARTITION,
        "transport": "unix socket, daemon in a subprocess",
        "results": results,
        "derived": derived,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"fm-controller, simulated {BOARD}, partition {PARTITION} (GPUs 1,3), unix socket")
    header = f"{'':26}{'pairs':>7}{'rt/s':>9}{'act p50':>10}{'act p99':>10}{'deact p50':>11}"
    print(header + "   (ms)")
    for name, r in results.items():
        print(
            f"{name:26}{r['pairs']:>7}{r['round_trips_per_s']:>9.0f}"
            f"{r['activate_p50_ms']:>10.3f}{r['activate_p99_ms']:>10.3f}"
            f"{r['deactivate_p50_ms']:>11.3f}"
        )
    print(
        f"direct controller is {derived['direct_over_grpc_throughput']}x the gRPC throughput; "
        f"gRPC adds {derived['grpc_overhead_activate_p50_ms']} ms to an activation (p50)"
    )
    print(
        f"per activation (p50): simulated FM state file {derived['fm_state_file_activate_p50_ms']}"
        f" ms, desired.json (intent + outcome) {derived['desired_json_activate_p50_ms']} ms"
    )
    verdict = "meets" if derived["activate_p99_under_5_ms"] else "misses"
    print(f"activation p99 {grpc['activate_p99_ms']} ms {verdict} the 5 ms target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Simulator benchmark: replay speed and placement quality on the shared Alibaba trace.

Prints, for fleets of 4, 5, 6 and 8 hgx-h100-8 boards, every policy's fragmentation loss
and its ratio to best-fit, plus the wall time of replaying the 8,152-pod default trace with
every policy (``POLICY_NAMES``). The baseline run in the same process is the ``fluid``
bound (quality) and the replay of the trace through the fluid pool alone (speed: what the
event loop costs without boards).

Run: GPUCAAS_DATA=../shared/data .venv/bin/python benchmarks/bench_sim.py [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from gpucaas.sim import DynamicResult, SimConfig, load_trace, parse_policies, simulate
from gpucaas.topology import get_model

FLEETS = (4, 5, 6, 8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    data = Path(
        os.environ.get("GPUCAAS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    path = data / "alibaba-gpu-v2023" / "openb_pod_list_default.csv"
    if not path.is_file():
        print(f"shared trace not found at {path}; set GPUCAAS_DATA", file=sys.stderr)
        return 2
    started = time.perf_counter()
    trace = load_trace(path)
    load_s = time.perf_counter() - started
    board = get_model("hgx-h100-8")
    out: dict[str, object] = {"trace": path.name, "pods": len(trace.pods), "load_s": load_s}
    fleets: dict[int, dict[str, Any]] = {}
    for nodes in FLEETS:
        t0 = time.perf_counter()
        results = simulate(SimConfig(board, nodes, parse_policies("all")), trace)
        all_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        simulate(SimConfig(board, nodes, ("fluid",)), trace)
        fluid_s = time.perf_counter() - t0
        rows = {r.policy: r for r in results if isinstance(r, DynamicResult)}
        best = rows["best-fit"]
        fleets[nodes] = {
            "capacity_gpus": nodes * board.gpu_count,
            "replay_all_policies_s": round(all_s, 3),
            "replay_fluid_only_s": round(fluid_s, 3),
            "policies": {
                name: {
                    "fragmentation_loss_pct": round(r.fragmentation_loss_pct, 3),
                    "fragmentation_loss_pct_queued": round(r.fragmentation_loss_pct_queued, 2),
                    "loss_vs_best_fit": (
                        round(r.fragmentation_loss_gpu_hours / best.fragmentation_loss_gpu_hours, 2)
                        if best.fragmentation_loss_gpu_hours
                        else None
                    ),
                    "allocation_pct": round(100 * r.allocation_ratio, 2),
                    "queued_days": round(r.queued_s / 86400, 1),
                    "invalid": r.invalid_placements,
                }
                for name, r in rows.items()
            },
            "best_fit_minus_fluid_pct": round(
                best.fragmentation_loss_pct - rows["fluid"].fragmentation_loss_pct, 3
            ),
        }
    out["fleets"] = fleets
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{path.name}: {len(trace.pods)} GPU pods, loaded in {load_s * 1000:.0f} ms")
    for nodes, f in fleets.items():
        print(
            f"\n{nodes} boards ({f['capacity_gpus']} GPUs): all {len(f['policies'])} policies "
            "replayed in "
            f"{f['replay_all_policies_s']:.2f} s (fluid alone {f['replay_fluid_only_s']:.2f} s,"
            f" ratio {f['replay_all_policies_s'] / max(f['replay_fluid_only_s'], 1e-9):.1f}x);"
            f" best-fit − fluid = {f['best_fit_minus_fluid_pct']:.3f} % of capacity-hours"
        )
        print(
            f"  {'policy':<12} {'loss %cap':>9} {'loss %queued':>12} {'x best-fit':>10} "
            f"{'alloc %':>8} {'queued d':>8} {'invalid':>7}"
        )
        for name, p in f["policies"].items():
            ratio = "-" if p["loss_vs_best_fit"] is None else f"{p['loss_vs_best_fit']:.2f}"
            print(
                f"  {name:<12} {p['fragmentation_loss_pct']:>9.3f} "
                f"{p['fragmentation_loss_pct_queued']:>12.2f} {ratio:>10} "
                f"{p['allocation_pct']:>8.2f} {p['queued_days']:>8.1f} {p['invalid']:>7}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Placement throughput: how many decisions per second one core makes, indexed and by full scan.

A *decision* here is one place attempt plus one release (two fleet operations): the fleet is
first filled to ``FILL`` of its GPUs with random requests, then each decision places one new
request (when it fits) and releases one live placement picked at random (nudged towards
``FILL``, see :func:`decide`), so occupancy stays roughly constant. Two request mixes: the
Alibaba default trace (almost all 1-GPU pods) and a multi-GPU-heavy mix that stresses
fragmentation.

The baseline runs in the same process on the same boards: ``Fleet(policy, index=False)``,
which scores every board on every decision. It makes the same decisions as the index (checked
here on 100 boards, where filling by full scan is cheap), so each fleet is filled once,
indexed, and then switched to full scan.
Full scan at 10,000 boards is slow, so every timed run stops at a time budget and rates are
per decision. Times are reported, never asserted: this script gates nothing.

Usage: ``.venv/bin/python benchmarks/bench_placement.py [--quick] [--json] [--seed N]``
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from rich.console import Console
from rich.table import Table

from gpucaas.placement import DEFAULT_POLICY, Fleet, Placement, Request
from gpucaas.topology import BoardModel, get_model

BOARD = "hgx-h100-8"
FLEET_SIZES = (100, 1_000, 10_000)
FILL = 0.875
"""Share of the fleet's GPUs allocated before timing starts (and roughly kept after)."""
MIXES: dict[str, tuple[tuple[int, float], ...]] = {
    # GPU pods of openb_pod_list_default.csv (Alibaba cluster-trace-gpu-v2023), by count:
    # 98.94 % one GPU, 0.23 % two, 0.21 % four, 0.62 % eight.
    "alibaba-default": ((1, 6989), (2, 16), (4, 15), (8, 44)),
    "multi-gpu-heavy": ((1, 60), (2, 15), (4, 15), (8, 10)),
}
MAIN_POLICY = DEFAULT_POLICY
"""Timed at every fleet size, indexed and by full scan."""
OTHER_POLICIES = ("best-fit", "first-fit", "spread", "stock", "stock-spread", "count-only")
"""Timed indexed at the largest fleet size only. ``best-fit`` was the default before
``adaptive-fit``: their ratio there is the cost of the adaptive rule. (``random`` draws from
the index too, but its draws differ from the scan's, so the agreement check leaves it out.)"""
TARGET_RATE = 50_000
"""Decisions per second wanted at 10,000 boards."""
TARGET_SCALING = 2.0
"""Largest acceptable per-decision cost at 10,000 boards over the cost at 100."""
CHECK_BOARDS, CHECK_DECISIONS = 100, 2_000
"""Size of the index-against-full-scan agreement check (both modes filled from empty)."""
MAX_MISSES = 1_000
"""Consecutive NO_FIT answers after which filling stops short of ``FILL``."""


@dataclass(frozen=True, slots=True)
class Settings:
    decisions: int
    """Most decisions in one timed repeat."""
    seconds: float
    """Most seconds in one timed repeat of the index (the time check is between chunks)."""
    scan_seconds: float
    """The same for the full-scan baseline."""
    warmup: int
    repeats: int = 3


DEFAULT = Settings(decisions=30_000, seconds=1.0, scan_seconds=0.8, warmup=3_000)
QUICK = Settings(decisions=6_000, seconds=0.25, scan_seconds=0.2, warmup=1_000)


class Workload:
    """A seeded stream of requests (sizes from a mix) and of uniform draws for releases.

    The two come from separate generators, so the sequence does not depend on how a run
    is cut into chunks (which depends on timing).
    """

    def __init__(self, mix: Sequence[tuple[int, float]], seed: int) -> None:
        self._rng = random.Random(seed)
        self._draw_rng = random.Random(self._rng.getrandbits(64))
        self._sizes = [gpus for gpus, _ in mix]
        self._cumulative = list(itertools.accumulate(weight for _, weight in mix))
        self._next_id = 0

    def requests(self, count: int) -> list[Request]:
        sizes = self._rng.choices(self._sizes, cum_weights=self._cumulative, k=count)
        first = self._next_id
        self._next_id += count
        return [Request(first + n, gpus) for n, gpus in enumerate(sizes)]

    def draws(self, count: int) -> list[float]:
        rand = self._draw_rng.random
        return [rand() for _ in range(count)]


@dataclass(slots=True)
class Timing:
    """Best of a few timed repeats of steady-state decisions on one fleet."""

    decisions: int = 0
    """Decisions timed over all repeats."""
    misses: int = 0
    """Place attempts that answered NO_FIT (the release still happened)."""
    rates: list[float] = field(default_factory=list)
    """Decisions per second of each repeat."""

    @property
    def best(self) -> float:
        return max(self.rates)

    @property
    def us_per_decision(self) -> float:
        return 1e6 / self.best


@dataclass(slots=True)
class Result:
    mix: str
    boards: int
    policy: str
    occupancy_start: float
    occupancy_end: float
    live_placements: int
    indexed: Timing
    scan: Timing | None = None

    @property
    def speedup(self) -> float | None:
        return None if self.scan is None else self.indexed.best / self.scan.best

    def as_json(self) -> dict[str, object]:
        def timing(t: Timing | None) -> dict[str, object] | None:
            if t is None:
                return None
            return {**asdict(t), "best_per_s": t.best, "us_per_decision": t.us_per_decision}

        return {
            "mix": self.mix,
            "boards": self.boards,
            "policy": self.policy,
            "occupancy_start": self.occupancy_start,
            "occupancy_end": self.occupancy_end,
            "live_placements": self.live_placements,
            "indexed": timing(self.indexed),
            "scan": timing(self.scan),
            "speedup": self.speedup,
        }


def decide(fleet: Fleet, requests: list[Request], draws: list[float], live: list[Placement]) -> int:
    """One decision per request: place it if it fits, then release a live placement.

    The release picks two live placements at random and, to hold occupancy near ``FILL``,
    frees the larger one when above it and the smaller one when below (power of two
    choices); a 100-board fleet otherwise drifts by tens of percent over a run. Takes two
    draws per request and returns how many place attempts missed. This is the timed loop:
    keep it lean.
    """
    place, release, pop = fleet.place, fleet.release, live.pop
    target = FILL * fleet.capacity
    allocated = fleet.allocated_gpus
    misses = 0
    pairs = iter(draws)
    for request, first, second in zip(requests, pairs, pairs, strict=True):
        result = place(request)
        if type(result) is Placement:
            live.append(result)
            allocated += result.gpus
        else:
            misses += 1
        n = len(live)
        i, j = int(first * n), int(second * n)
        if (allocated > target) == (live[i].gpus < live[j].gpus):
            i = j
        victim, last = live[i], pop()
        if i < n - 1:
            live[i] = last
        release(victim)
        allocated -= victim.gpus
    return misses


def build(policy: str, model: BoardModel, boards: int) -> Fleet:
    fleet = Fleet(policy)
    for n in range(boards):
        fleet.add_node(f"node-{n:05d}", model)
    return fleet


def fill(fleet: Fleet, work: Workload) -> list[Placement]:
    """Place random requests until ``FILL`` of the GPUs are allocated (or nothing fits)."""
    live: list[Placement] = []
    misses = 0
    target = FILL * fleet.capacity
    while fleet.allocated_gpus < target and misses < MAX_MISSES:
        for request in work.requests(256):
            result = fleet.place(request)
            if isinstance(result, Placement):
                live.append(result)
                misses = 0
                if fleet.allocated_gpus >= target:
                    break
            else:
                misses += 1
    return live


def run_for(
    fleet: Fleet,
    work: Workload,
    live: list[Placement],
    timing: Timing | None,
    *,
    decisions: int,
    seconds: float,
) -> None:
    """Run up to ``decisions`` decisions or about ``seconds``, in growing chunks; with
    ``timing``, record the rate (only the loop is timed, never the request generation)."""
    done = misses = 0
    elapsed = 0.0
    chunk = 1
    gc.collect()
    gc.disable()
    try:
        while done < decisions and elapsed < seconds:
            count = min(chunk, decisions - done)
            requests, draws = work.requests(count), work.draws(2 * count)
            start = time.perf_counter()
            misses += decide(fleet, requests, draws, live)
            took = time.perf_counter() - start
            elapsed += took
            done += count
            if took < 0.02:
                chunk *= 2
    finally:
        gc.enable()
    if timing is not None:
        timing.decisions += done
        timing.misses += misses
        timing.rates.append(done / elapsed)


def measure(
    fleet: Fleet, work: Workload, live: list[Placement], settings: Settings, seconds: float
) -> Timing:
    timing = Timing()
    for _ in range(settings.repeats):
        run_for(fleet, work, live, timing, decisions=settings.decisions, seconds=seconds)
    return timing


def use_full_scan(fleet: Fleet) -> None:
    """Turn a filled indexed fleet into the ``Fleet(policy, index=False)`` baseline.

    Filling 10,000 boards by full scan would take minutes of the budget; the two modes make
    the same decisions, so the boards are filled indexed and the decisions then scan. The
    constructor flag is the only switch the fleet has, hence the private attribute.
    """
    fleet._index = False


def bench_one(
    policy: str,
    mix: str,
    boards: int,
    model: BoardModel,
    settings: Settings,
    seed: int,
    *,
    scan: bool,
) -> Result:
    work = Workload(MIXES[mix], seed)
    fleet = build(policy, model, boards)
    live = fill(fleet, work)
    run_for(fleet, work, live, None, decisions=settings.warmup, seconds=5.0)
    start = fleet.allocated_gpus / fleet.capacity
    indexed = measure(fleet, work, live, settings, settings.seconds)
    baseline = None
    if scan:
        use_full_scan(fleet)
        run_for(fleet, work, live, None, decisions=3, seconds=1.0)
        baseline = measure(fleet, work, live, settings, settings.scan_seconds)
    return Result(
        mix=mix,
        boards=boards,
        policy=policy,
        occupancy_start=start,
        occupancy_end=fleet.allocated_gpus / fleet.capacity,
        live_placements=len(live),
        indexed=indexed,
        scan=baseline,
    )


Summary = dict[str, dict[str, float | bool]]
"""Per mix: the scaling ratio and the rate at the largest fleet, and whether each meets its
target."""


def same_decisions(policy: str, mix: str, model: BoardModel, seed: int) -> bool:
    """Whether ``Fleet(policy)`` and ``Fleet(policy, index=False)``, fed the same workload,
    end with the same placements after ``CHECK_DECISIONS`` decisions on ``CHECK_BOARDS``."""
    states: list[list[tuple[str, str | None, int]]] = []
    for index in (True, False):
        fleet = Fleet(policy, index=index)
        for n in range(CHECK_BOARDS):
            fleet.add_node(f"node-{n:05d}", model)
        work = Workload(MIXES[mix], seed)
        live = fill(fleet, work)
        for _ in range(CHECK_DECISIONS // 100):
            decide(fleet, work.requests(100), work.draws(200), live)
        states.append(sorted((str(p.request_id), p.node, p.mask) for p in fleet.placements()))
    return states[0] == states[1]


def summarize(results: list[Result], agree: dict[str, bool]) -> Summary:
    largest, smallest = max(FLEET_SIZES), min(FLEET_SIZES)
    main = {(r.mix, r.boards): r for r in results if r.policy == MAIN_POLICY}
    best_fit = {r.mix: r for r in results if r.policy == "best-fit" and r.boards == largest}
    summary: Summary = {}
    for mix in MIXES:
        big, small = main[mix, largest], main[mix, smallest]
        scaling = big.indexed.us_per_decision / small.indexed.us_per_decision
        summary[mix] = {
            "cost_ratio_largest_over_smallest": scaling,
            "scaling_target_met": scaling <= TARGET_SCALING,
            "rate_at_largest": big.indexed.best,
            "rate_target_met": big.indexed.best >= TARGET_RATE,
            "full_scan_agrees": agree[mix],
            "cost_ratio_to_best_fit_at_largest": big.indexed.us_per_decision
            / best_fit[mix].indexed.us_per_decision,
        }
    return summary


def render(console: Console, results: list[Result], summary: Summary) -> None:
    largest, smallest = max(FLEET_SIZES), min(FLEET_SIZES)
    table = Table(
        title=f"Placement throughput, {MAIN_POLICY}, {BOARD}, one core (best of 3)",
        caption="1 decision = 1 place attempt + 1 release (2 fleet operations); "
        f"fleet filled to {FILL:.1%} of GPUs first",
    )
    for name in ("mix", "boards", "occupancy", "misses"):
        table.add_column(name, justify="left" if name == "mix" else "right")
    for name in ("indexed /s", "µs", "full scan /s", "µs ", "speedup"):
        table.add_column(name, justify="right")
    for r in results:
        if r.policy != MAIN_POLICY:
            continue
        scan = r.scan
        table.add_row(
            r.mix,
            f"{r.boards:,}",
            f"{r.occupancy_start:.1%}→{r.occupancy_end:.1%}",
            f"{r.indexed.misses / r.indexed.decisions:.1%}",
            f"{r.indexed.best:,.0f}",
            f"{r.indexed.us_per_decision:.1f}",
            "—" if scan is None else f"{scan.best:,.0f}",
            "—" if scan is None else f"{scan.us_per_decision:,.0f}",
            "—" if r.speedup is None else f"{r.speedup:,.1f}×",
        )
    console.print(table)

    policies = Table(title=f"Indexed policies at {largest:,} boards (best of 3)")
    for name in ("policy", "mix", "decisions /s", "µs / decision", "misses"):
        policies.add_column(name, justify="left" if name in ("policy", "mix") else "right")
    for r in results:
        if r.boards == largest:
            policies.add_row(
                r.policy,
                r.mix,
                f"{r.indexed.best:,.0f}",
                f"{r.indexed.us_per_decision:.1f}",
                f"{r.indexed.misses / r.indexed.decisions:.1%}",
            )
    console.print(policies)

    for mix, line in summary.items():
        scaling, rate = line["cost_ratio_largest_over_smallest"], line["rate_at_largest"]
        console.print(
            f"[bold]{mix}[/]: cost per decision ×{scaling:.2f} from {smallest:,} to {largest:,} "
            f"boards (≤ {TARGET_SCALING:g}: {_verdict(line['scaling_target_met'])}); "
            f"{rate:,.0f}/s at {largest:,} (≥ {TARGET_RATE:,}: {_verdict(line['rate_target_met'])}"
            f"); ×{line['cost_ratio_to_best_fit_at_largest']:.2f} the cost of best-fit there"
        )
    agree = all(line["full_scan_agrees"] for line in summary.values())
    console.print(
        f"Index and full scan {'agree' if agree else '[red]DISAGREE[/]'} over "
        f"{CHECK_DECISIONS:,} decisions on {CHECK_BOARDS} boards for each policy and mix."
    )


def _verdict(met: float | bool) -> str:
    return "met" if met else "[red]NOT met[/]"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter runs (about 15 s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object, no table")
    parser.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else DEFAULT
    model = get_model(BOARD)
    progress = Console(stderr=True)
    started = time.perf_counter()

    results: list[Result] = []
    plan = [(MAIN_POLICY, mix, boards, True) for mix in MIXES for boards in FLEET_SIZES]
    plan += [(p, mix, max(FLEET_SIZES), False) for mix in MIXES for p in OTHER_POLICIES]
    for policy, mix, boards, scan in plan:
        with progress.status(f"{policy} · {mix} · {boards:,} boards"):
            results.append(bench_one(policy, mix, boards, model, settings, args.seed, scan=scan))
    agree = {}
    for mix in MIXES:
        with progress.status(f"index against full scan · {mix}"):
            agree[mix] = all(
                same_decisions(policy, mix, model, args.seed)
                for policy in (MAIN_POLICY, *OTHER_POLICIES)
            )
    summary = summarize(results, agree)
    wall = time.perf_counter() - started

    if args.json:
        doc = {
            "board": BOARD,
            "decision": "one place attempt + one release (two fleet operations)",
            "fill": FILL,
            "mixes": {name: [list(pair) for pair in mix] for name, mix in MIXES.items()},
            "settings": asdict(settings),
            "seed": args.seed,
            "python": sys.version.split()[0],
            "results": [r.as_json() for r in results],
            "summary": summary,
            "wall_s": wall,
        }
        print(json.dumps(doc, indent=2))
    else:
        # Piped output gets rich's 80 columns, too narrow for the first table.
        console = Console() if sys.stdout.isatty() else Console(width=120)
        render(console, results, summary)
        console.print(f"[dim]{wall:.1f} s wall, Python {sys.version.split()[0]}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())

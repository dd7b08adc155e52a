"""Seeded synthetic traces, for runs that need a load the real traces do not have.

The Alibaba traces are almost all one-GPU pods (99 % of the default trace); studying how
placement handles 2-, 4- and 8-GPU partitions needs a tunable mix. :class:`SyntheticSpec` is
what a user types after ``--synthetic`` (``pods=5000,rate=30,mix=1:60+2:15+4:15+8:10``);
:func:`generate` turns it into a :class:`~gpucaas.sim._trace.Trace` with Poisson arrivals, and
:func:`write_trace_csv` writes any timed trace in the 11-column pod-list format, so a
synthetic run can be saved, shared and replayed through :func:`load_trace` unchanged.

Generation uses only ``random.Random(spec.seed)``, never the global generator, so one spec
always gives the same trace and byte-identical CSV. Times are whole seconds, as in the real
traces. The generator refuses specs it cannot honour rather than clamping them.
"""

from __future__ import annotations

import csv
import itertools
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import SyntheticSpecError, TraceError
from ._trace import TIME_COLUMNS, Trace, TracePod

__all__ = ["SyntheticSpec", "generate", "write_trace_csv"]

DURATIONS = ("exp", "lognormal", "fixed")
"""Run-time distributions: exponential, log-normal (shape ``sigma``), or always ``mean``."""

_KEYS = ("pods", "rate", "mix", "duration", "mean", "sigma", "seed")
"""Spec keys in canonical order; ``rate`` is ``rate_per_hour``, ``mean`` is
``mean_duration_s``."""

_MAX_TIME_S = 2**53
"""Whole seconds above this are not exact as floats, so a CSV round trip would not be."""

# Written CSVs give each pod this much CPU and memory per GPU: plausible for an HGX node,
# and ignored by the simulator, which places whole GPUs only.
_CPU_MILLI_PER_GPU = 8000
_MEMORY_MIB_PER_GPU = 32768

_HEADER = (
    "name",
    "cpu_milli",
    "memory_mib",
    "num_gpu",
    "gpu_milli",
    "gpu_spec",
    "qos",
    "pod_phase",
    *TIME_COLUMNS,
)


def _number_text(value: float) -> str:
    """Shortest text that parses back to exactly ``value`` (``60`` rather than ``60.0``)."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    """How to generate a synthetic trace; ``parse(str(spec)) == spec``.

    Raises:
        SyntheticSpecError: on construction, when a value is out of range (see ``parse``).
    """

    pods: int = 2000
    rate_per_hour: float = 20.0
    """Poisson arrival rate."""
    mix: tuple[tuple[int, float], ...] = ((1, 0.6), (2, 0.15), (4, 0.15), (8, 0.1))
    """(gpus, weight) pairs; weights are relative and need not sum to 1."""
    duration: str = "exp"
    """One of :data:`DURATIONS`."""
    mean_duration_s: float = 3600.0
    sigma: float = 1.0
    """Shape of the log-normal run time (its log's standard deviation)."""
    seed: int = 0

    def __post_init__(self) -> None:
        # Accept ints where floats are meant (rate_per_hour=30), but store floats, so that
        # equal specs have equal reprs and parse(str(spec)) == spec holds field by field.
        object.__setattr__(self, "rate_per_hour", float(self.rate_per_hour))
        object.__setattr__(self, "mean_duration_s", float(self.mean_duration_s))
        object.__setattr__(self, "sigma", float(self.sigma))
        object.__setattr__(self, "mix", tuple((gpus, float(weight)) for gpus, weight in self.mix))
        reason = self._problem()
        if reason is not None:
            raise SyntheticSpecError(str(self), reason)

    def _problem(self) -> str | None:
        if self.pods < 1:
            return f"pods={self.pods} must be at least 1"
        if not (math.isfinite(self.rate_per_hour) and self.rate_per_hour > 0):
            return f"rate={self.rate_per_hour!r} must be a positive number of arrivals per hour"
        if not self.mix:
            return "mix is empty; give at least one gpus:weight pair, e.g. mix=1:60+8:40"
        seen: set[int] = set()
        for gpus, weight in self.mix:
            if gpus < 1:
                return f"mix size {gpus} must be at least 1 GPU"
            if gpus in seen:
                return f"mix size {gpus} appears twice; give each size once"
            seen.add(gpus)
            if not (math.isfinite(weight) and weight > 0):
                return f"mix weight {weight!r} of size {gpus} must be a positive number"
        if self.duration not in DURATIONS:
            return f"duration={self.duration!r} must be one of {', '.join(DURATIONS)}"
        if not (math.isfinite(self.mean_duration_s) and self.mean_duration_s > 0):
            return f"mean={self.mean_duration_s!r} must be a positive number of seconds"
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            return f"sigma={self.sigma!r} must be a number >= 0"
        return None

    @classmethod
    def parse(cls, text: str) -> SyntheticSpec:
        """Parse ``key=value`` pairs joined by commas; an empty string means all defaults.

        Keys: ``pods`` (int), ``rate`` (arrivals per hour), ``mix`` (``gpus:weight`` pairs
        joined by ``+``; weights are relative), ``duration`` (``exp``, ``lognormal`` or
        ``fixed``), ``mean`` (seconds), ``sigma`` (log-normal shape), ``seed`` (int). Keys
        left out keep their defaults.

        Raises:
            SyntheticSpecError: an item is not ``key=value``, a key is unknown or repeated, a
                number does not parse, or a value is out of range (pods, rate or mean not
                positive, sigma negative, an empty mix, a size below 1 GPU, a weight not
                positive, a size given twice, an unknown duration).
        """
        values: dict[str, Any] = {}
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not sep:
                raise SyntheticSpecError(text, f"{item!r} is not key=value")
            if key not in _KEYS:
                raise SyntheticSpecError(
                    text, f"unknown key {key!r}; the keys are {', '.join(_KEYS)}"
                )
            if key in values:
                raise SyntheticSpecError(text, f"key {key!r} is given twice")
            if key in ("pods", "seed"):
                values[key] = _parse_int(text, key, value)
            elif key == "mix":
                values[key] = _parse_mix(text, value)
            elif key == "duration":
                values[key] = value
            else:
                values[key] = _parse_float(text, key, value)
        names = {"rate": "rate_per_hour", "mean": "mean_duration_s"}
        try:
            return cls(**{names.get(key, key): value for key, value in values.items()})
        except SyntheticSpecError as exc:
            raise SyntheticSpecError(text, exc.reason) from None

    def __str__(self) -> str:
        mix = "+".join(f"{gpus}:{_number_text(weight)}" for gpus, weight in self.mix)
        return (
            f"pods={self.pods},rate={_number_text(self.rate_per_hour)},mix={mix},"
            f"duration={self.duration},mean={_number_text(self.mean_duration_s)},"
            f"sigma={_number_text(self.sigma)},seed={self.seed}"
        )


def _parse_int(text: str, key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SyntheticSpecError(text, f"{key}={value!r} is not an integer") from None


def _parse_float(text: str, key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise SyntheticSpecError(text, f"{key}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise SyntheticSpecError(text, f"{key}={value!r} is not a finite number")
    return number


def _parse_mix(text: str, value: str) -> tuple[tuple[int, float], ...]:
    if not value:
        raise SyntheticSpecError(
            text, "mix is empty; give gpus:weight pairs joined by '+', e.g. mix=1:60+8:40"
        )
    pairs: list[tuple[int, float]] = []
    for part in value.split("+"):
        gpus, sep, weight = part.partition(":")
        if not sep:
            raise SyntheticSpecError(
                text, f"mix entry {part!r} is not gpus:weight (e.g. 8:10 for 8-GPU pods)"
            )
        try:
            pair = (int(gpus), float(weight))
        except ValueError:
            raise SyntheticSpecError(
                text, f"mix entry {part!r} is not gpus:weight with numbers (e.g. 8:10)"
            ) from None
        pairs.append(pair)
    return tuple(pairs)


def generate(spec: SyntheticSpec) -> Trace:
    """Generate ``spec.pods`` pods with Poisson arrivals, sizes from the mix, and run times.

    Arrival times are the running sum of exponential gaps (rate ``spec.rate_per_hour``),
    rounded down to whole seconds; run times are whole seconds, at least 1. ``lognormal`` is
    scaled so its mean is ``spec.mean_duration_s``. The trace's ``source`` is ``str(spec)``.

    Raises:
        SyntheticSpecError: the spec would produce times beyond 2**53 seconds, which floats
            cannot hold exactly (lower ``mean`` or ``sigma``, or raise ``rate``).
    """
    rng = random.Random(spec.seed)
    sizes = [gpus for gpus, _ in spec.mix]
    cumulative = list(itertools.accumulate(weight for _, weight in spec.mix))
    per_second = spec.rate_per_hour / 3600.0
    mean = spec.mean_duration_s
    mu = math.log(mean) - spec.sigma**2 / 2
    pods: list[TracePod] = []
    clock = 0.0
    end = 0
    try:
        for number in range(spec.pods):
            clock += rng.expovariate(per_second)
            arrival = math.floor(clock)
            gpus = rng.choices(sizes, cum_weights=cumulative)[0]
            if spec.duration == "exp":
                drawn = rng.expovariate(1.0 / mean)
            elif spec.duration == "lognormal":
                drawn = rng.lognormvariate(mu, spec.sigma)
            else:
                drawn = mean
            duration = max(1, round(drawn))
            end = max(end, arrival + duration)
            if end > _MAX_TIME_S:
                raise OverflowError
            pods.append(TracePod(f"syn-pod-{number:06d}", gpus, float(arrival), float(duration)))
    except OverflowError:
        raise SyntheticSpecError(
            str(spec),
            "times grow beyond 2**53 seconds; lower mean or sigma, or raise rate",
        ) from None
    return Trace(
        source=str(spec),
        pods=tuple(pods),
        has_times=True,
        end_s=float(end),
        dropped_cpu_only=0,
        skipped_bad=0,
        fractional=0,
    )


def write_trace_csv(trace: Trace, path: Path | str) -> None:
    """Write a timed trace as an 11-column pod list that :func:`load_trace` reads back.

    Each pod becomes one row in ``trace.pods`` order: ``num_gpu`` = its GPUs, ``gpu_milli``
    1000, fixed CPU and memory per GPU, empty ``gpu_spec``, qos ``LS``, phase ``Succeeded``,
    ``scheduled_time`` = ``creation_time`` = arrival, ``deletion_time`` = arrival + run time.
    Loading the file gives the same pods (the counters and ``end_s`` describe the new file).
    Lines end in ``\\n``; the same trace always gives the same bytes.

    Raises:
        TraceError: the trace has no times (e.g. a 5-column pod list), a time is not a whole
            number of seconds >= 0, or the file cannot be written.
    """
    if not trace.has_times:
        raise TraceError(
            trace.source,
            None,
            None,
            None,
            "has no arrival or run times, so it cannot be written as an 11-column pod list",
            "write a trace loaded from an 11-column file or made by generate()",
        )
    rows: list[tuple[object, ...]] = []
    for pod in trace.pods:
        arrival, duration = pod.arrival_s, pod.duration_s
        for field, time in (("arrival_s", arrival), ("duration_s", duration)):
            if time is None or not (0 <= time <= _MAX_TIME_S and float(time).is_integer()):
                raise TraceError(
                    trace.source,
                    None,
                    None,
                    None,
                    f"pod {pod.name!r} has {field}={time!r}, not a whole number of seconds "
                    f"in 0..2**53",
                    "round its times to whole seconds before writing it",
                )
        assert arrival is not None and duration is not None
        created = int(arrival)
        rows.append(
            (
                pod.name,
                _CPU_MILLI_PER_GPU * pod.gpus,
                _MEMORY_MIB_PER_GPU * pod.gpus,
                pod.gpus,
                1000,
                "",
                "LS",
                "Succeeded",
                created,
                created + int(duration),
                created,
            )
        )
    try:
        with Path(path).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(_HEADER)
            writer.writerows(rows)
    except OSError as exc:
        raise TraceError(
            str(path),
            None,
            None,
            None,
            f"could not be written ({exc.strerror or exc})",
            "check that its folder exists and is writable",
        ) from exc

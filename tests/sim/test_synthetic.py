"""Seeded synthetic traces: spec text, determinism, and the CSV round trip."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpucaas.errors import InvalidRequest
from gpucaas.sim._errors import SyntheticSpecError, TraceError
from gpucaas.sim._synthetic import SyntheticSpec, generate, write_trace_csv
from gpucaas.sim._trace import Trace, TracePod, load_trace

positive = st.floats(min_value=1e-9, max_value=1e12, allow_nan=False, allow_infinity=False)

specs = st.builds(
    SyntheticSpec,
    pods=st.integers(min_value=1, max_value=10**9),
    rate_per_hour=positive,
    mix=st.dictionaries(st.integers(min_value=1, max_value=64), positive, min_size=1).map(
        lambda weights: tuple(weights.items())
    ),
    duration=st.sampled_from(["exp", "lognormal", "fixed"]),
    mean_duration_s=positive,
    sigma=st.floats(min_value=0, max_value=100, allow_nan=False),
    seed=st.integers(min_value=-(2**64), max_value=2**64),
)


@given(specs)
def test_spec_text_round_trips(spec: SyntheticSpec) -> None:
    assert SyntheticSpec.parse(str(spec)) == spec


def test_parse_example_and_defaults() -> None:
    spec = SyntheticSpec.parse(
        "pods=5000,rate=30,mix=1:60+2:15+4:15+8:10,duration=lognormal,mean=3600,sigma=1.2,seed=7"
    )
    assert spec == SyntheticSpec(
        pods=5000,
        rate_per_hour=30.0,
        mix=((1, 60.0), (2, 15.0), (4, 15.0), (8, 10.0)),
        duration="lognormal",
        mean_duration_s=3600.0,
        sigma=1.2,
        seed=7,
    )
    assert str(spec) == (
        "pods=5000,rate=30,mix=1:60+2:15+4:15+8:10,duration=lognormal,mean=3600,sigma=1.2,seed=7"
    )
    assert SyntheticSpec.parse("") == SyntheticSpec()
    assert SyntheticSpec.parse(" pods = 10 , seed=3, ") == SyntheticSpec(pods=10, seed=3)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("pods=10,colour=red", "unknown key 'colour'"),
        ("pods", "'pods' is not key=value"),
        ("pods=1,pods=2", "key 'pods' is given twice"),
        ("pods=ten", "pods='ten' is not an integer"),
        ("pods=0", "pods=0 must be at least 1"),
        ("rate=fast", "rate='fast' is not a number"),
        ("rate=0", "must be a positive number of arrivals per hour"),
        ("rate=nan", "is not a finite number"),
        ("mean=-5", "must be a positive number of seconds"),
        ("sigma=-0.5", "sigma=-0.5 must be a number >= 0"),
        ("mix=", "mix is empty"),
        ("mix=8", "mix entry '8' is not gpus:weight"),
        ("mix=a:1", "mix entry 'a:1' is not gpus:weight with numbers"),
        ("mix=0:1", "mix size 0 must be at least 1 GPU"),
        ("mix=1:0", "mix weight 0.0 of size 1 must be a positive number"),
        ("mix=1:-2+8:1", "mix weight -2.0 of size 1"),
        ("mix=2:1+2:3", "mix size 2 appears twice"),
        ("duration=gamma", "duration='gamma' must be one of exp, lognormal, fixed"),
    ],
    ids=lambda value: str(value),
)
def test_bad_spec_names_the_value_and_shows_the_form(text: str, words: str) -> None:
    with pytest.raises(SyntheticSpecError) as caught:
        SyntheticSpec.parse(text)
    error = caught.value
    assert isinstance(error, InvalidRequest)
    assert error.spec == text
    assert words in error.reason
    assert f"bad synthetic trace spec {text!r}: " in str(error)
    assert "pods=2000,rate=20,mix=1:60+2:15+4:15+8:10" in str(error)


def test_direct_construction_is_validated() -> None:
    with pytest.raises(SyntheticSpecError, match="pods=-1 must be at least 1"):
        SyntheticSpec(pods=-1)


def test_generated_trace_shape() -> None:
    spec = SyntheticSpec(pods=500, seed=3)
    trace = generate(spec)
    assert trace.source == str(spec)
    assert trace.has_times
    assert (trace.dropped_cpu_only, trace.skipped_bad, trace.fractional) == (0, 0, 0)
    assert [pod.name for pod in trace.pods][:2] == ["syn-pod-000000", "syn-pod-000001"]
    arrivals = [pod.arrival_s for pod in trace.pods]
    assert arrivals == sorted(arrivals)  # type: ignore[type-var]
    for pod in trace.pods:
        assert pod.arrival_s is not None and pod.duration_s is not None
        assert pod.arrival_s.is_integer() and pod.duration_s.is_integer()
        assert pod.duration_s >= 1
        assert pod.gpus in (1, 2, 4, 8)
    assert trace.end_s == max(pod.arrival_s + pod.duration_s for pod in trace.pods)  # type: ignore[operator]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    random.seed(1)  # the global generator must not matter
    write_trace_csv(generate(SyntheticSpec(pods=300, seed=5)), tmp_path / "a.csv")
    random.seed(2)
    write_trace_csv(generate(SyntheticSpec(pods=300, seed=5)), tmp_path / "b.csv")
    write_trace_csv(generate(SyntheticSpec(pods=300, seed=6)), tmp_path / "c.csv")
    first = (tmp_path / "a.csv").read_bytes()
    assert first == (tmp_path / "b.csv").read_bytes()
    assert first != (tmp_path / "c.csv").read_bytes()
    assert b"\r" not in first


@pytest.mark.parametrize("duration", ["exp", "lognormal", "fixed"])
def test_write_then_load_gives_the_same_pods(tmp_path: Path, duration: str) -> None:
    trace = generate(SyntheticSpec(pods=400, duration=duration, sigma=1.5, seed=11))
    path = tmp_path / "syn.csv"
    write_trace_csv(trace, path)
    loaded = load_trace(path)
    assert loaded.pods == trace.pods
    assert loaded.end_s == trace.end_s
    assert loaded.has_times
    assert (loaded.dropped_cpu_only, loaded.skipped_bad, loaded.fractional) == (0, 0, 0)


def test_written_columns(tmp_path: Path) -> None:
    trace = Trace("t", (TracePod("a,b", 4, 7.0, 3.0),), True, 10.0, 0, 0, 0)
    path = tmp_path / "one.csv"
    write_trace_csv(trace, path)
    assert path.read_text(encoding="utf-8").splitlines() == [
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
        "creation_time,deletion_time,scheduled_time",
        '"a,b",32000,131072,4,1000,,LS,Succeeded,7,10,7',
    ]
    assert load_trace(path).pods == trace.pods


def test_loaded_real_style_trace_round_trips(tmp_path: Path) -> None:
    source = tmp_path / "real.csv"
    source.write_text(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
        "creation_time,deletion_time,scheduled_time\n"
        "p,1,1,1,300,,BE,Pending,5,9,\n"
        "q,1,1,8,1000,,LS,Running,6,,8\n"
        "r,1,1,0,0,,LS,Running,7,20,7\n",
        encoding="utf-8",
    )
    trace = load_trace(source)
    write_trace_csv(trace, tmp_path / "copy.csv")
    assert load_trace(tmp_path / "copy.csv").pods == trace.pods


def test_write_refuses_untimed_and_fractional_times(tmp_path: Path) -> None:
    untimed = Trace("static.csv", (TracePod("p", 1, None, None),), False, None, 0, 0, 0)
    with pytest.raises(TraceError, match="has no arrival or run times"):
        write_trace_csv(untimed, tmp_path / "x.csv")
    halves = Trace("t", (TracePod("p", 1, 0.5, 1.0),), True, 1.5, 0, 0, 0)
    with pytest.raises(TraceError, match="arrival_s=0.5, not a whole number"):
        write_trace_csv(halves, tmp_path / "x.csv")


def test_write_into_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="could not be written"):
        write_trace_csv(generate(SyntheticSpec(pods=1)), tmp_path / "no" / "such" / "x.csv")


def test_times_beyond_float_precision_are_refused() -> None:
    with pytest.raises(SyntheticSpecError, match="beyond 2\\*\\*53 seconds"):
        generate(SyntheticSpec(pods=3, duration="fixed", mean_duration_s=1e300))


def test_mix_proportions_are_roughly_honoured() -> None:
    spec = SyntheticSpec.parse("pods=20000,mix=1:50+2:20+4:20+8:10,seed=1")
    counts = Counter(pod.gpus for pod in generate(spec).pods)
    for gpus, share in ((1, 0.5), (2, 0.2), (4, 0.2), (8, 0.1)):
        assert abs(counts[gpus] / 20000 - share) < 0.02, counts


@pytest.mark.parametrize("duration", ["exp", "lognormal"])
def test_mean_duration_and_arrival_rate_are_roughly_honoured(duration: str) -> None:
    spec = SyntheticSpec(pods=20000, rate_per_hour=60, duration=duration, sigma=0.8, seed=2)
    pods = generate(spec).pods
    mean = sum(pod.duration_s or 0 for pod in pods) / len(pods)
    assert math.isclose(mean, 3600, rel_tol=0.05)
    span_h = (pods[-1].arrival_s or 0) / 3600
    assert math.isclose(len(pods) / span_h, 60, rel_tol=0.05)


def test_fixed_duration_is_the_mean_rounded() -> None:
    pods = generate(SyntheticSpec(pods=50, duration="fixed", mean_duration_s=0.2)).pods
    assert {pod.duration_s for pod in pods} == {1.0}

"""Loading Alibaba v2023 pod lists into whole-GPU trace pods."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import pytest

from gpucaas.errors import InvalidRequest
from gpucaas.sim._errors import TraceError
from gpucaas.sim._trace import Trace, TracePod, load_trace

HEADER = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time"
)
GOOD = "p0,8000,16384,1,1000,,LS,Running,0,100,10"


def write(tmp_path: Path, *lines: str, name: str = "pods.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_whole_gpu_mapping_fractional_and_cpu_only(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER,
        "whole,8000,16384,1,1000,,LS,Running,0,100,0",
        "half,4000,8192,1,500,V100M16|V100M32,BE,Running,1,101,1",
        "cpu,2000,4096,0,0,,BE,Running,2,102,2",
        "eight,96000,786432,8,1000,G2,LS,Running,3,103,3",
        "tiny,1000,1024,1,0,,BE,Running,4,104,4",
    )
    trace = load_trace(path)
    assert [(pod.name, pod.gpus) for pod in trace.pods] == [
        ("whole", 1),
        ("half", 1),
        ("eight", 8),
        ("tiny", 1),
    ]
    assert trace.dropped_cpu_only == 1
    assert trace.fractional == 2
    assert trace.skipped_bad == 0
    assert trace.has_times
    assert trace.source == "pods.csv"


def test_multi_gpu_pod_with_partial_share_is_not_counted_fractional(tmp_path: Path) -> None:
    trace = load_trace(write(tmp_path, HEADER, "p,1,1,2,500,,LS,Running,0,10,0"))
    assert trace.pods[0].gpus == 2
    assert trace.fractional == 0


def test_durations_scheduled_pending_and_no_deletion(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER,
        "scheduled,1,1,1,1000,,LS,Succeeded,10,110,30",
        "pending,1,1,1,1000,,LS,Pending,20,50,",
        "running,1,1,1,1000,,LS,Running,40,,60",
        "pending-forever,1,1,1,1000,,LS,Pending,50,,",
        "cpu-late,1,1,0,0,,LS,Succeeded,70,500,80",
    )
    trace = load_trace(path)
    assert trace.end_s == 500.0
    assert trace.pods == (
        TracePod("scheduled", 1, 10.0, 80.0),
        TracePod("pending", 1, 20.0, 30.0),
        TracePod("running", 1, 40.0, 440.0),
        TracePod("pending-forever", 1, 50.0, 450.0),
    )


def test_pods_sorted_by_arrival_then_row_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER,
        "c,1,1,1,1000,,LS,Running,30,40,30",
        "a1,1,1,1,1000,,LS,Running,10,40,10",
        "b,1,1,1,1000,,LS,Running,20,40,20",
        "a2,1,1,1,1000,,LS,Running,10,40,10",
    )
    assert [pod.name for pod in load_trace(path).pods] == ["a1", "a2", "b", "c"]


def test_five_column_file_has_no_times_and_keeps_row_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli",
        "z,1,1,4,1000",
        "y,1,1,0,0",
        "x,1,1,1,250",
    )
    trace = load_trace(path)
    assert trace == Trace(
        source="pods.csv",
        pods=(TracePod("z", 4, None, None), TracePod("x", 1, None, None)),
        has_times=False,
        end_s=None,
        dropped_cpu_only=1,
        skipped_bad=0,
        fractional=1,
    )


def test_columns_found_by_name_extra_columns_blank_lines_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "reordered.csv"
    path.write_text(
        "\ufeffnum_gpu,extra,name,gpu_milli,memory_mib,cpu_milli\n\n2,whatever,p,1000,1,1\n",
        encoding="utf-8",
    )
    assert load_trace(path).pods == (TracePod("p", 2, None, None),)


def test_empty_trace_is_fine(tmp_path: Path) -> None:
    trace = load_trace(write(tmp_path, HEADER, "cpu,1,1,0,0,,LS,Running,0,5,0"))
    assert trace.pods == ()
    assert trace.end_s == 5.0
    assert trace.dropped_cpu_only == 1
    header_only = load_trace(write(tmp_path, HEADER, name="header-only.csv"))
    assert header_only.pods == ()
    assert header_only.has_times
    assert header_only.end_s == 0.0


@pytest.mark.parametrize(
    ("row", "column", "value", "words"),
    [
        ("p0,8000,16384,x,1000,,LS,Running,0,100,10", "num_gpu", "x", "is not an integer"),
        ("p0,8000,16384,1.5,1000,,LS,Running,0,100,10", "num_gpu", "1.5", "is not an integer"),
        ("p0,8000,16384,-1,1000,,LS,Running,0,100,10", "num_gpu", "-1", "is negative"),
        ("p0,8000,16384,,1000,,LS,Running,0,100,10", "num_gpu", "", "is empty"),
        ("p0,-5,16384,1,1000,,LS,Running,0,100,10", "cpu_milli", "-5", "is negative"),
        ("p0,8000,lots,1,1000,,LS,Running,0,100,10", "memory_mib", "lots", "not an integer"),
        ("p0,8000,16384,1,1001,,LS,Running,0,100,10", "gpu_milli", "1001", "outside 0..1000"),
        ("p0,8000,16384,1,-1,,LS,Running,0,100,10", "gpu_milli", "-1", "is negative"),
        (",8000,16384,1,1000,,LS,Running,0,100,10", "name", "", "is empty"),
        ("p0,8000,16384,1,1000,,LS,Running,,100,10", "creation_time", "", "is empty"),
        ("p0,8000,16384,1,1000,,LS,Running,t0,100,10", "creation_time", "t0", "not an integer"),
        ("p0,8000,16384,1,1000,,LS,Running,0,100,-3", "scheduled_time", "-3", "is negative"),
        ("p0,8000,16384,1,1000,,LS,Running,50,100,10", "scheduled_time", "10", "before creation"),
        ("p0,8000,16384,1,1000,,LS,Running,0,5,10", "deletion_time", "5", "negative run time"),
        ("p0,8000,16384,1,1000,,LS,Pending,20,5,", "deletion_time", "5", "negative run time"),
        ("p0,8000,16384,1,1000,,LS,Running,0,100", None, None, "has 10 fields"),
        ("p0,8000,16384,1,1000,,LS,Running,0,100,10,9", None, None, "has 12 fields"),
    ],
    ids=[
        "num_gpu not a number",
        "num_gpu a decimal",
        "num_gpu negative",
        "num_gpu empty",
        "cpu_milli negative",
        "memory_mib not a number",
        "gpu_milli above 1000",
        "gpu_milli negative",
        "name empty",
        "creation_time empty",
        "creation_time not a number",
        "scheduled_time negative",
        "scheduled before created",
        "deleted before scheduled",
        "pending deleted before created",
        "too few fields",
        "too many fields",
    ],
)
def test_malformed_row_names_line_and_column(
    tmp_path: Path, row: str, column: str | None, value: str | None, words: str
) -> None:
    path = write(tmp_path, HEADER, GOOD, row, GOOD)
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    error = caught.value
    assert isinstance(error, InvalidRequest)
    assert (error.path, error.line, error.column, error.value) == (str(path), 3, column, value)
    assert words in error.reason
    assert str(error).startswith("pods.csv line 3")
    assert "--skip-bad" in str(error)

    trace = load_trace(path, skip_bad=True)
    assert trace.skipped_bad == 1
    assert [pod.name for pod in trace.pods] == ["p0", "p0"]


def test_message_shape_matches_the_cli_wording(tmp_path: Path) -> None:
    lines = [HEADER] + [GOOD] * 15 + ["p0,8000,16384,x,1000,,LS,Running,0,100,10"]
    path = write(tmp_path, *lines, name="openb_pod_list_default.csv")
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    assert str(caught.value) == (
        "openb_pod_list_default.csv line 17, column num_gpu: 'x' is not an integer; "
        "fix the row or pass --skip-bad to skip malformed rows"
    )


def test_skip_bad_counts_every_bad_row_and_keeps_end_from_good_rows(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER,
        "bad1,1,1,x,1000,,LS,Running,0,9999,0",
        "ok,1,1,1,1000,,LS,Running,0,,0",
        "bad2,1,1,1,2000,,LS,Running,0,10,0",
        "bad3,1,1",
    )
    trace = load_trace(path, skip_bad=True)
    assert trace.skipped_bad == 3
    assert trace.pods == (TracePod("ok", 1, 0.0, 0.0),)
    assert trace.end_s == 0.0


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        ("name,cpu_milli,memory_mib,gpu_milli", "num_gpu"),
        ("openb-pod-0000,12000,16384,1,1000", "name, cpu_milli, memory_mib, num_gpu, gpu_milli"),
        (
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time",
            "deletion_time, scheduled_time",
        ),
    ],
    ids=["one column missing", "no header at all", "some time columns missing"],
)
def test_bad_header_names_missing_columns_even_with_skip_bad(
    tmp_path: Path, header: str, missing: str
) -> None:
    path = write(tmp_path, header, "p,1,1,1,1000")
    with pytest.raises(TraceError) as caught:
        load_trace(path, skip_bad=True)
    assert caught.value.line == 1
    assert missing in caught.value.reason


def test_duplicate_column_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="num_gpu: appears twice"):
        load_trace(write(tmp_path, "name,cpu_milli,memory_mib,num_gpu,gpu_milli,num_gpu"))


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(TraceError, match="empty.csv: is empty; the first line must be a header"):
        load_trace(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    assert caught.value.line is None
    assert "not found" in str(caught.value)
    assert str(path) in str(caught.value)


def test_directory_and_non_utf8_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="could not be opened"):
        load_trace(tmp_path)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(HEADER.encode() + b"\n\xff\xfe,1,1,1,1000,,LS,Running,0,1,0\n")
    with pytest.raises(TraceError, match="is not UTF-8 text"):
        load_trace(binary)


def test_csv_reader_error_is_a_trace_error(tmp_path: Path) -> None:
    huge = "x" * 200_000  # over csv's default field size limit of 131,072 characters
    path = write(tmp_path, HEADER, GOOD, f"{huge},1,1,1,1000,,LS,Running,0,1,0")
    with pytest.raises(TraceError, match="is not valid CSV") as caught:
        load_trace(path, skip_bad=True)
    assert caught.value.line == 3


def test_trace_error_pickles() -> None:
    error = TraceError("a/b.csv", 3, "num_gpu", "x", "is not an integer")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error)
    assert copy.column == "num_gpu"


def test_default_trace(default_trace: Path) -> None:
    trace = load_trace(default_trace)
    assert trace.source == "openb_pod_list_default.csv"
    assert len(trace.pods) == 7064
    assert trace.dropped_cpu_only == 1088
    assert trace.fractional == 3078
    assert trace.skipped_bad == 0
    assert Counter(pod.gpus for pod in trace.pods) == {1: 6989, 2: 16, 4: 15, 8: 44}
    assert trace.has_times
    assert trace.end_s == 12_902_960.0
    arrivals = [pod.arrival_s for pod in trace.pods]
    assert arrivals == sorted(arrivals)  # type: ignore[type-var]
    assert all(pod.duration_s is not None and pod.duration_s >= 0 for pod in trace.pods)


def test_multigpu20_has_no_times(shared_data: Path) -> None:
    path = shared_data / "alibaba-gpu-v2023" / "openb_pod_list_multigpu20.csv"
    if not path.is_file():
        pytest.skip(f"{path} is missing; set GPUCAAS_DATA to a full copy of shared/data")
    trace = load_trace(path)
    assert not trace.has_times
    assert trace.end_s is None
    assert all(pod.arrival_s is None and pod.duration_s is None for pod in trace.pods)

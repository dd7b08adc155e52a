"""Reads Alibaba GPU pod traces into whole-GPU requests the fleet simulator can replay.

The simulator places whole GPUs on HGX boards, while the Alibaba cluster-trace-gpu-v2023 pod
lists (the FGD paper's ``openb_pod_list_*.csv``) describe pods by CPU, memory and a per-GPU
share in thousandths. This module is the one place that maps those rows to :class:`TracePod`:

* a pod asks for ``num_gpu`` whole GPUs; a fractional pod (``num_gpu == 1`` and
  ``gpu_milli < 1000``) is rounded up to one whole GPU, since a partition is never shared;
* CPU-only pods (``num_gpu == 0``) are dropped, as no board placement concerns them;
* a pod arrives at ``creation_time`` and runs from ``scheduled_time`` (or ``creation_time``
  for pods that were never scheduled) to ``deletion_time``, or to the end of the trace when it
  has no deletion time.

It refuses to guess: a malformed row raises :class:`TraceError` naming the file, line and
column, unless the caller asked to skip such rows (``skip_bad=True``), which are then counted.
It does not check that a pod fits any board; placement rejects sizes above the board later.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ._errors import TraceError

__all__ = ["Trace", "TracePod", "load_trace"]

REQUIRED_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
"""Columns every pod list has; a file with only these (e.g. multigpu20) has no times."""

TIME_COLUMNS = ("creation_time", "deletion_time", "scheduled_time")
"""Columns of a timed pod list, in seconds from the trace start; all three or none."""

MILLI_PER_GPU = 1000
"""``gpu_milli`` is the per-GPU share in thousandths of one GPU."""

_HEADER_HINT = (
    "the first line must be a header naming "
    + ",".join(REQUIRED_COLUMNS)
    + " and, for a timed trace, "
    + ",".join(TIME_COLUMNS)
)


@dataclass(frozen=True, slots=True)
class TracePod:
    """One GPU pod of a trace, as whole GPUs."""

    name: str
    gpus: int
    """Whole GPUs requested (>= 1)."""
    arrival_s: float | None
    """Seconds from the trace start (``creation_time``); ``None`` when the file has no times."""
    duration_s: float | None
    """Run time once started; ``None`` when the file has no times."""


@dataclass(frozen=True, slots=True)
class Trace:
    """A whole trace: its GPU pods in arrival order and what was left out on the way."""

    source: str
    """The file name, or the synthetic spec text the trace was generated from."""
    pods: tuple[TracePod, ...]
    """Sorted by (arrival_s, row order) when timed, else in row order."""
    has_times: bool
    end_s: float | None
    """End of the trace: the largest time value in the file; ``None`` exactly when untimed."""
    dropped_cpu_only: int
    skipped_bad: int
    fractional: int
    """Pods with ``gpu_milli < 1000`` (and one GPU) rounded up to one whole GPU."""


class _CsvReader(Protocol):
    """What this module uses of a ``csv.reader``: its rows and the current line number."""

    @property
    def line_num(self) -> int: ...

    def __iter__(self) -> Iterator[list[str]]: ...

    def __next__(self) -> list[str]: ...


class _BadField(Exception):
    """A malformed row; turned into a TraceError (with file and line) or counted by the loop."""

    def __init__(self, column: str | None, value: str | None, reason: str) -> None:
        super().__init__(column, value, reason)
        self.column = column
        self.value = value
        self.reason = reason


def _bad_number(column: str, raw: str) -> _BadField:
    text = raw.strip()
    if not text:
        return _BadField(column, raw, "is empty; it must be a whole number >= 0")
    try:
        negative = float(text) < 0
    except ValueError:
        negative = False
    if negative:
        return _BadField(column, raw, "is negative; it must be a whole number >= 0")
    return _BadField(column, raw, "is not an integer")


def _count(row: list[str], index: int, column: str) -> int:
    text = row[index].strip()
    if text.isascii() and text.isdigit():
        return int(text)
    raise _bad_number(column, row[index])


def _optional_count(row: list[str], index: int, column: str) -> int | None:
    text = row[index].strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return int(text)
    raise _bad_number(column, row[index])


def load_trace(path: Path | str, *, skip_bad: bool = False) -> Trace:
    """Load an Alibaba v2023 pod list (11 columns, or the 5-column untimed form).

    Columns are found by header name, so their order does not matter and extra columns are
    ignored. Every numeric field must be a whole number >= 0; ``gpu_milli`` must be 0..1000;
    ``scheduled_time`` may not precede ``creation_time`` and ``deletion_time`` may not precede
    the start (a negative run time). Empty ``scheduled_time`` (a pending pod) and empty
    ``deletion_time`` (the pod runs to the end of the trace) are allowed. Blank lines are
    ignored. A file with no GPU pods gives ``pods=()``.

    Parameters:
        path: the CSV file.
        skip_bad: skip malformed data rows and count them in ``Trace.skipped_bad`` instead of
            raising. A bad header, or an unreadable file, still raises.

    Raises:
        TraceError: the file is missing or unreadable, is not UTF-8 CSV, its header lacks a
            required column, or (unless ``skip_bad``) a row is malformed. The error names the
            file, the 1-based line and the column.
    """
    file = Path(path)
    name = str(path)
    try:
        handle = file.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise TraceError(
            name, None, None, None, f"trace file not found at {file}", "check the path"
        ) from exc
    except OSError as exc:
        raise TraceError(
            name,
            None,
            None,
            None,
            f"could not be opened ({exc.strerror or exc})",
            "check that the path is a readable file",
        ) from exc
    with handle:
        reader = csv.reader(handle)
        try:
            return _read(name, reader, skip_bad)
        except UnicodeDecodeError as exc:
            raise TraceError(
                name,
                None,
                None,
                None,
                "is not UTF-8 text (a compressed or binary file?)",
                "pass a CSV pod list such as openb_pod_list_default.csv",
            ) from exc
        except csv.Error as exc:
            raise TraceError(
                name, reader.line_num, None, None, f"is not valid CSV ({exc})"
            ) from exc


def _read(name: str, reader: _CsvReader, skip_bad: bool) -> Trace:
    header = next(reader, None)
    if header is None:
        raise TraceError(name, None, None, None, "is empty", _HEADER_HINT)
    columns = [column.strip() for column in header]
    index: dict[str, int] = {}
    for position, column in enumerate(columns):
        if column in index and column in REQUIRED_COLUMNS + TIME_COLUMNS:
            raise TraceError(
                name, 1, column, None, "appears twice in the header", "remove one of them"
            )
        index.setdefault(column, position)
    missing = [column for column in REQUIRED_COLUMNS if column not in index]
    timed = [column for column in TIME_COLUMNS if column in index]
    if timed:
        missing += [column for column in TIME_COLUMNS if column not in index]
    if missing:
        shown = ",".join(header)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise TraceError(
            name,
            1,
            None,
            None,
            f"the header lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(the first line is {shown!r})",
            _HEADER_HINT,
        )
    has_times = bool(timed)
    width = len(header)
    i_name, i_cpu, i_mem, i_gpu, i_milli = (index[column] for column in REQUIRED_COLUMNS)
    i_created, i_deleted, i_scheduled = (index.get(column, -1) for column in TIME_COLUMNS)

    # (row order, name, gpus, start of run, arrival, deletion or None); times are 0 untimed.
    kept: list[tuple[int, str, int, int, int, int | None]] = []
    end = 0
    dropped_cpu_only = skipped_bad = fractional = 0
    for row in reader:
        if not row:
            continue
        try:
            if len(row) != width:
                raise _BadField(
                    None, None, f"has {len(row)} fields but the header has {width} columns"
                )
            pod_name = row[i_name].strip()
            if not pod_name:
                raise _BadField("name", row[i_name], "is empty; every pod needs a name")
            _count(row, i_cpu, "cpu_milli")
            _count(row, i_mem, "memory_mib")
            num_gpu = _count(row, i_gpu, "num_gpu")
            gpu_milli = _count(row, i_milli, "gpu_milli")
            if gpu_milli > MILLI_PER_GPU:
                raise _BadField(
                    "gpu_milli",
                    row[i_milli],
                    f"is outside 0..{MILLI_PER_GPU} (thousandths of one GPU)",
                )
            created = start = 0
            deleted: int | None = None
            if has_times:
                created = _count(row, i_created, "creation_time")
                deleted = _optional_count(row, i_deleted, "deletion_time")
                scheduled = _optional_count(row, i_scheduled, "scheduled_time")
                if scheduled is not None and scheduled < created:
                    raise _BadField(
                        "scheduled_time",
                        row[i_scheduled],
                        f"is before creation_time {created}",
                    )
                start = created if scheduled is None else scheduled
                if deleted is not None and deleted < start:
                    since = "creation_time" if scheduled is None else "scheduled_time"
                    raise _BadField(
                        "deletion_time",
                        row[i_deleted],
                        f"is before {since} {start}, a negative run time",
                    )
                end = max(end, created, start, deleted or 0)
        except _BadField as bad:
            if not skip_bad:
                raise TraceError(name, reader.line_num, bad.column, bad.value, bad.reason) from None
            skipped_bad += 1
            continue
        if num_gpu == 0:
            dropped_cpu_only += 1
            continue
        if num_gpu == 1 and gpu_milli < MILLI_PER_GPU:
            fractional += 1
        kept.append((len(kept), pod_name, num_gpu, start, created, deleted))

    if has_times:
        kept.sort(key=lambda record: (record[4], record[0]))
        pods = tuple(
            TracePod(
                pod_name,
                gpus,
                float(created),
                float((end if deleted is None else deleted) - start),
            )
            for _, pod_name, gpus, start, created, deleted in kept
        )
    else:
        pods = tuple(TracePod(pod_name, gpus, None, None) for _, pod_name, gpus, *_ in kept)
    return Trace(
        source=Path(name).name or name,
        pods=pods,
        has_times=has_times,
        end_s=float(end) if has_times else None,
        dropped_cpu_only=dropped_cpu_only,
        skipped_bad=skipped_bad,
        fractional=fractional,
    )

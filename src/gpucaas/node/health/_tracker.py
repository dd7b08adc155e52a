"""The health of this node's GPUs as the last pass of a check found it.

:class:`HealthTracker` is the state behind the device plugin's health loop, kept apart from
gRPC so that it can be tested alone and reused by the DRA plugin: it polls a check for every
GPU, remembers what changed (a version that waiters of :meth:`HealthTracker.wait` see move),
and hands the set of unhealthy module IDs to a reporter whenever that set changes, retrying a
failed report on the next pass. It counts nothing itself: the caller turns what
:meth:`HealthTracker.poll` and :meth:`HealthTracker.report` return into metrics.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from gpucaas.node import KubeletGpu

log = logging.getLogger("gpucaas.device-plugin")

HealthCheck = Callable[[KubeletGpu], bool]
"""Whether a GPU is usable now (e.g. :class:`NodeHealth`). Raising means unhealthy."""

HealthReport = Callable[[frozenset[int]], None]
"""Told the module IDs of the unhealthy GPUs (e.g. :class:`NodeAnnotationReporter`). Raising
means "not told": the same set is offered again on the next pass."""


class HealthTracker:
    """Per-GPU health from ``check``, announced on change.

    Parameters:
        gpus: this node's GPUs; all start healthy.
        check: polled by :meth:`poll` for every GPU. None: every GPU is always healthy.
        report: called by :meth:`report` with the unhealthy module IDs when that set changed
            since it last succeeded (first on the first call). None: nobody is told.

    Thread-safe: one thread polls and reports, any number read and wait.
    """

    def __init__(
        self,
        gpus: Sequence[KubeletGpu],
        check: HealthCheck | None = None,
        report: HealthReport | None = None,
    ) -> None:
        self.gpus = tuple(gpus)
        self._check = check
        self._report = report
        self._healthy = {g.device_id: True for g in self.gpus}
        self._changed = threading.Condition()
        self._version = 0
        self._reported: frozenset[int] | None = None
        self._report_error: str | None = None

    def poll(self) -> tuple[tuple[KubeletGpu, bool], ...]:
        """Run the check once on every GPU; returns each GPU whose health changed, with its
        new health (empty without a check). A check that raises marks its GPU unhealthy.
        When something changed, the version moves and :meth:`wait` returns."""
        if self._check is None:
            return ()
        changed = []
        for gpu in self.gpus:
            try:
                ok = bool(self._check(gpu))
            except Exception:  # noqa: BLE001 - a failing check means an unhealthy GPU
                log.exception("health check failed", extra={"device": gpu.device_id})
                ok = False
            if ok != self._healthy[gpu.device_id]:
                log.warning(
                    "GPU health changed",
                    extra={
                        "device": gpu.device_id,
                        "module_id": gpu.module_id,
                        "bdf": gpu.bdf,
                        "health": "Healthy" if ok else "Unhealthy",
                    },
                )
                changed.append((gpu, ok))
            with self._changed:
                self._healthy[gpu.device_id] = ok
        if changed:
            with self._changed:
                self._version += 1
                self._changed.notify_all()
        return tuple(changed)

    def healthy(self) -> dict[str, bool]:
        """Device ID -> healthy, as the last pass found it (a copy)."""
        with self._changed:
            return dict(self._healthy)

    def snapshot(self) -> tuple[int, dict[str, bool]]:
        """The version and :meth:`healthy`, read together."""
        with self._changed:
            return self._version, dict(self._healthy)

    def unhealthy_modules(self) -> frozenset[int]:
        """Module IDs of the GPUs the last pass found unhealthy."""
        with self._changed:
            return frozenset(int(g.module_id) for g in self.gpus if not self._healthy[g.device_id])

    def wait(self, version: int, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the version to move past ``version`` (or for
        :meth:`wake`); returns the version now."""
        with self._changed:
            if self._version == version:
                self._changed.wait(timeout=timeout)
            return self._version

    def wake(self) -> None:
        """Wake every :meth:`wait` at once (the caller is stopping)."""
        with self._changed:
            self._changed.notify_all()

    def report(self) -> bool | None:
        """Hand the unhealthy module IDs to ``report`` if they changed since it last
        succeeded. Returns None when there was nothing to do, True when it was called and
        succeeded, False when it raised (retried on the next call; logged once per distinct
        error, not every pass)."""
        if self._report is None:
            return None
        unhealthy = self.unhealthy_modules()
        if unhealthy == self._reported:
            return None
        try:
            self._report(unhealthy)
        except Exception as exc:  # noqa: BLE001 - retried on the next pass
            if str(exc) != self._report_error:
                self._report_error = str(exc)
                log.warning(
                    "cannot report unhealthy GPUs; retrying every health pass",
                    extra={"modules": sorted(unhealthy), "error": str(exc)},
                )
            return False
        self._reported, self._report_error = unhealthy, None
        return True

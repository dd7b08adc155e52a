"""The health part on its own: the node's health source (:class:`NodeHealth` and its
checks), the :class:`HealthTracker` behind the device plugin's health loop, and the node
annotation that tells the control plane which GPUs are unhealthy. No gRPC, no kubelet."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import NoReturn

import pytest

from gpucaas.errors import InvalidRequest
from gpucaas.node import KubeletGpu
from gpucaas.node.health import (
    UNHEALTHY_ANNOTATION,
    FabricFailures,
    HealthTracker,
    NodeAnnotationReporter,
    NodeHealth,
    StillOnVfio,
    parse_unhealthy_annotation,
    unhealthy_annotation_patch,
)
from gpucaas.topology import get_model
from tests.node.node_fakes import FailingFabric

MODEL = get_model("hgx-h100-8")


# --- the annotation -----------------------------------------------------------------------


def test_the_annotation_patch_and_its_parser_agree() -> None:
    patch = unhealthy_annotation_patch([5, 3, 3])
    assert patch == {"metadata": {"annotations": {UNHEALTHY_ANNOTATION: "3,5"}}}
    assert parse_unhealthy_annotation(patch["metadata"]["annotations"]) == (3, 5)  # type: ignore[index]
    assert unhealthy_annotation_patch([]) == {
        "metadata": {"annotations": {UNHEALTHY_ANNOTATION: None}}
    }
    assert parse_unhealthy_annotation({UNHEALTHY_ANNOTATION: "7, x,2,,2"}) == (2, 7)
    assert parse_unhealthy_annotation(None) == ()


def test_a_reporter_without_any_cluster_configuration_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(InvalidRequest, match="--kubeconfig"):
        NodeAnnotationReporter("hgx-07")


# --- the health source --------------------------------------------------------------------


def test_node_health_checks_node_config_space_and_fabric(
    hgx_sysfs: Path, gpus: tuple[KubeletGpu, ...], dev_root: Path
) -> None:
    fabric = FailingFabric(MODEL)
    health = NodeHealth(hgx_sysfs, dev_root, FabricFailures(fabric, max_age_s=0.0))
    assert [health.problem(g) for g in gpus] == [None] * 8
    one, two, three = gpus[1], gpus[4], gpus[6]

    (dev_root / "vfio" / str(one.iommu_group)).unlink()
    assert "no device node" in (health.problem(one) or "")

    config = hgx_sysfs / "bus" / "pci" / "devices" / str(two.bdf) / "config"
    good = config.read_bytes()
    config.write_bytes(b"\xff" * 256)  # fell off the bus
    assert health.problem(two) == "config space reads vendor 0xffff"
    config.write_bytes(good[:10])
    assert "config space short" in (health.problem(two) or "")
    config.write_bytes(good)

    # Fabric Manager's form of the bus id: 8-digit domain, upper case.
    domain, bus, rest = str(three.bdf).split(":")
    fabric.failed = [f"0000{domain}:{bus.upper()}:{rest}"]
    assert health.problem(three) == "reported failed by the fabric"
    assert {g.device_id for g in gpus if not health(g)} == {one.device_id, three.device_id}


def test_still_on_vfio_sees_a_gpu_leave_vfio_pci(
    hgx_sysfs: Path, gpus: tuple[KubeletGpu, ...]
) -> None:
    check = StillOnVfio(hgx_sysfs, max_age_s=0.0)
    assert all(check(g) for g in gpus)
    (hgx_sysfs / "bus" / "pci" / "devices" / str(gpus[3].bdf) / "driver").unlink()
    assert [check(g) for g in gpus] == [True] * 3 + [False] + [True] * 4


def test_fabric_failures_keep_the_last_answer_when_the_fabric_is_down() -> None:
    fabric = FailingFabric(MODEL)
    failures = FabricFailures(fabric, max_age_s=0.0)
    fabric.failed = ["00000000:9A:00.0"]
    assert failures() == {"0000:9a:00.0"}

    def down() -> NoReturn:
        raise ConnectionError("fm-controller unreachable")

    fabric.failed_devices = down  # type: ignore[method-assign]
    assert failures() == {"0000:9a:00.0"}  # unknown is not healthy again, nor newly failed


# --- the tracker ---------------------------------------------------------------------------


def test_the_tracker_reports_transitions_and_a_raising_check_means_unhealthy(
    gpus: tuple[KubeletGpu, ...],
) -> None:
    broken: set[str] = set()

    def check(gpu: KubeletGpu) -> bool:
        if gpu.device_id == "5":
            raise OSError("config space unreadable")
        return gpu.device_id not in broken

    tracker = HealthTracker(gpus, check)
    assert [(g.device_id, ok) for g, ok in tracker.poll()] == [("5", False)]
    assert tracker.poll() == ()  # unchanged: nothing to announce
    broken.add("2")
    assert [(g.device_id, ok) for g, ok in tracker.poll()] == [("2", False)]
    assert tracker.unhealthy_modules() == {int(gpus[2].module_id), int(gpus[5].module_id)}
    broken.clear()
    assert [(g.device_id, ok) for g, ok in tracker.poll()] == [("2", True)]
    assert {d for d, ok in tracker.healthy().items() if not ok} == {"5"}


def test_without_a_check_every_gpu_stays_healthy(gpus: tuple[KubeletGpu, ...]) -> None:
    tracker = HealthTracker(gpus)
    assert tracker.poll() == ()
    assert tracker.unhealthy_modules() == frozenset()
    assert tracker.report() is None  # and nobody to tell


def test_a_waiter_wakes_when_health_changes(gpus: tuple[KubeletGpu, ...]) -> None:
    broken: set[str] = set()
    tracker = HealthTracker(gpus, lambda g: g.device_id not in broken)
    version, healthy = tracker.snapshot()
    assert all(healthy.values())
    assert tracker.wait(version, timeout=0.05) == version  # nothing changed: times out
    woke: list[int] = []
    waiter = threading.Thread(target=lambda: woke.append(tracker.wait(version, timeout=5.0)))
    waiter.start()
    time.sleep(0.05)
    started = time.monotonic()
    broken.add("1")
    tracker.poll()
    waiter.join(timeout=5.0)
    assert woke == [version + 1]
    assert time.monotonic() - started < 1.0
    assert tracker.snapshot() == (version + 1, {**healthy, "1": False})


def test_reports_go_out_on_change_and_a_failed_one_is_retried(
    gpus: tuple[KubeletGpu, ...],
) -> None:
    broken: set[str] = set()
    reports: list[frozenset[int]] = []
    failing = False

    def report(modules: frozenset[int]) -> None:
        if failing:
            raise ConnectionError("API server unreachable")
        reports.append(modules)

    tracker = HealthTracker(gpus, lambda g: g.device_id not in broken, report)
    assert tracker.report() is True  # the first call clears a stale annotation
    assert reports == [frozenset()]
    assert tracker.report() is None  # unchanged
    broken.add("6")
    tracker.poll()
    failing = True
    assert tracker.report() is False
    assert tracker.report() is False  # still owed
    failing = False
    assert tracker.report() is True
    assert reports == [frozenset(), frozenset({int(gpus[6].module_id)})]
    assert tracker.report() is None

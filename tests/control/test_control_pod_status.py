"""How a pod's status becomes a workload status, and which clock its times come from: a
pod's timestamps are whole seconds on the kubelet's clock, so one seen live is replaced by
the time the control plane saw it; one caught up after a restart keeps the pod's time."""

from __future__ import annotations

import datetime as dt

from lightkube.models.core_v1 import (
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStatus,
    PodSpec,
    PodStatus,
)
from lightkube.resources.core_v1 import Pod

from gpucaas.control._backend import Phase
from gpucaas.control._kubernetes import LIVE_WITHIN_S, pod_status

NOW = 1_800_000_000.0


def _at(seconds_ago: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(NOW - seconds_ago), tz=dt.UTC)


def _pod(phase: str, state: ContainerState) -> Pod:
    return Pod(
        spec=PodSpec(containers=[], nodeName="hgx-0"),
        status=PodStatus(
            phase=phase,
            startTime=_at(120),
            containerStatuses=[
                ContainerStatus(
                    name="main", image="i", imageID="", ready=True, restartCount=0, state=state
                )
            ],
        ),
    )


def test_a_pod_seen_running_live_takes_the_observers_clock() -> None:
    pod = _pod("Running", ContainerState(running=ContainerStateRunning(startedAt=_at(0.5))))
    status = pod_status(pod, now=NOW)
    assert status.phase is Phase.RUNNING and status.started_at is None


def test_a_pod_caught_up_later_keeps_its_own_times() -> None:
    ended = ContainerStateTerminated(
        exitCode=3, startedAt=_at(60), finishedAt=_at(30), reason="Error"
    )
    status = pod_status(_pod("Failed", ContainerState(terminated=ended)), now=NOW)
    assert status.phase is Phase.EXITED and status.exit_code == 3
    assert status.started_at == int(NOW - 60) and status.finished_at == int(NOW - 30)


def test_a_pod_that_ended_just_now_is_timed_by_the_observer() -> None:
    ended = ContainerStateTerminated(exitCode=0, startedAt=_at(1), finishedAt=_at(0))
    status = pod_status(_pod("Succeeded", ContainerState(terminated=ended)), now=NOW)
    assert (status.started_at, status.finished_at) == (None, None)
    assert LIVE_WITHIN_S >= 1.0  # a truncated second is always "live"

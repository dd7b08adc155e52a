"""Pod requests per GPU of the Kubernetes backend: Kubernetes quantities, scaled by the
partition size, refused with the option's name when they are not quantities."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpucaas.control import ControlPlane, ControlPlaneConfig, PodDefaults
from gpucaas.control._kubernetes import scale_quantity
from gpucaas.errors import InvalidRequest
from gpucaas.runtime import vm_memory_for


@pytest.mark.parametrize(
    ("quantity", "factor", "expected"),
    [
        ("14", 2, "28"),
        ("500m", 3, "1500m"),
        ("0.5", 3, "1.5"),
        ("64Mi", 4, "256Mi"),
        ("160Gi", 8, "1280Gi"),
        ("1.5Ti", 2, "3Ti"),
    ],
)
def test_quantities_scale_in_their_own_unit(quantity: str, factor: int, expected: str) -> None:
    assert scale_quantity(quantity, factor) == expected


def test_the_defaults_are_the_vm_size_and_fourteen_cpus_per_gpu() -> None:
    assert PodDefaults().requests(2) == {"cpu": "28", "memory": f"{vm_memory_for(2)}Gi"}
    small = PodDefaults(cpu_per_gpu="50m", memory_per_gpu="32Mi")
    assert small.requests(4) == {"cpu": "200m", "memory": "128Mi"}


@pytest.mark.parametrize("bad", ["14x", "", "-1", "0", "1e3", "Gi", "1.5.2"])
def test_bad_quantities_are_refused_naming_the_option(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="--pod-cpu-per-gpu"):
        PodDefaults(cpu_per_gpu=bad)
    with pytest.raises(InvalidRequest, match="--pod-memory-per-gpu"):
        PodDefaults(memory_per_gpu=bad)


def test_gpucaas_up_refuses_a_bad_quantity_before_touching_a_cluster(tmp_path: Path) -> None:
    config = ControlPlaneConfig(
        state_dir=tmp_path,
        backend="kubernetes",
        kubeconfig=str(tmp_path / "absent-kubeconfig"),
        pod_memory_per_gpu="lots",
    )
    with pytest.raises(InvalidRequest, match="--pod-memory-per-gpu 'lots'|memory per GPU"):
        ControlPlane(config)
    ControlPlane(
        ControlPlaneConfig(state_dir=tmp_path, nodes=1, executor="process")
    ).stop()  # unlocked

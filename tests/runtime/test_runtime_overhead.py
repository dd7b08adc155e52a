"""``gpucaas.runtime``: the Kata VM overhead model, the default VM sizes, the RuntimeClass."""

from __future__ import annotations

import math
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gpucaas.errors import InvalidRequest
from gpucaas.runtime import (
    HGX_GPUS,
    HGX_HOST_MEMORY_GIB,
    HOST_RESERVED_GIB,
    RUNTIME_CLASS_NAME,
    InvalidVmSpec,
    runtime_class,
    runtime_overhead,
    vm_memory_for,
)

GIB = 1 << 30
RUNTIMECLASS_YAML = Path(__file__).resolve().parents[2] / "deploy" / "runtimeclass.yaml"
KUBERNETES_VERSIONS = ("1.34", "1.35", "1.36", "1.37")

memories = st.floats(min_value=0.5, max_value=4096, allow_nan=False, allow_infinity=False)


def _pod_fixed_gib(pod_fixed: dict[str, str]) -> int:
    memory = pod_fixed["memory"]
    assert memory.endswith("Gi"), memory
    return int(memory[:-2])


# --- the model ------------------------------------------------------------------------------


@given(a=memories, b=memories, hugepages=st.booleans())
def test_overhead_grows_with_vm_memory(a: float, b: float, hugepages: bool) -> None:
    low, high = sorted((a, b))
    small = runtime_overhead(low, hugepages=hugepages)
    large = runtime_overhead(high, hugepages=hugepages)
    assert small.memory_bytes <= large.memory_bytes
    assert small.cpu_millicores <= large.cpu_millicores


@given(memory=memories, vcpus=st.integers(min_value=1, max_value=512))
def test_hugepages_never_cost_more(memory: float, vcpus: int) -> None:
    with_huge = runtime_overhead(memory, vcpus=vcpus, hugepages=True)
    without = runtime_overhead(memory, vcpus=vcpus, hugepages=False)
    assert with_huge.memory_bytes <= without.memory_bytes
    assert _pod_fixed_gib(with_huge.pod_fixed()) <= _pod_fixed_gib(without.pod_fixed())


@given(memory=memories, hugepages=st.booleans())
def test_terms_add_up_and_cover_the_kata_base(memory: float, hugepages: bool) -> None:
    overhead = runtime_overhead(memory, hugepages=hugepages)
    assert sum(size for _, size in overhead.terms) == overhead.memory_bytes
    assert dict(overhead.terms)["guest base memory"] == 8 * GIB
    assert overhead.cpu_millicores >= 1000  # Kata's base vCPU
    assert _pod_fixed_gib(overhead.pod_fixed()) == math.ceil(overhead.memory_gib)


def test_page_tables_are_one_512th_per_structure_with_4k_pages() -> None:
    terms = dict(runtime_overhead(100, hugepages=False).terms)
    guest = 108 * GIB  # 100 GiB + Kata's 8 GiB base
    assert 3 * guest / 512 <= terms["page tables"] <= 3 * guest / 512 * 1.01
    assert dict(runtime_overhead(100, hugepages=True).terms)["page tables"] < 1 << 20


@pytest.mark.parametrize("hugepages", [True, False], ids=["hugepages", "4k-pages"])
def test_field_facts_at_100_gib(hugepages: bool) -> None:
    """10 GiB was measured too small for a 100 GiB VM and about 20 GiB was enough: the model
    must land strictly above 10 and at most 20, with room on both sides."""
    overhead = runtime_overhead(100, hugepages=hugepages)
    assert overhead.memory_gib > 10 + 2
    assert overhead.memory_gib <= 20 - 2
    assert 10 < _pod_fixed_gib(overhead.pod_fixed()) <= 20


def test_pod_fixed_quantity_syntax() -> None:
    assert runtime_overhead(100, hugepages=True).pod_fixed() == {
        "memory": "15Gi",
        "cpu": "1250m",
    }


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"vm_memory_gib": 0}, "vm_memory_gib"),
        ({"vm_memory_gib": -1.5}, "vm_memory_gib"),
        ({"vm_memory_gib": math.nan}, "vm_memory_gib"),
        ({"vm_memory_gib": math.inf}, "vm_memory_gib"),
        ({"vm_memory_gib": 100, "vcpus": 0}, "vcpus"),
        ({"vm_memory_gib": 100, "vcpus": -4}, "vcpus"),
    ],
    ids=["zero memory", "negative memory", "nan memory", "infinite memory", "0 vcpus", "neg vcpus"],
)
def test_bad_input_names_the_value(kwargs: dict[str, Any], parameter: str) -> None:
    with pytest.raises(InvalidVmSpec) as caught:
        runtime_overhead(**kwargs)
    assert isinstance(caught.value, InvalidRequest)
    assert caught.value.parameter == parameter
    assert str(caught.value).startswith(f"{parameter}={kwargs[parameter]!r} is out of range")
    with pytest.raises(InvalidVmSpec):
        runtime_class(vm_memory_gib=kwargs["vm_memory_gib"], vcpus=kwargs.get("vcpus", 1))


# --- default VM sizes ------------------------------------------------------------------------


def test_default_vm_memory_per_partition_size() -> None:
    sizes = [vm_memory_for(g) for g in (1, 2, 4, 8)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert vm_memory_for(8) == 8 * vm_memory_for(1)
    assert runtime_overhead(vm_memory_for(8)).memory_gib > 10


def test_default_8_gpu_vm_and_eight_1_gpu_vms_fit_a_host() -> None:
    """One RuntimeClass serves every size, sized for the 8-GPU VM: both a full-board VM and
    eight single-GPU VMs (each charged that overhead) must fit in a typical host's RAM."""
    usable = HGX_HOST_MEMORY_GIB - HOST_RESERVED_GIB
    overhead = _pod_fixed_gib(runtime_class()["overhead"]["podFixed"])
    assert vm_memory_for(HGX_GPUS) + overhead <= usable
    assert HGX_GPUS * (vm_memory_for(1) + overhead) <= usable
    assert overhead >= runtime_overhead(vm_memory_for(HGX_GPUS), hugepages=False).memory_gib


@pytest.mark.parametrize("gpus", [0, 9, -1, True], ids=["0", "9", "-1", "bool"])
def test_vm_memory_for_rejects_impossible_gpu_counts(gpus: int) -> None:
    with pytest.raises(InvalidVmSpec, match="gpus="):
        vm_memory_for(gpus)


# --- the RuntimeClass ------------------------------------------------------------------------


def test_runtime_class_shape() -> None:
    obj = runtime_class()
    assert obj["metadata"]["name"] == obj["handler"] == RUNTIME_CLASS_NAME
    assert obj["scheduling"]["nodeSelector"] == {"gpucaas.io/hgx": "true"}
    expected = runtime_overhead(vm_memory_for(HGX_GPUS), hugepages=False).pod_fixed()
    assert obj["overhead"]["podFixed"] == expected
    small = runtime_class("kata-qemu-nvidia-gpu-1", vm_memory_gib=vm_memory_for(1))
    assert small["handler"] == RUNTIME_CLASS_NAME
    assert _pod_fixed_gib(small["overhead"]["podFixed"]) < _pod_fixed_gib(expected)
    custom = runtime_class(node_selector={"pool": "gpu"}, tolerations=())
    assert custom["scheduling"] == {"nodeSelector": {"pool": "gpu"}, "tolerations": []}


def test_deploy_runtimeclass_yaml_is_runtime_class() -> None:
    """deploy/runtimeclass.yaml was written from runtime_class(); it must not drift."""
    on_disk = yaml.safe_load(RUNTIMECLASS_YAML.read_text())
    assert on_disk == runtime_class(), (
        "deploy/runtimeclass.yaml differs from gpucaas.runtime.runtime_class(); regenerate it "
        "(the command is at the top of the file)"
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "obj",
    [runtime_class(), runtime_class("kata-qemu-nvidia-gpu-1", vm_memory_gib=vm_memory_for(1))],
    ids=["default", "1-gpu"],
)
def test_runtime_class_is_valid_for_kubernetes(version: str, obj: dict[str, Any]) -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import all_versions, major_minor

    if version not in {major_minor(v) for v in all_versions()}:
        installed = metadata.version("kubernetes-validate")
        pytest.skip(
            f"kubernetes-validate {installed} has no schemas for Kubernetes {version}; "
            f"upgrade to kubernetes-validate>={version}.0"
        )
    assert kubernetes_validate.validate(obj, version, strict=True) == version

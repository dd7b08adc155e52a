"""Kata's GPU passthrough drop-in and the kubelet timeout multi-GPU boots need."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpucaas.runtime import (
    GPU_KERNEL_PARAMS,
    HGX_GPUS,
    KATA_BASE_MEMORY_GIB,
    KATA_DROPIN_NAME,
    KATA_MAX_PCIE_ROOT_PORTS,
    KATA_NVIDIA_TIMEOUT_S,
    InvalidVmSpec,
    RuntimeConfigError,
    boot_budget,
    duration,
    effective_kernel_params,
    gpu_kernel_params,
    kata_dropin_dir,
    kata_gpu_dropin,
    kubelet_runtime_request_timeout,
)

RUNTIMES_DIR = "/opt/kata/share/defaults/kata-containers/runtimes/qemu-nvidia-gpu"


def _data(**kwargs: Any) -> dict[str, Any]:
    return tomllib.loads(kata_gpu_dropin(**kwargs).text)


def test_the_dropin_holds_exactly_the_gpu_settings() -> None:
    # agent.cdi_timeout: twice the budget's agent wait for 8 x H200 (141 s), rounded up to 10 s.
    assert _data(base_kernel_params="") == {
        "hypervisor": {
            "qemu": {
                "cold_plug_vfio": "root-port",
                "hot_plug_vfio": "no-port",
                "pcie_root_port": 8,
                "default_memory": 8192,
                "default_vcpus": 1,
                "enable_hugepages": True,
                "kernel_params": "pci=realloc pci=nocrs pci=assign-busses agent.cdi_timeout=290",
            }
        },
        "agent": {"kata": {"dial_timeout": 1200}},
        "runtime": {"create_container_timeout": 1200},
    }


@pytest.mark.parametrize(
    ("kwargs", "key", "value"),
    [
        ({"pcie_root_ports": 16}, "pcie_root_port", 16),
        ({"gpus": 2, "pcie_root_ports": 2}, "pcie_root_port", 2),
        ({"memory_gib": 16}, "default_memory", 16 * 1024),
        ({"vcpus": 4}, "default_vcpus", 4),
        ({"hugepages": False}, "enable_hugepages", False),
    ],
    ids=["16 root ports", "2 root ports", "memory in MiB", "vcpus", "no hugepages"],
)
def test_each_vm_setting(kwargs: dict[str, Any], key: str, value: Any) -> None:
    assert _data(**kwargs)["hypervisor"]["qemu"][key] == value


def test_the_defaults_are_the_overhead_models_vm_base() -> None:
    qemu = _data()["hypervisor"]["qemu"]
    assert qemu["default_memory"] == KATA_BASE_MEMORY_GIB * 1024
    assert qemu["pcie_root_port"] == HGX_GPUS


def test_kernel_params_append_to_the_callers_and_the_base_files() -> None:
    dropin = kata_gpu_dropin(
        base_kernel_params="nvrc.smi.srs=1  pci=realloc", kernel_params=["agent.log=debug a=1", "b"]
    )
    assert dropin.kernel_params == (
        "nvrc.smi.srs=1 pci=realloc agent.log=debug a=1 b pci=nocrs pci=assign-busses "
        "agent.cdi_timeout=290"
    )
    assert tomllib.loads(dropin.text)["hypervisor"]["qemu"]["kernel_params"] == dropin.kernel_params


@given(
    base=st.lists(st.from_regex(r"[a-z.=0-9]{1,8}", fullmatch=True), max_size=5),
    extra=st.lists(st.from_regex(r"[a-z.=0-9]{1,8}", fullmatch=True), max_size=5),
)
def test_kernel_params_never_drop_a_parameter(base: list[str], extra: list[str]) -> None:
    tokens = gpu_kernel_params(" ".join(base), extra).split()
    assert set(base) | set(extra) | set(GPU_KERNEL_PARAMS) == set(tokens)
    assert len(tokens) == len(set(tokens))
    assert tokens[: len(dict.fromkeys(base))] == list(dict.fromkeys(base))


def test_timeouts_default_to_katas_nvidia_value_and_can_be_raised() -> None:
    assert _data()["runtime"]["create_container_timeout"] == KATA_NVIDIA_TIMEOUT_S
    data = _data(timeout_s=3600)
    assert data["agent"]["kata"]["dial_timeout"] == 3600
    assert data["runtime"]["create_container_timeout"] == 3600


def test_timeouts_grow_past_katas_value_when_the_kubelet_needs_more() -> None:
    # 8 GPUs and 1.25 TiB on 4 KiB pages: the budget needs 23 minutes, Kata's 1200 s is short.
    data = _data(hugepages=False)
    assert data["runtime"]["create_container_timeout"] == 23 * 60
    assert data["agent"]["kata"]["dial_timeout"] == 23 * 60


@pytest.mark.parametrize("hugepages", [True, False], ids=["hugepages", "4k pages"])
def test_the_kubelet_timeout_is_twice_the_boot_budget_in_whole_minutes(hugepages: bool) -> None:
    timeouts = [kubelet_runtime_request_timeout(g, hugepages=hugepages) for g in range(1, 9)]
    assert timeouts == sorted(timeouts)
    assert timeouts[0] > 120  # the kubelet's 2m default is too short even for 1 GPU
    for gpus, timeout in enumerate(timeouts, start=1):
        budget = boot_budget(gpus, hugepages="1Gi" if hugepages else "none", bar_gib=256)
        assert timeout % 60 == 0
        assert 2 * budget.total_seconds <= timeout < 2 * budget.total_seconds + 60
        advice = f"runtimeRequestTimeout to at least {timeout // 60}m"
        assert any(advice in r for r in budget.recommendations)  # the same advice as describe


def test_the_dropin_reports_the_kubelet_timeout() -> None:
    dropin = kata_gpu_dropin(gpus=8)
    assert dropin.kubelet_timeout_s == kubelet_runtime_request_timeout(8) == 8 * 60
    assert dropin.kubelet_runtime_request_timeout == "8m"
    assert any("runtimeRequestTimeout to at least 8m" in note for note in dropin.notes)
    assert "at least\n# 8m too" in dropin.text
    assert kubelet_runtime_request_timeout(8, bar_gib=128) == 7 * 60


def test_the_agents_cdi_wait_is_raised_unless_the_caller_sets_it() -> None:
    budget = boot_budget(8, bar_gib=256)
    assert any("agent.cdi_timeout to at least 290 s" in r for r in budget.recommendations)
    assert kata_gpu_dropin().kernel_params.endswith(" agent.cdi_timeout=290")
    mine = kata_gpu_dropin(kernel_params=["agent.cdi_timeout=600"]).kernel_params
    assert mine.split().count("agent.cdi_timeout=600") == 1 and "=290" not in mine
    based = kata_gpu_dropin(base_kernel_params="agent.cdi_timeout=900").kernel_params
    assert "=290" not in based
    assert "agent.cdi_timeout" not in kata_gpu_dropin(gpus=1, pcie_root_ports=1).kernel_params


@pytest.mark.parametrize(
    ("seconds", "text"), [(420, "7m"), (450, "7m30s"), (45, "45s"), (60, "1m"), (0, "0s")]
)
def test_durations_read_as_kubernetes_writes_them(seconds: int, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpus": 0}, "gpus=0 is out of range; pass a GPU count from 1 to 8"),
        ({"gpus": 9}, "gpus=9"),
        ({"gpus": True}, "gpus=True"),
        ({"gpus": 8, "pcie_root_ports": 4}, "pcie_root_ports=4 is out of range; pass from 8"),
        ({"pcie_root_ports": KATA_MAX_PCIE_ROOT_PORTS + 1}, "to 16 (Kata's maximum)"),
        ({"memory_gib": 0}, "memory_gib=0"),
        ({"vcpus": 0}, "vcpus=0"),
        ({"timeout_s": 60}, "timeout_s=60 is out of range; pass at least 480 s"),
        ({"kernel_params": ['a="b c"']}, "parameters without quotes"),
        ({"config_path": "gpu.toml"}, "config_path='gpu.toml'"),
    ],
    ids=[
        "no gpus", "9 gpus", "bool gpus", "too few root ports", "too many root ports",
        "no memory", "no vcpus", "short timeout", "quoted param", "relative config",
    ],
)  # fmt: skip
def test_out_of_range_values_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidVmSpec) as info:
        kata_gpu_dropin(**kwargs)
    assert message in str(info.value)


def test_the_dropin_goes_in_config_d_next_to_the_configuration() -> None:
    assert str(kata_dropin_dir()) == "/opt/kata/share/defaults/kata-containers/config.d"
    dropin = kata_gpu_dropin(config_path=f"{RUNTIMES_DIR}/configuration-qemu-nvidia-gpu.toml")
    assert dropin.path == f"{RUNTIMES_DIR}/config.d/{KATA_DROPIN_NAME}"
    assert dropin.path in dropin.text
    assert not any("shared by every" in note for note in dropin.notes)


def test_the_flat_layout_warns_that_config_d_is_shared() -> None:
    (note,) = [n for n in kata_gpu_dropin().notes if "shared by every" in n]
    assert "runtimes/qemu-nvidia-gpu" in note


def test_notes_ask_for_the_base_configuration_hugepages_and_overhead_review() -> None:
    notes = kata_gpu_dropin(memory_gib=16).notes
    assert any("base configuration's kernel_params were not read" in n for n in notes)
    assert any("hugepages-1Gi" in n for n in notes)
    assert any("re-check the overhead" in n for n in notes)
    quiet = kata_gpu_dropin(base_kernel_params="", hugepages=False).notes
    assert not any("kernel_params were not read" in n or "hugepages-1Gi" in n for n in quiet)


def test_effective_kernel_params_follow_katas_drop_in_order() -> None:
    base = '[hypervisor.qemu]\nkernel_params = "a=1"\n'
    other = "[runtime]\nenable_debug = true\n"
    later = '[hypervisor.qemu]\nkernel_params = "a=1 https_proxy=x"\n'
    assert effective_kernel_params([base]) == "a=1"
    assert effective_kernel_params([base, other]) == "a=1"
    assert effective_kernel_params([base, later, other]) == "a=1 https_proxy=x"
    assert effective_kernel_params([other]) is None
    assert effective_kernel_params([]) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[hypervisor.qemu\n", "not valid TOML"),
        ("[hypervisor.qemu]\nkernel_params = 1\n", "not a string"),
    ],
    ids=["not toml", "not a string"],
)
def test_effective_kernel_params_refuse_broken_files(text: str, message: str) -> None:
    with pytest.raises(RuntimeConfigError, match=message):
        effective_kernel_params([text], source="base.toml")

"""What importing the node agent's light parts loads: the control plane imports the CDI names
(``gpucaas.cdi``) and the unhealthy-GPU annotation (``gpucaas.node.health``), so neither may
pull in gRPC, YAML or the Kubernetes client; only the device plugin loads gRPC."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _loaded_by(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return {name.split(".")[0] for name in out.split()}


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        ("import gpucaas.cdi", {"grpc", "yaml", "lightkube"}),
        ("import gpucaas.node", {"grpc", "yaml", "lightkube", "prometheus_client"}),
        ("import gpucaas.node.health", {"grpc", "yaml", "lightkube", "prometheus_client"}),
        (
            "import gpucaas.node.discovery, gpucaas.node.modulemap, gpucaas.node.vfio",
            {"grpc", "yaml", "lightkube"},
        ),
    ],
    ids=["cdi", "node", "health", "discovery-modulemap-vfio"],
)
def test_light_parts_load_no_heavy_machinery(statement: str, forbidden: set[str]) -> None:
    loaded = _loaded_by(statement) & forbidden
    assert not loaded, f"{statement!r} loads {sorted(loaded)}"


def test_the_device_plugin_loads_grpc() -> None:
    assert "grpc" in _loaded_by("import gpucaas.node.deviceplugin")

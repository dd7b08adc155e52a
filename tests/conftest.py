"""Shared fixtures.

The shared cluster traces are read only through ``GPUCAAS_DATA`` (the Makefile points it at
``../shared/data``); tests that need them skip, saying how to get them, when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data_dir() -> Path | None:
    root = Path(os.environ.get("GPUCAAS_DATA", DEFAULT_DATA))
    return root if root.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    """The shared trace folder, or a skip that says how to provide it."""
    root = shared_data_dir()
    if root is None:
        pytest.skip(
            f"shared trace data not found at {os.environ.get('GPUCAAS_DATA', DEFAULT_DATA)}; "
            "set GPUCAAS_DATA to a copy of shared/data (alibaba-gpu-v2023/...)"
        )
    return root


@pytest.fixture
def default_trace(shared_data: Path) -> Path:
    path = shared_data / "alibaba-gpu-v2023" / "openb_pod_list_default.csv"
    if not path.is_file():
        pytest.skip(f"{path} is missing; set GPUCAAS_DATA to a full copy of shared/data")
    return path

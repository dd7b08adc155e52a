"""Helpers shared by the Kubernetes end-to-end tests and their fixtures."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from lightkube import ApiError, Client

NODES = 100
GPU = "nvidia.com/gpu"
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 90.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def delete_if_exists(kube: Client, res: Any, name: str, namespace: str | None = None) -> None:
    try:
        kube.delete(res, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code != 404:
            raise

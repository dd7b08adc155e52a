"""Helpers shared by the Kubernetes end-to-end tests and their fixtures."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from lightkube import ApiError, Client
from lightkube.models.core_v1 import PodSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod

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


# lightkube types every field of an object as optional; the API server sets those the tests
# read. These give them typed, failing the test (as reading them would) where one is missing.


class HasMetadata(Protocol):
    @property
    def metadata(self) -> ObjectMeta | None: ...


def meta(obj: HasMetadata) -> ObjectMeta:
    assert obj.metadata is not None, obj
    return obj.metadata


def labels_of(obj: HasMetadata) -> dict[str, str]:
    got = meta(obj).labels
    assert got is not None, obj
    return got


def annotations_of(obj: HasMetadata) -> dict[str, str]:
    got = meta(obj).annotations
    assert got is not None, obj
    return got


def namespaced_name(obj: HasMetadata) -> tuple[str, str]:
    """(namespace, name) of a namespaced object."""
    m = meta(obj)
    assert m.namespace is not None and m.name is not None, obj
    return m.namespace, m.name


def pod_spec(pod: Pod) -> PodSpec:
    assert pod.spec is not None, pod
    return pod.spec

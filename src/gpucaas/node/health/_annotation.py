"""The node annotation that tells the control plane which of this node's GPUs are unhealthy:
``gpucaas.io/unhealthy-gpus`` (module IDs, comma-separated).

Why: the kubelet learns GPU health from the device plugin (ListAndWatch) and only publishes a
*count* (``status.allocatable``). gpucaas places partitions itself, so it must know *which*
GPUs are out: without this, it would choose a partition holding a failed GPU while the
kubelet hands the pod other devices (the device plugin never offers an unhealthy one), and the
two views drift apart; an 8-GPU container would fail kubelet admission. The control plane's
Kubernetes backend skips the GPUs this annotation names.

Standard library only: the control plane imports it without the node agent's machinery.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

UNHEALTHY_ANNOTATION = "gpucaas.io/unhealthy-gpus"
"""Module IDs of a node's unhealthy GPUs, comma-separated in ascending order (e.g. "3,5");
absent when all are healthy. Written by the node agent, read by the control plane."""


def unhealthy_annotation_patch(modules: Iterable[int]) -> dict[str, object]:
    """The merge patch that sets the annotation to ``modules`` (None removes it)."""
    ids = sorted({int(m) for m in modules})
    value = ",".join(str(m) for m in ids) if ids else None
    return {"metadata": {"annotations": {UNHEALTHY_ANNOTATION: value}}}


def parse_unhealthy_annotation(annotations: Mapping[str, str] | None) -> tuple[int, ...]:
    """The module IDs an annotation value names; malformed entries are ignored."""
    text = (annotations or {}).get(UNHEALTHY_ANNOTATION, "")
    return tuple(sorted({int(x) for x in text.split(",") if x.strip().isdigit()}))

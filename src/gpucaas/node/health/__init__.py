"""GPU health on this node, and telling the control plane about it.

* the health source, :class:`NodeHealth` (vfio-pci binding, the VFIO group node, the PCI
  config space, the fabric's failed devices), polled by a :class:`HealthTracker` that
  remembers the last pass and reports changes;
* the node annotation :data:`UNHEALTHY_ANNOTATION` that names the unhealthy GPUs' module IDs
  (:func:`unhealthy_annotation_patch`, :func:`parse_unhealthy_annotation`), written through
  the API server by :class:`NodeAnnotationReporter`.

No gRPC here, and lightkube only when a reporter is built: the control plane imports the
annotation's format from this package.
"""

from gpucaas.errors import own_errors

from ._annotation import (
    UNHEALTHY_ANNOTATION,
    parse_unhealthy_annotation,
    unhealthy_annotation_patch,
)
from ._checks import FabricFailures, NodeHealth, StillOnVfio
from ._reporter import NodeAnnotationReporter
from ._tracker import HealthTracker

__all__ = [
    "UNHEALTHY_ANNOTATION",
    "FabricFailures",
    "HealthTracker",
    "NodeAnnotationReporter",
    "NodeHealth",
    "StillOnVfio",
    "parse_unhealthy_annotation",
    "unhealthy_annotation_patch",
]

own_errors(globals())

"""The gpucaas error tree, grouped by what the caller can do about an error.

::

    GpucaasError
    ├── InvalidRequest       fix your input (HTTP 4xx); e.g. placement.NoFit, topology.UnknownModel
    ├── Conflict             the state changed under you; re-read and retry
    ├── Unavailable          retry later, or call the operator
    └── MisuseError          a bug in the caller (also a RuntimeError)

Each package defines its leaves in its ``_errors.py``. Errors keep structured attributes
and build their message in ``__str__``, so an API can map them to JSON without parsing text.
"""

from __future__ import annotations

__all__ = ["Conflict", "GpucaasError", "InvalidRequest", "MisuseError", "Unavailable"]


class GpucaasError(Exception):
    """Base of every error gpucaas raises on purpose."""


class InvalidRequest(GpucaasError):
    """The input was wrong; the message says which value and what to do."""


class Conflict(GpucaasError):
    """The state changed under the caller (e.g. a GPU is already in use)."""


class Unavailable(GpucaasError):
    """A dependency is not ready or not reachable; retry, or call the operator."""


class MisuseError(GpucaasError, RuntimeError):
    """The caller broke a contract of the API (a bug, not bad user input)."""

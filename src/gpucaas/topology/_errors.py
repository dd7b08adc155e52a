"""Errors of the topology package.

::

    InvalidRequest
    ├── ModelError        a board model file is invalid (names the file and the field)
    ├── UnknownModel      no board model by that name
    ├── UnknownPartition  no partition with that id in the model
    ├── NotAPartition     a GPU set that is no partition of the model
    └── SizeOutOfRange    a GPU count no partition of the model can hold
"""

from __future__ import annotations

from collections.abc import Sequence

from gpucaas.errors import InvalidRequest, errorclass

from ._types import format_module_ids


@errorclass
class ModelError(InvalidRequest):
    """A board model file is invalid."""

    template = "invalid board model {path}: field {field!r}: {reason}"
    path: str
    field: str
    reason: str


@errorclass
class UnknownModel(InvalidRequest):
    """No board model has that name or alias."""

    template = "unknown board model {name!r}; known models: {known:, }"
    name: str
    known: Sequence[str]

    def __post_init__(self) -> None:
        self.known = tuple(self.known)


@errorclass
class UnknownPartition(InvalidRequest):
    """The model has no partition with that id."""

    template = (
        "board model {model} has no partition {partition_id}; "
        "run 'gpucaas topology show {model}' for its table"
    )
    model: str
    partition_id: int


@errorclass
class NotAPartition(InvalidRequest):
    """A GPU set that is not exactly one partition of the model (Fabric Manager refuses it)."""

    template = (
        "GPUs {gpus} are not a partition of board model {model}; a VM may only get a GPU set "
        "that equals one partition (see 'gpucaas topology show {model}')"
    )
    model: str
    module_ids: Sequence[int]

    def __post_init__(self) -> None:
        self.module_ids = tuple(self.module_ids)

    @property
    def gpus(self) -> str:
        return format_module_ids(self.module_ids) or "(none)"


@errorclass
class SizeOutOfRange(InvalidRequest):
    """A GPU count that no partition of the model can hold."""

    template = (
        "a request for {gpus} GPUs cannot be placed on board model {model}: its partitions "
        "hold {sizes:, } GPUs; ask for 1 to {largest} GPUs"
    )
    model: str
    gpus: int
    sizes: Sequence[int]

    def __post_init__(self) -> None:
        self.sizes = tuple(self.sizes)

    @property
    def largest(self) -> int:
        return max(self.sizes)

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

from gpucaas.errors import InvalidRequest

from ._types import format_module_ids


class ModelError(InvalidRequest):
    """A board model file is invalid."""

    def __init__(self, path: str, field: str, reason: str) -> None:
        super().__init__(path, field, reason)
        self.path = path
        self.field = field
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid board model {self.path}: field {self.field!r}: {self.reason}"


class UnknownModel(InvalidRequest):
    """No board model has that name or alias."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = tuple(known)

    def __str__(self) -> str:
        return f"unknown board model {self.name!r}; known models: {', '.join(self.known)}"


class UnknownPartition(InvalidRequest):
    """The model has no partition with that id."""

    def __init__(self, model: str, partition_id: int) -> None:
        super().__init__(model, partition_id)
        self.model = model
        self.partition_id = partition_id

    def __str__(self) -> str:
        return (
            f"board model {self.model} has no partition {self.partition_id}; "
            f"run 'gpucaas topology show {self.model}' for its table"
        )


class NotAPartition(InvalidRequest):
    """A GPU set that is not exactly one partition of the model (Fabric Manager refuses it)."""

    def __init__(self, model: str, module_ids: Sequence[int]) -> None:
        super().__init__(model, tuple(module_ids))
        self.model = model
        self.module_ids = tuple(module_ids)

    def __str__(self) -> str:
        return (
            f"GPUs {format_module_ids(self.module_ids) or '(none)'} are not a partition of "
            f"board model {self.model}; a VM may only get a GPU set that equals one partition "
            f"(see 'gpucaas topology show {self.model}')"
        )


class SizeOutOfRange(InvalidRequest):
    """A GPU count that no partition of the model can hold."""

    def __init__(self, model: str, gpus: int, sizes: Sequence[int]) -> None:
        super().__init__(model, gpus)
        self.model = model
        self.gpus = gpus
        self.sizes = tuple(sizes)

    def __str__(self) -> str:
        return (
            f"a request for {self.gpus} GPUs cannot be placed on board model {self.model}: "
            f"its partitions hold {', '.join(map(str, self.sizes))} GPUs; ask for 1 to "
            f"{max(self.sizes)} GPUs"
        )

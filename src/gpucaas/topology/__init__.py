"""Board topology: HGX board models, their Fabric Manager partition tables, bitmask lookups.

Pure: no I/O beyond reading the shipped model files at import. A model file that does not
validate makes this import fail with a :class:`ModelError` naming the file and the field.
"""

from gpucaas.errors import own_errors

from ._errors import ModelError, NotAPartition, SizeOutOfRange, UnknownModel, UnknownPartition
from ._loader import ModelRegistry, load_model_file, load_shipped_models, parse_model
from ._model import NO_PARTITION, Bars, BoardModel, GpuDevice, NvSwitch, Partition
from ._types import GpuMask, ModuleId, PartitionId, format_module_ids, mask_of, module_ids_of

MODELS = ModelRegistry(load_shipped_models())
"""The shipped board models, loaded and validated at import."""


def get_model(name: str) -> BoardModel:
    """The shipped model with this name or alias. Raises :class:`UnknownModel`."""
    return MODELS.get(name)


__all__ = [
    "MODELS",
    "NO_PARTITION",
    "Bars",
    "BoardModel",
    "GpuDevice",
    "GpuMask",
    "ModelError",
    "ModelRegistry",
    "ModuleId",
    "NotAPartition",
    "NvSwitch",
    "Partition",
    "PartitionId",
    "SizeOutOfRange",
    "UnknownModel",
    "UnknownPartition",
    "format_module_ids",
    "get_model",
    "load_model_file",
    "load_shipped_models",
    "mask_of",
    "module_ids_of",
    "parse_model",
]

own_errors(globals())

"""Fabric control: Fabric Manager partitions of one board, behind one small interface.

Backends: :class:`SimulatedFabric` (in-process model, for tests and the embedded default)
and :class:`NvfmLibrary` (NVIDIA's libnvfm through ctypes, for production).
"""

from gpucaas.errors import own_errors

from ._address import DEFAULT_FM_PORT, AddressType, FmAddress, parse_address
from ._api import FabricManager
from ._controller import ControllerStatus, FabricController
from ._errors import (
    ERROR_FOR_CODE,
    MEANING,
    FabricAddressError,
    FabricBadRequest,
    FabricManagerDown,
    FabricManagerError,
    FabricManagerFailure,
    FabricManagerNotReady,
    FabricNotShared,
    FabricStateError,
    FabricVersionMismatch,
    FmControllerDown,
    FmControllerRefused,
    FMReturn,
    NvfmLibraryMissing,
    PartitionInUse,
    PartitionNotActive,
    check,
)
from ._libnvfm import NvfmLibrary
from ._remote import DEFAULT_CONTROLLER_SOCKET, RemoteFabric
from ._server import ControllerDaemon, ControllerMetrics, run_until_signalled, serve_controller
from ._sim import REPLAY_WINDOW_S, SimulatedFabric
from ._types import FailedDevice, FailedDevices, PartitionGpu, PartitionInfo
from ._wire import map_grpc_errors

__all__ = [
    "DEFAULT_CONTROLLER_SOCKET",
    "DEFAULT_FM_PORT",
    "ERROR_FOR_CODE",
    "MEANING",
    "REPLAY_WINDOW_S",
    "AddressType",
    "ControllerDaemon",
    "ControllerMetrics",
    "ControllerStatus",
    "FMReturn",
    "FabricAddressError",
    "FabricBadRequest",
    "FabricController",
    "FabricManager",
    "FabricManagerDown",
    "FabricManagerError",
    "FabricManagerFailure",
    "FabricManagerNotReady",
    "FabricNotShared",
    "FabricStateError",
    "FabricVersionMismatch",
    "FailedDevice",
    "FailedDevices",
    "FmAddress",
    "FmControllerDown",
    "FmControllerRefused",
    "NvfmLibrary",
    "NvfmLibraryMissing",
    "PartitionGpu",
    "PartitionInUse",
    "PartitionInfo",
    "PartitionNotActive",
    "RemoteFabric",
    "SimulatedFabric",
    "check",
    "map_grpc_errors",
    "parse_address",
    "run_until_signalled",
    "serve_controller",
]

own_errors(globals())

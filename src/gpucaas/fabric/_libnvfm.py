"""The production Fabric Manager backend: a ctypes binding to NVIDIA's ``libnvfm.so``.

Why it exists: Fabric Manager's only client API is the C library from the FM SDK
(``libnvfm.so.1``; its version must match the daemon's). Binding it with ctypes keeps
gpucaas free of a compiled extension and lets one Python process drive a board's FM in the
service VM. The structs below follow the published ``nv_fm_types.h`` field by field
(x86-64 layout, version stamp ``sizeof(struct) | ver << 24``, as ``MAKE_FM_PARAM_VERSION``
defines it); ``tests/fabric/test_libnvfm.py`` pins every size and offset against the
published values and against a C compiler's view of the same declarations.

What it refuses to do:

- guess: every non-SUCCESS ``fmReturn_t`` becomes the :class:`FabricManagerError` leaf
  that :func:`~gpucaas.fabric._errors.check` maps it to; nothing is retried here;
- read past FM's fixed arrays: a reply whose counts exceed them (more than 64 partitions,
  16 GPUs, 12 NVSwitches or 64 ports) is rejected as a GENERIC_ERROR failure instead of
  being clamped silently;
- resolve conflicts: activating an overlapping partition fails with
  :class:`PartitionInUse`, as in FM; deactivating overlaps is the caller's decision;
- bind the deprecated v1 connect struct, or the VF and unsupported-partition calls, which
  shared-NVSwitch mode on HGX does not need.

Every INET address is passed to ``fmConnect`` as ``a.b.c.d:port`` with the port spelled
out (6666 when none was given): ``nv_fm_types.h`` documents addressInfo for
``NV_FM_API_ADDR_TYPE_INET`` as ``<ipv4>:<port_number>``, and ``nv_fm_agent.h`` says a bare
``x.x.x.x`` means the default port, so the explicit form is correct for every library
release and leaves nothing to the library's parser.
"""

from __future__ import annotations

import ctypes
import enum
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from gpucaas.errors import InvalidRequest, MisuseError
from gpucaas.topology import ModuleId, PartitionId

from ._address import AddressType, FmAddress, parse_address
from ._errors import (
    FabricAddressError,
    FabricBadRequest,
    FabricManagerFailure,
    FMReturn,
    NvfmLibraryMissing,
    check,
)
from ._types import FailedDevice, FailedDevices, PartitionGpu, PartitionInfo

__all__ = [
    "ACTIVATED_LIST_VERSION",
    "CONNECT_PARAMS_VERSION",
    "DEFAULT_LIBRARY",
    "FAILED_DEVICES_VERSION",
    "FM_DEVICE_PCI_BUS_ID_BUFFER_SIZE",
    "FM_MAX_FABRIC_PARTITIONS",
    "FM_MAX_NUM_GPUS",
    "FM_MAX_NUM_NVLINK_PORTS",
    "FM_MAX_NUM_NVSWITCHES",
    "FM_MAX_STR_LENGTH",
    "FM_UUID_BUFFER_SIZE",
    "PARTITION_LIST_VERSION",
    "FmActivatedFabricPartitionListV1",
    "FmConnectParamsV2",
    "FmFabricPartitionGpuInfo",
    "FmFabricPartitionInfo",
    "FmFabricPartitionListV2",
    "FmNvlinkFailedDeviceInfo",
    "FmNvlinkFailedDevicesV1",
    "NvfmLibrary",
    "version_of",
]

logger = logging.getLogger(__name__)

# -- the published ABI (nv_fm_types.h) ---------------------------------------------------

FM_MAX_STR_LENGTH: Final = 256
"""Size of ``fmConnectParams_v2.addressInfo``, NUL included."""
FM_UUID_BUFFER_SIZE: Final = 80
FM_DEVICE_PCI_BUS_ID_BUFFER_SIZE: Final = 32
FM_MAX_NUM_GPUS: Final = 16
"""GPUs per partition, and GPUs in the failed-devices list."""
FM_MAX_NUM_NVSWITCHES: Final = 12
FM_MAX_FABRIC_PARTITIONS: Final = 64
FM_MAX_NUM_NVLINK_PORTS: Final = 64

_uint = ctypes.c_uint


class FmConnectParamsV2(ctypes.Structure):
    """``fmConnectParams_v2`` (272 bytes); stamped with version 2."""

    _fields_ = [
        ("version", _uint),
        ("addressInfo", ctypes.c_char * FM_MAX_STR_LENGTH),
        ("timeoutMs", _uint),
        ("addressIsUnixSocket", _uint),  # deprecated, but older libraries read only this
        ("addressType", ctypes.c_int),  # enum nvFmApiAddrTypes: int-sized
    ]


class FmFabricPartitionGpuInfo(ctypes.Structure):
    """``fmFabricPartitionGpuInfo_t`` (128 bytes)."""

    _fields_ = [
        ("physicalId", _uint),
        ("uuid", ctypes.c_char * FM_UUID_BUFFER_SIZE),
        ("pciBusId", ctypes.c_char * FM_DEVICE_PCI_BUS_ID_BUFFER_SIZE),
        ("numNvLinksAvailable", _uint),
        ("maxNumNvLinks", _uint),
        ("nvlinkLineRateMBps", _uint),
    ]


class FmFabricPartitionInfo(ctypes.Structure):
    """``fmFabricPartitionInfo_t`` (2,060 bytes)."""

    _fields_ = [
        ("partitionId", _uint),
        ("isActive", _uint),
        ("numGpus", _uint),
        ("gpuInfo", FmFabricPartitionGpuInfo * FM_MAX_NUM_GPUS),
    ]


class FmFabricPartitionListV2(ctypes.Structure):
    """``fmFabricPartitionList_v2`` (131,852 bytes); the header stamps it with version 1."""

    _fields_ = [
        ("version", _uint),
        ("numPartitions", _uint),
        ("maxNumPartitions", _uint),
        ("partitionInfo", FmFabricPartitionInfo * FM_MAX_FABRIC_PARTITIONS),
    ]


class FmActivatedFabricPartitionListV1(ctypes.Structure):
    """``fmActivatedFabricPartitionList_v1`` (264 bytes); version 1."""

    _fields_ = [
        ("version", _uint),
        ("numPartitions", _uint),
        ("partitionIds", _uint * FM_MAX_FABRIC_PARTITIONS),
    ]


class FmNvlinkFailedDeviceInfo(ctypes.Structure):
    """``fmNvlinkFailedDeviceInfo_t`` (372 bytes)."""

    _fields_ = [
        ("uuid", ctypes.c_char * FM_UUID_BUFFER_SIZE),
        ("pciBusId", ctypes.c_char * FM_DEVICE_PCI_BUS_ID_BUFFER_SIZE),
        ("numPorts", _uint),
        ("portNum", _uint * FM_MAX_NUM_NVLINK_PORTS),
    ]


class FmNvlinkFailedDevicesV1(ctypes.Structure):
    """``fmNvlinkFailedDevices_v1`` (10,428 bytes); version 1."""

    _fields_ = [
        ("version", _uint),
        ("numGpus", _uint),
        ("numSwitches", _uint),
        ("gpuInfo", FmNvlinkFailedDeviceInfo * FM_MAX_NUM_GPUS),
        ("switchInfo", FmNvlinkFailedDeviceInfo * FM_MAX_NUM_NVSWITCHES),
    ]


def version_of(struct_type: type[ctypes.Structure], ver: int) -> int:
    """``MAKE_FM_PARAM_VERSION(struct_type, ver)``: the size in the low 24 bits, ``ver`` above."""
    return ctypes.sizeof(struct_type) | (ver << 24)


CONNECT_PARAMS_VERSION: Final = version_of(FmConnectParamsV2, 2)
"""``fmConnectParams_version`` (``fmConnectV2Params_version2``)."""
PARTITION_LIST_VERSION: Final = version_of(FmFabricPartitionListV2, 1)
"""``fmFabricPartitionList_version``: the ``_v2`` struct is stamped with version 1."""
ACTIVATED_LIST_VERSION: Final = version_of(FmActivatedFabricPartitionListV1, 1)
"""``fmActivatedFabricPartitionList_version``."""
FAILED_DEVICES_VERSION: Final = version_of(FmNvlinkFailedDevicesV1, 1)
"""``fmNvlinkFailedDevices_version``."""

# -- loading and binding ------------------------------------------------------------------

DEFAULT_LIBRARY: Final = "libnvfm.so.1"
"""The runtime SONAME. When it is the one asked for and cannot be loaded, the unversioned
``libnvfm.so`` symlink that nvidia-fabricmanager-dev installs is tried next."""

_FALLBACK_LIBRARIES: Final = ("libnvfm.so",)

_HANDLE = ctypes.c_void_p
_SIGNATURES: Final[dict[str, tuple[Any, ...]]] = {
    "fmLibInit": (),
    "fmLibShutdown": (),
    "fmConnect": (ctypes.POINTER(FmConnectParamsV2), ctypes.POINTER(_HANDLE)),
    "fmDisconnect": (_HANDLE,),
    "fmGetSupportedFabricPartitions": (_HANDLE, ctypes.POINTER(FmFabricPartitionListV2)),
    "fmActivateFabricPartition": (_HANDLE, _uint),
    "fmDeactivateFabricPartition": (_HANDLE, _uint),
    "fmSetActivatedFabricPartitions": (
        _HANDLE,
        ctypes.POINTER(FmActivatedFabricPartitionListV1),
    ),
    "fmGetNvlinkFailedDevices": (_HANDLE, ctypes.POINTER(FmNvlinkFailedDevicesV1)),
}
"""Every call this module makes, with its parameter types; each returns ``fmReturn_t``."""

_INSTALL_HINT = (
    "install the Fabric Manager SDK (nvidia-fabricmanager-dev, the same version as the "
    "nv-fabricmanager daemon) or pass --nvfm-library PATH"
)

_Call = Callable[..., int]


def _load(library: str | Path) -> tuple[ctypes.CDLL, str]:
    """dlopen ``library`` (or, for the default name, its fallbacks). Raises NvfmLibraryMissing."""
    name = str(library)
    candidates = (name, *_FALLBACK_LIBRARIES) if name == DEFAULT_LIBRARY else (name,)
    reasons: list[str] = []
    for candidate in candidates:
        try:
            return ctypes.CDLL(candidate), candidate
        except OSError as exc:
            reasons.append(str(exc))
    raise NvfmLibraryMissing(
        f"cannot load the Fabric Manager library {' or '.join(candidates)} ({'; '.join(reasons)})",
        _INSTALL_HINT,
    )


def _bind(lib: ctypes.CDLL, name: str) -> dict[str, _Call]:
    """Look up every call and set its argtypes/restype. Raises NvfmLibraryMissing on a
    missing one."""
    calls: dict[str, _Call] = {}
    for symbol, argtypes in _SIGNATURES.items():
        try:
            function = getattr(lib, symbol)
        except AttributeError:
            raise NvfmLibraryMissing(
                f"{name} has no {symbol}, so it is not a libnvfm this binding supports "
                "(fmConnectParams_v2 needs a release with VSOCK support)",
                _INSTALL_HINT,
            ) from None
        function.argtypes = list(argtypes)
        function.restype = ctypes.c_int
        calls[symbol] = function
    return calls


@dataclass
class _LibraryUse:
    """How many open :class:`NvfmLibrary` instances share one loaded libnvfm."""

    users: int = 0
    owns_init: bool = False
    """True when our fmLibInit succeeded, so the last user calls fmLibShutdown. False when
    something else in the process had initialised it (fmLibInit said IN_USE): that caller
    owns the shutdown, and a shutdown from us would cut its connections."""


_USES: dict[int, _LibraryUse] = {}
"""Per dlopen handle. libnvfm keeps one global state per process, and fmLibShutdown closes
every connection made through it, so init and shutdown are reference-counted here."""
_USES_LOCK = threading.Lock()


def _acquire(lib: ctypes.CDLL, calls: dict[str, _Call], board: str | None) -> None:
    with _USES_LOCK:
        use = _USES.setdefault(lib._handle, _LibraryUse())
        if use.users == 0:
            code = int(calls["fmLibInit"]())
            if code == FMReturn.IN_USE:
                use.owns_init = False  # initialised elsewhere in this process: fine
            else:
                check(code, "initialise libnvfm", board=board)
                use.owns_init = True
        use.users += 1


def _release(lib: ctypes.CDLL, calls: dict[str, _Call]) -> None:
    with _USES_LOCK:
        use = _USES[lib._handle]
        use.users -= 1
        if use.users == 0 and use.owns_init:
            use.owns_init = False
            code = int(calls["fmLibShutdown"]())
            if code != FMReturn.SUCCESS:
                logger.warning("fmLibShutdown returned %d; ignored", code)


# -- decoding -------------------------------------------------------------------------------


def _text(raw: bytes) -> str:
    """A fixed char[] field as text: UTF-8 up to the first NUL, undecodable bytes replaced."""
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


class _State(enum.Enum):
    OPEN = "open"
    """Connected: FM calls are allowed."""
    CLOSED = "closed"
    """Disconnected (or never connected): every FM call is a MisuseError."""


_UINT_MAX: Final = 2**32 - 1
_DEACTIVATE: Final = "deactivate"


class NvfmLibrary:
    """One board's Fabric Manager, reached through NVIDIA's ``libnvfm.so``.

    Implements :class:`~gpucaas.fabric.FabricManager`. Construction loads the library,
    initialises it (shared with other instances in the process) and connects; use it as a
    context manager or call :meth:`close`. Not thread-safe per instance.

    Parameters:
        address: ``a.b.c.d[:port]`` (default port 6666), a unix socket path
            (``/…`` or ``unix:…``), ``vsock:CID:PORT``, or a parsed :class:`FmAddress`.
        library: the shared object to dlopen. The default SONAME falls back to
            ``libnvfm.so``; an explicit path is used as given.
        timeout_ms: how long ``fmConnect`` waits for FM, 1 ms or more.
        board: the board's name, carried into every error.

    Raises:
        FabricAddressError: the address is none of the accepted forms.
        InvalidRequest: ``timeout_ms`` is out of range.
        NvfmLibraryMissing: the library cannot be loaded or lacks a call this binding needs.
        FabricManagerError: fmLibInit or fmConnect failed; CONNECTION_NOT_VALID and TIMEOUT
            raise :class:`FabricManagerDown`, VERSION_MISMATCH
            :class:`FabricVersionMismatch`.
    """

    def __init__(
        self,
        address: str | FmAddress = "127.0.0.1",
        *,
        library: str | Path = DEFAULT_LIBRARY,
        timeout_ms: int = 5000,
        board: str | None = None,
    ) -> None:
        self._state = _State.CLOSED
        self.address = address if isinstance(address, FmAddress) else parse_address(address)
        self.board = board
        if not 0 < timeout_ms <= _UINT_MAX:
            raise InvalidRequest(
                f"Fabric Manager connect timeout {timeout_ms} ms is out of range; "
                f"give 1 to {_UINT_MAX} ms"
            )
        self.timeout_ms = timeout_ms
        params = self._connect_params()
        self._lib, self.library = _load(library)
        self._calls = _bind(self._lib, self.library)
        _acquire(self._lib, self._calls, board)
        try:
            self._handle = _HANDLE()
            code = int(self._calls["fmConnect"](ctypes.byref(params), ctypes.byref(self._handle)))
            self._check(code, f"connect to Fabric Manager at {self.address}")
        except BaseException:
            _release(self._lib, self._calls)
            raise
        self._state = _State.OPEN

    def _connect_params(self) -> FmConnectParamsV2:
        info = self.address.info.encode("utf-8")
        if len(info) >= FM_MAX_STR_LENGTH:
            raise FabricAddressError(
                str(self.address), f"longer than {FM_MAX_STR_LENGTH - 1} bytes in UTF-8"
            )
        params = FmConnectParamsV2()
        params.version = CONNECT_PARAMS_VERSION
        params.addressInfo = info
        params.timeoutMs = self.timeout_ms
        # Libraries from before addressType read only this flag (and split an INET
        # address at ':' only when it is 0), so it is kept in step with addressType.
        params.addressIsUnixSocket = int(self.address.kind is AddressType.UNIX)
        params.addressType = int(self.address.kind)
        return params

    # -- FabricManager ------------------------------------------------------------------

    def list_partitions(self) -> tuple[PartitionInfo, ...]:
        """Every supported partition, in FM's order, with its GPUs and active state.

        Raises:
            FabricManagerNotReady: FM is initialising, or waits for :meth:`set_activated`.
            FabricNotShared: FM is not in shared-NVSwitch mode.
            FabricVersionMismatch: libnvfm and the daemon are different releases.
            FabricManagerDown: the connection is gone.
            FabricManagerFailure: any other code, or a reply that overruns FM's arrays.
            MisuseError: this instance has been closed.
        """
        operation = "list partitions"
        reply = FmFabricPartitionListV2()
        reply.version = PARTITION_LIST_VERSION
        self._check(self._call("fmGetSupportedFabricPartitions", ctypes.byref(reply)), operation)
        count = self._count(reply.numPartitions, FM_MAX_FABRIC_PARTITIONS, "partitions", operation)
        partitions: list[PartitionInfo] = []
        seen: set[int] = set()
        for raw in reply.partitionInfo[:count]:
            pid = int(raw.partitionId)
            if pid in seen:
                raise self._bad_reply(operation, f"partition id {pid} listed twice")
            seen.add(pid)
            gpus = self._count(raw.numGpus, FM_MAX_NUM_GPUS, f"GPUs in partition {pid}", operation)
            partitions.append(
                PartitionInfo(
                    id=PartitionId(pid),
                    active=bool(raw.isActive),
                    gpus=tuple(_partition_gpu(gpu) for gpu in raw.gpuInfo[:gpus]),
                )
            )
        return tuple(partitions)

    def activate(self, partition_id: int) -> None:
        """Activate a partition. Not idempotent, as in FM.

        Raises:
            PartitionInUse: it is already active, or overlaps an active partition.
            FabricBadRequest: FM does not know the id (or it is no 32-bit unsigned number).
            FabricManagerFailure: NVLINK_ERROR and the other fabric codes.
            FabricManagerNotReady, FabricNotShared, FabricManagerDown: as for
                :meth:`list_partitions`.
            MisuseError: this instance has been closed.
        """
        self._partition_call("fmActivateFabricPartition", "activate", partition_id)

    def deactivate(self, partition_id: int) -> None:
        """Deactivate a partition. Not idempotent, as in FM.

        Raises:
            PartitionNotActive: the partition is already inactive (FM's UNINITIALIZED).
            FabricBadRequest: FM does not know the id (or it is no 32-bit unsigned number).
            FabricManagerNotReady, FabricNotShared, FabricManagerDown,
                FabricManagerFailure: as for :meth:`list_partitions`.
            MisuseError: this instance has been closed.
        """
        self._partition_call("fmDeactivateFabricPartition", _DEACTIVATE, partition_id)

    def set_activated(self, partition_ids: Sequence[int]) -> None:
        """Tell a restarted FM which partitions are active; call it also with none.

        The list replaces FM's active set. FM accepts partition calls again only after it,
        and aborts if it does not come within 60 s of an FM ``--restart``.

        Raises:
            FabricBadRequest: more than 64 ids, an id that is no 32-bit unsigned number, or
                one FM does not know.
            FabricVersionMismatch, FabricManagerNotReady, FabricNotShared,
                FabricManagerDown, FabricManagerFailure: as for :meth:`list_partitions`.
            MisuseError: this instance has been closed.
        """
        operation = "set activated partitions"
        ids = list(partition_ids)
        if len(ids) > FM_MAX_FABRIC_PARTITIONS:
            raise FabricBadRequest(
                FMReturn.BADPARAM,
                operation,
                board=self.board,
                detail=f"{len(ids)} ids given; FM takes at most {FM_MAX_FABRIC_PARTITIONS}",
            )
        request = FmActivatedFabricPartitionListV1()
        request.version = ACTIVATED_LIST_VERSION
        request.numPartitions = len(ids)
        for index, pid in enumerate(ids):
            request.partitionIds[index] = self._partition_id(pid, operation)
        self._check(self._call("fmSetActivatedFabricPartitions", ctypes.byref(request)), operation)

    def failed_devices(self) -> FailedDevices:
        """GPUs and NVSwitches with failed NVLinks (FM always reports none on H100/H200).

        Raises:
            FabricNotShared: NOT_SUPPORTED, which FM also answers while it runs with
                ``--restart``.
            FabricVersionMismatch, FabricManagerNotReady, FabricManagerDown,
                FabricManagerFailure: as for :meth:`list_partitions`.
            MisuseError: this instance has been closed.
        """
        operation = "get NVLink failed devices"
        reply = FmNvlinkFailedDevicesV1()
        reply.version = FAILED_DEVICES_VERSION
        self._check(self._call("fmGetNvlinkFailedDevices", ctypes.byref(reply)), operation)
        gpus = self._count(reply.numGpus, FM_MAX_NUM_GPUS, "failed GPUs", operation)
        switches = self._count(
            reply.numSwitches, FM_MAX_NUM_NVSWITCHES, "failed NVSwitches", operation
        )
        return FailedDevices(
            gpus=tuple(self._failed_device(d, operation) for d in reply.gpuInfo[:gpus]),
            switches=tuple(self._failed_device(d, operation) for d in reply.switchInfo[:switches]),
        )

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Disconnect, and shut libnvfm down when this was its last user. Idempotent.

        Never raises for FM codes: a failed fmDisconnect is logged, since the connection
        is unusable either way.
        """
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        code = int(self._calls["fmDisconnect"](self._handle))
        if code != FMReturn.SUCCESS:
            logger.warning(
                "fmDisconnect from Fabric Manager at %s returned %d; ignored", self.address, code
            )
        _release(self._lib, self._calls)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        board = f", board={self.board!r}" if self.board else ""
        return (
            f"NvfmLibrary({str(self.address)!r}, library={self.library!r}{board}, "
            f"{self._state.value})"
        )

    # -- helpers ------------------------------------------------------------------------

    def _call(self, symbol: str, *args: Any) -> int:
        if self._state is _State.CLOSED:
            raise MisuseError(
                f"NvfmLibrary for Fabric Manager at {self.address} has been closed; open a new one"
            )
        return int(self._calls[symbol](self._handle, *args))

    def _check(self, code: int, operation: str, partition_id: int | None = None) -> None:
        # FM overloads UNINITIALIZED: on deactivate it means "already inactive", which is
        # what check() maps it to; on any other call it means libnvfm itself is not
        # initialised (fmLibShutdown ran elsewhere in this process), which is no Conflict.
        if code == FMReturn.UNINITIALIZED and operation != _DEACTIVATE:
            raise FabricManagerFailure(
                FMReturn.UNINITIALIZED,
                operation,
                partition_id=partition_id,
                board=self.board,
                detail="libnvfm says it is not initialised; was fmLibShutdown called elsewhere "
                "in this process?",
            )
        check(code, operation, partition_id=partition_id, board=self.board)

    def _partition_id(self, partition_id: int, operation: str) -> int:
        if not 0 <= partition_id <= _UINT_MAX:
            raise FabricBadRequest(
                FMReturn.BADPARAM,
                operation,
                partition_id=partition_id,
                board=self.board,
                detail=f"partition ids are 0 to {_UINT_MAX}",
            )
        return partition_id

    def _partition_call(self, symbol: str, operation: str, partition_id: int) -> None:
        pid = self._partition_id(partition_id, operation)
        self._check(self._call(symbol, pid), operation, partition_id=pid)

    def _count(self, value: int, limit: int, what: str, operation: str) -> int:
        count = int(value)
        if count > limit:
            raise self._bad_reply(operation, f"FM reported {count} {what}; its array holds {limit}")
        return count

    def _bad_reply(self, operation: str, detail: str) -> FabricManagerFailure:
        return FabricManagerFailure(
            FMReturn.GENERIC_ERROR, operation, board=self.board, detail=f"bad reply: {detail}"
        )

    def _failed_device(self, raw: FmNvlinkFailedDeviceInfo, operation: str) -> FailedDevice:
        ports = self._count(raw.numPorts, FM_MAX_NUM_NVLINK_PORTS, "failed ports", operation)
        return FailedDevice(
            uuid=_text(raw.uuid),
            pci_bus_id=_text(raw.pciBusId),
            ports=tuple(int(p) for p in raw.portNum[:ports]),
        )


def _partition_gpu(raw: FmFabricPartitionGpuInfo) -> PartitionGpu:
    return PartitionGpu(
        physical_id=ModuleId(int(raw.physicalId)),
        uuid=_text(raw.uuid),
        pci_bus_id=_text(raw.pciBusId),
        nvlinks_available=int(raw.numNvLinksAvailable),
        nvlinks_max=int(raw.maxNumNvLinks),
        nvlink_line_rate_mbps=int(raw.nvlinkLineRateMBps),
    )

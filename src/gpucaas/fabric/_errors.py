"""Fabric Manager return codes and the errors they become.

Every ``fmReturn_t`` value maps to exactly one exception class, grouped by what the caller
can do (``tests/fabric/test_fabric_errors.py`` fails if a code has no mapping), and so does
every gRPC status code an fm-controller call can end with (:func:`map_grpc_errors` in
``_wire.py``)::

    GpucaasError
    ├── InvalidRequest
    │   ├── FabricAddressError      an address that is none of the accepted forms
    │   ├── FmControllerRefused     the fm-controller refused the token (UNAUTHENTICATED)
    │   └── FabricStateError        a simulated-fabric state file that cannot be used
    ├── Refused
    │   └── FabricManagerError      FM answered with a code other than SUCCESS (exit 1)
    │       ├── FabricBadRequest        BADPARAM; a partition id or GPU set FM does not know
    │       │                           (also InvalidRequest)
    │       ├── PartitionInUse          IN_USE: already active, or overlaps an active
    │       │                           partition (also Conflict)
    │       ├── PartitionNotActive      UNINITIALIZED on deactivate: already inactive
    │       │                           (also Conflict)
    │       ├── FabricManagerNotReady   NOT_CONFIGURED / NOT_READY: FM still initialising;
    │       │                           retry (also Unavailable)
    │       ├── FabricNotShared         NOT_SUPPORTED: FM is not in shared-NVSwitch mode
    │       │                           (also Unavailable)
    │       ├── FabricVersionMismatch   VERSION_MISMATCH: libnvfm and the FM daemon differ
    │       │                           (also Unavailable)
    │       ├── FabricManagerFailure    every other code (NVLink, resource and trunk
    │       │                           errors; also Unavailable)
    │       └── FabricManagerDown       CONNECTION_NOT_VALID / TIMEOUT / cannot connect
    │           │                       (also Unreachable: exit 3)
    │           └── FmControllerDown    the fm-controller in front of FM cannot be reached
    └── Unavailable
        └── Unreachable
            └── NvfmLibraryMissing  libnvfm cannot be loaded or lacks a call we need

Each FabricManagerError carries ``code`` (an :class:`FMReturn`), ``operation``,
``partition_id`` and ``board`` and builds its message from them: what failed, FM's code
and its documented meaning, and what to do.
"""

from __future__ import annotations

import enum
from dataclasses import KW_ONLY
from pathlib import Path

from gpucaas.errors import (
    Conflict,
    InvalidRequest,
    Refused,
    Unavailable,
    Unreachable,
    errorclass,
)


class FMReturn(enum.IntEnum):
    """``fmReturn_t`` as published in nv_fm_types.h (FM_ST_*)."""

    SUCCESS = 0
    BADPARAM = -1
    GENERIC_ERROR = -2
    NOT_SUPPORTED = -3
    UNINITIALIZED = -4
    TIMEOUT = -5
    VERSION_MISMATCH = -6
    IN_USE = -7
    NOT_CONFIGURED = -8
    CONNECTION_NOT_VALID = -9
    NVLINK_ERROR = -10
    RESOURCE_BAD = -11
    RESOURCE_IN_USE = -12
    RESOURCE_NOT_IN_USE = -13
    RESOURCE_EXHAUSTED = -14
    RESOURCE_NOT_READY = -15
    PARTITION_EXISTS = -16
    PARTITION_ID_IN_USE = -17
    PARTITION_ID_NOT_IN_USE = -18
    PARTITION_NAME_IN_USE = -19
    PARTITION_NAME_NOT_IN_USE = -20
    PARTITION_ID_NAME_MISMATCH = -21
    NOT_READY = -22
    RESOURCE_USED_IN_THIS_PARTITION = -23
    RESOURCE_USED_IN_ANOTHER_PARTITION = -24
    PARTITION_MISWIRED_TRUNKS = -25
    PARTITION_INSUFFICIENT_TRUNKS = -26
    PARTITION_MISSING_SWITCHES = -27
    PARTITION_NETWORK_CONFIG_ERROR = -28
    PARTITION_ROUTE_PROGRAMMING_ERROR = -29

    @property
    def fm_name(self) -> str:
        """The C name, e.g. ``FM_ST_IN_USE``."""
        return f"FM_ST_{self.name}"


MEANING: dict[FMReturn, str] = {
    FMReturn.SUCCESS: "success",
    FMReturn.BADPARAM: "invalid parameter",
    FMReturn.GENERIC_ERROR: "unspecified internal error in Fabric Manager",
    FMReturn.NOT_SUPPORTED: "not supported: Fabric Manager is not in shared-NVSwitch mode",
    FMReturn.UNINITIALIZED: "not initialised (on deactivate: the partition is already inactive)",
    FMReturn.TIMEOUT: "the request to Fabric Manager timed out",
    FMReturn.VERSION_MISMATCH: "libnvfm and the Fabric Manager daemon are different versions",
    FMReturn.IN_USE: "the partition is already active or overlaps an active partition",
    FMReturn.NOT_CONFIGURED: "Fabric Manager is still initialising",
    FMReturn.CONNECTION_NOT_VALID: "the connection to Fabric Manager is not valid",
    FMReturn.NVLINK_ERROR: "NVLink training or link error",
    FMReturn.RESOURCE_BAD: "a resource is bad",
    FMReturn.RESOURCE_IN_USE: "a resource is in use",
    FMReturn.RESOURCE_NOT_IN_USE: "a resource is not in use",
    FMReturn.RESOURCE_EXHAUSTED: "resources are exhausted",
    FMReturn.RESOURCE_NOT_READY: "a resource is not ready",
    FMReturn.PARTITION_EXISTS: "the partition already exists",
    FMReturn.PARTITION_ID_IN_USE: "the partition id is in use",
    FMReturn.PARTITION_ID_NOT_IN_USE: "the partition id is not in use",
    FMReturn.PARTITION_NAME_IN_USE: "the partition name is in use",
    FMReturn.PARTITION_NAME_NOT_IN_USE: "the partition name is not in use",
    FMReturn.PARTITION_ID_NAME_MISMATCH: "the partition id and name do not match",
    FMReturn.NOT_READY: "Fabric Manager is not ready",
    FMReturn.RESOURCE_USED_IN_THIS_PARTITION: "a resource is used in this partition",
    FMReturn.RESOURCE_USED_IN_ANOTHER_PARTITION: "a resource is used in another partition",
    FMReturn.PARTITION_MISWIRED_TRUNKS: "the partition has miswired trunk links",
    FMReturn.PARTITION_INSUFFICIENT_TRUNKS: "the partition has too few trunk links",
    FMReturn.PARTITION_MISSING_SWITCHES: "switches of the partition are missing",
    FMReturn.PARTITION_NETWORK_CONFIG_ERROR: "partition network configuration error",
    FMReturn.PARTITION_ROUTE_PROGRAMMING_ERROR: "partition route programming error",
}


@errorclass
class FabricManagerError(Refused):
    """Fabric Manager answered with a code other than SUCCESS."""

    hint = "check the Fabric Manager log (/var/log/fabricmanager.log) in the service VM"

    code: FMReturn
    operation: str
    _: KW_ONLY
    partition_id: int | None = None
    board: str | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        self.code = FMReturn(self.code)

    def __str__(self) -> str:
        what = self.operation
        if self.partition_id is not None:
            what += f" partition {self.partition_id}"
        if self.board:
            what += f" on {self.board}"
        detail = f" ({self.detail})" if self.detail else ""
        return (
            f"{what} failed: Fabric Manager returned {self.code.fm_name} ({int(self.code)}): "
            f"{MEANING[self.code]}{detail}; {self.hint}"
        )


class FabricBadRequest(FabricManagerError, InvalidRequest):
    """BADPARAM: FM refused the parameters (e.g. an unknown partition id)."""

    hint = "run 'fmctl list' for the partition ids this board supports"


class PartitionInUse(FabricManagerError, Conflict):
    """IN_USE: the partition is already active, or overlaps an active one."""

    hint = "deactivate the overlapping partition first (only when no VM uses it)"


class PartitionNotActive(FabricManagerError, Conflict):
    """UNINITIALIZED on deactivate: the partition was already inactive."""

    hint = "nothing to do: the partition is inactive"


class FabricManagerNotReady(FabricManagerError, Unavailable):
    """NOT_CONFIGURED / NOT_READY: FM is initialising or waits for the activated set."""

    hint = (
        "retry in a few seconds; after an FM restart (--restart) the activated set must be "
        "replayed with set-activated within 60 s"
    )


class FabricNotShared(FabricManagerError, Unavailable):
    """NOT_SUPPORTED: FM runs without shared-NVSwitch multi-tenancy."""

    hint = "set FABRIC_MODE=1 in /usr/share/nvidia/nvswitch/fabricmanager.cfg and restart FM"


class FabricVersionMismatch(FabricManagerError, Unavailable):
    """VERSION_MISMATCH: the client library and the daemon are different releases."""

    hint = "install the libnvfm (nvidia-fabricmanager-dev) of the same version as the daemon"


class FabricManagerDown(FabricManagerError, Unreachable):
    """CONNECTION_NOT_VALID / TIMEOUT: FM cannot be reached."""

    hint = "check that nv-fabricmanager runs and listens on the address given"


class FmControllerDown(FabricManagerDown):
    """The fm-controller (not FM itself) cannot be reached."""

    hint = "check that `gpucaas fabric serve` runs and listens on the address given (--address)"


class FabricManagerFailure(FabricManagerError, Unavailable):
    """Any other code: NVLink, resource or trunk problems inside the fabric."""

    hint = "check the Fabric Manager log and run nvswitch-audit in the service VM"


@errorclass
class FabricAddressError(InvalidRequest):
    """An address that is none of the accepted forms."""

    template = (
        "bad Fabric Manager address {address!r}: {reason}; use a.b.c.d[:port] "
        "(default port 6666), a unix socket path, or vsock:CID:PORT"
    )
    address: str
    reason: str


@errorclass
class FabricStateError(InvalidRequest):
    """A simulated-fabric state file that cannot be used; it is left as it was."""

    template = (
        "simulated fabric state file {path} is unusable: {reason}; it was left "
        "untouched: fix or move it away to start from an empty fabric"
    )
    path: Path
    reason: str


@errorclass
class FmControllerRefused(InvalidRequest):
    """The fm-controller refused the call's token (missing or wrong)."""

    template = (
        "the fm-controller at {target} refused the request: {details}; pass the right "
        "token (--token-file)"
    )
    target: str
    details: str


@errorclass
class NvfmLibraryMissing(Unreachable):
    """libnvfm cannot be loaded, or lacks a call this binding needs: nothing reaches FM."""

    template = "{problem}; {hint}"
    problem: str
    hint: str


ERROR_FOR_CODE: dict[FMReturn, type[FabricManagerError]] = {
    FMReturn.BADPARAM: FabricBadRequest,
    FMReturn.IN_USE: PartitionInUse,
    FMReturn.UNINITIALIZED: PartitionNotActive,
    FMReturn.NOT_CONFIGURED: FabricManagerNotReady,
    FMReturn.NOT_READY: FabricManagerNotReady,
    FMReturn.NOT_SUPPORTED: FabricNotShared,
    FMReturn.VERSION_MISMATCH: FabricVersionMismatch,
    FMReturn.CONNECTION_NOT_VALID: FabricManagerDown,
    FMReturn.TIMEOUT: FabricManagerDown,
    **{
        code: FabricManagerFailure
        for code in FMReturn
        if code
        not in {
            FMReturn.SUCCESS,
            FMReturn.BADPARAM,
            FMReturn.IN_USE,
            FMReturn.UNINITIALIZED,
            FMReturn.NOT_CONFIGURED,
            FMReturn.NOT_READY,
            FMReturn.NOT_SUPPORTED,
            FMReturn.VERSION_MISMATCH,
            FMReturn.CONNECTION_NOT_VALID,
            FMReturn.TIMEOUT,
        }
    },
}
"""The exception class for every non-SUCCESS code."""


def check(
    code: int,
    operation: str,
    *,
    partition_id: int | None = None,
    board: str | None = None,
) -> None:
    """Raise the mapped :class:`FabricManagerError` unless ``code`` is SUCCESS.

    An integer that is no published ``fmReturn_t`` becomes a :class:`FabricManagerFailure`
    of GENERIC_ERROR that names the raw value; UNINITIALIZED is :class:`PartitionNotActive`
    only on deactivate.
    """
    if code == FMReturn.SUCCESS:
        return
    try:
        known = FMReturn(code)
    except ValueError:
        raise FabricManagerFailure(
            FMReturn.GENERIC_ERROR,
            operation,
            partition_id=partition_id,
            board=board,
            detail=f"unknown fmReturn_t value {code}",
        ) from None
    if known is FMReturn.UNINITIALIZED and operation != "deactivate":
        # FM overloads UNINITIALIZED: "already inactive" on deactivate, "libnvfm is not
        # initialised" on every other call, which is no conflict of the caller's making.
        raise FabricManagerFailure(
            known,
            operation,
            partition_id=partition_id,
            board=board,
            detail="libnvfm is not initialised (fmLibInit)",
        )
    raise ERROR_FOR_CODE[known](known, operation, partition_id=partition_id, board=board)

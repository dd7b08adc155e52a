"""``RemoteFabric``: the FabricManager interface, served by an fm-controller over gRPC.

This is what node agents and ``fmctl`` use by default: they never talk to Fabric Manager
directly, so every change goes through the controller that persists and replays the set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

from gpucaas.errors import InvalidRequest

from ._errors import FabricBadRequest, FMReturn
from ._types import FailedDevices, PartitionInfo
from ._wire import failed_from_pb, map_grpc_errors, partition_from_pb
from .proto import fabric_pb2 as pb
from .proto import fabric_pb2_grpc as pb_grpc

DEFAULT_CONTROLLER_SOCKET = "/run/gpucaas/fm-controller.sock"
"""Where ``gpucaas fabric serve`` listens unless told otherwise."""

_T = TypeVar("_T")


def grpc_target(address: str) -> str:
    """``/path`` or ``unix:/path`` → ``unix:/path``; ``host:port`` stays. Raises
    :class:`InvalidRequest` for anything else."""
    if address.startswith("unix:"):
        return address
    if address.startswith(("/", "./", "../")):
        return f"unix:{address}"
    host, sep, port = address.rpartition(":")
    if sep and host and port.isdigit() and 0 < int(port) < 65536:
        return address
    raise InvalidRequest(
        f"fm-controller address {address!r}: use a unix socket path (/run/…/x.sock or "
        "unix:/path) or host:port"
    )


_UINT32_MAX = 2**32 - 1


def _uint32(partition_id: int, operation: str) -> int:
    """A partition id protobuf can carry (uint32); else FabricBadRequest, as NvfmLibrary
    answers, rather than protobuf's ValueError."""
    if not 0 <= partition_id <= _UINT32_MAX:
        raise FabricBadRequest(
            FMReturn.BADPARAM,
            operation,
            partition_id=partition_id,
            detail=f"partition ids are 0 to {_UINT32_MAX}",
        )
    return partition_id


class RemoteFabric:
    """A client of one fm-controller (one board).

    Parameters:
        address: the controller's socket path or host:port.
        token: the shared token, sent as ``authorization: Bearer <token>``.
        timeout_s: deadline of each call.
    """

    def __init__(self, address: str, *, token: str | None = None, timeout_s: float = 10.0):
        self.target = grpc_target(address)
        self._channel = grpc.insecure_channel(self.target)
        self._stub = pb_grpc.FabricStub(self._channel)  # type: ignore[no-untyped-call]
        self._timeout = timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def list_partitions(self) -> tuple[PartitionInfo, ...]:
        reply = self._rpc(
            "list partitions", None, self._stub.ListPartitions, pb.ListPartitionsRequest()
        )
        return tuple(partition_from_pb(p) for p in reply.partitions)

    def activate(self, partition_id: int) -> None:
        self._rpc(
            "activate",
            partition_id,
            self._stub.Activate,
            pb.PartitionRequest(partition_id=_uint32(partition_id, "activate")),
        )

    def deactivate(self, partition_id: int) -> None:
        self._rpc(
            "deactivate",
            partition_id,
            self._stub.Deactivate,
            pb.PartitionRequest(partition_id=_uint32(partition_id, "deactivate")),
        )

    def set_activated(self, partition_ids: Sequence[int]) -> None:
        operation = "set activated partitions"
        self._rpc(
            operation,
            None,
            self._stub.SetActivated,
            pb.SetActivatedRequest(partition_ids=[_uint32(p, operation) for p in partition_ids]),
        )

    def failed_devices(self) -> FailedDevices:
        reply = self._rpc(
            "get NVLink failed devices", None, self._stub.FailedDevices, pb.FailedDevicesRequest()
        )
        return failed_from_pb(reply)

    def status(self) -> Any:
        """The controller's own view (desired set, FM's set, replays) as the protobuf."""
        return self._rpc("status", None, self._stub.Status, pb.StatusRequest())

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RemoteFabric:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rpc(
        self, operation: str, partition_id: int | None, method: Callable[..., _T], request: Any
    ) -> _T:
        with map_grpc_errors(operation, partition_id=partition_id, target=self.target):
            return method(request, timeout=self._timeout, metadata=self._metadata)
        raise AssertionError("unreachable")  # pragma: no cover - for mypy's return check

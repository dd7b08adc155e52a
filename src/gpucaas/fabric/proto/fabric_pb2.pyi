from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListPartitionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PartitionGpu(_message.Message):
    __slots__ = ("physical_id", "uuid", "pci_bus_id", "nvlinks_available", "nvlinks_max", "nvlink_line_rate_mbps")
    PHYSICAL_ID_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    PCI_BUS_ID_FIELD_NUMBER: _ClassVar[int]
    NVLINKS_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    NVLINKS_MAX_FIELD_NUMBER: _ClassVar[int]
    NVLINK_LINE_RATE_MBPS_FIELD_NUMBER: _ClassVar[int]
    physical_id: int
    uuid: str
    pci_bus_id: str
    nvlinks_available: int
    nvlinks_max: int
    nvlink_line_rate_mbps: int
    def __init__(self, physical_id: _Optional[int] = ..., uuid: _Optional[str] = ..., pci_bus_id: _Optional[str] = ..., nvlinks_available: _Optional[int] = ..., nvlinks_max: _Optional[int] = ..., nvlink_line_rate_mbps: _Optional[int] = ...) -> None: ...

class Partition(_message.Message):
    __slots__ = ("id", "active", "gpus")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    id: int
    active: bool
    gpus: _containers.RepeatedCompositeFieldContainer[PartitionGpu]
    def __init__(self, id: _Optional[int] = ..., active: _Optional[bool] = ..., gpus: _Optional[_Iterable[_Union[PartitionGpu, _Mapping]]] = ...) -> None: ...

class ListPartitionsResponse(_message.Message):
    __slots__ = ("partitions",)
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedCompositeFieldContainer[Partition]
    def __init__(self, partitions: _Optional[_Iterable[_Union[Partition, _Mapping]]] = ...) -> None: ...

class PartitionRequest(_message.Message):
    __slots__ = ("partition_id",)
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    partition_id: int
    def __init__(self, partition_id: _Optional[int] = ...) -> None: ...

class SetActivatedRequest(_message.Message):
    __slots__ = ("partition_ids",)
    PARTITION_IDS_FIELD_NUMBER: _ClassVar[int]
    partition_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, partition_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FailedDevicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FailedDevice(_message.Message):
    __slots__ = ("uuid", "pci_bus_id", "ports")
    UUID_FIELD_NUMBER: _ClassVar[int]
    PCI_BUS_ID_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    pci_bus_id: str
    ports: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, uuid: _Optional[str] = ..., pci_bus_id: _Optional[str] = ..., ports: _Optional[_Iterable[int]] = ...) -> None: ...

class FailedDevicesResponse(_message.Message):
    __slots__ = ("gpus", "switches")
    GPUS_FIELD_NUMBER: _ClassVar[int]
    SWITCHES_FIELD_NUMBER: _ClassVar[int]
    gpus: _containers.RepeatedCompositeFieldContainer[FailedDevice]
    switches: _containers.RepeatedCompositeFieldContainer[FailedDevice]
    def __init__(self, gpus: _Optional[_Iterable[_Union[FailedDevice, _Mapping]]] = ..., switches: _Optional[_Iterable[_Union[FailedDevice, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("board", "model", "backend", "desired", "fabric_active", "in_sync", "replays", "last_replay_seconds", "last_error")
    BOARD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    FABRIC_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    REPLAYS_FIELD_NUMBER: _ClassVar[int]
    LAST_REPLAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    board: str
    model: str
    backend: str
    desired: _containers.RepeatedScalarFieldContainer[int]
    fabric_active: _containers.RepeatedScalarFieldContainer[int]
    in_sync: bool
    replays: int
    last_replay_seconds: float
    last_error: str
    def __init__(self, board: _Optional[str] = ..., model: _Optional[str] = ..., backend: _Optional[str] = ..., desired: _Optional[_Iterable[int]] = ..., fabric_active: _Optional[_Iterable[int]] = ..., in_sync: _Optional[bool] = ..., replays: _Optional[int] = ..., last_replay_seconds: _Optional[float] = ..., last_error: _Optional[str] = ...) -> None: ...

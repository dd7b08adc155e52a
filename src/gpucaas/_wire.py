"""What crosses the HTTP API, shared by the server (:mod:`gpucaas.control`) and the client
(:mod:`gpucaas.client`): a container's states (from :mod:`gpucaas._states`, re-exported
here), the request bodies (validated, unknown fields refused) and the replies.

A shared leaf (DESIGN.md "Layers"): it imports only the standard library, pydantic and the
states leaf, so the client carries no server dependency and the server does not import its
own SDK. Reply models ignore fields they do not know, so an older client reads a newer
server's replies.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gpucaas._states import ACTIVE_STATES as ACTIVE_STATES
from gpucaas._states import FINAL_STATES as FINAL_STATES
from gpucaas._states import State as State

MAX_GPUS = 8
MAX_ARGV_ITEMS = 256
MAX_ARGV_BYTES = 64 * 1024
MAX_ENV = 128
MAX_ENV_VALUE_BYTES = 32 * 1024
MAX_LABELS = 64
MAX_NFS = 16
MAX_RUNTIME_S = 30 * 24 * 3600
RESERVED_ENV_PREFIX = "GPUCAAS_"

# The distribution reference grammar (docker/distribution reference/regexp.go), written out.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_RE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?$"
)
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY_RE = re.compile(rf"^(?:[a-z0-9](?:[-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
LABEL_VALUE_RE = re.compile(rf"^(?:{_LABEL_NAME})?$")
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)


STRICT = ConfigDict(extra="forbid")


def _check_no_nul(value: str, what: str) -> str:
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL characters")
    return value


def _clean_path(value: str, what: str) -> str:
    _check_no_nul(value, what)
    if not value.startswith("/"):
        raise ValueError(f"{what} must be an absolute path (start with /), got {value!r}")
    if len(value) > 1024:
        raise ValueError(f"{what} is longer than 1024 characters")
    if ".." in value.split("/"):
        raise ValueError(f"{what} must not contain '..', got {value!r}")
    return posixpath.normpath(value)


class NfsMount(BaseModel):
    """An NFS export mounted into the container."""

    model_config = STRICT

    server: Annotated[str, Field(description="NFS server: a host name or IP address")]
    path: Annotated[str, Field(description="the exported path on the server (absolute)")]
    mount_path: Annotated[str, Field(description="where it appears in the container")]
    read_only: bool = False

    @field_validator("server")
    @classmethod
    def _server(cls, v: str) -> str:
        try:
            ipaddress.ip_address(v.strip("[]"))
            return v
        except ValueError:
            pass
        if not HOSTNAME_RE.match(v):
            raise ValueError(f"must be a host name or IP address, got {v!r}")
        return v.lower()

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return _clean_path(v, "path")

    @field_validator("mount_path")
    @classmethod
    def _mount_path(cls, v: str) -> str:
        v = _clean_path(v, "mount_path")
        if v == "/":
            raise ValueError("mount_path must not be / (mount the export below it)")
        return v

    @property
    def export(self) -> str:
        return f"{self.server}:{self.path}"


class ContainerCreate(BaseModel):
    """``POST /v1/containers``: run ``image`` on ``gpus`` GPUs of one board."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "image": "nvcr.io/nvidia/pytorch:25.01-py3",
                    "command": ["python", "train.py"],
                    "gpus": 2,
                    "env": {"EPOCHS": "3"},
                }
            ]
        },
    )

    image: Annotated[str, Field(max_length=512, description="an OCI image reference")]
    command: Annotated[list[str], Field(default_factory=list, max_length=MAX_ARGV_ITEMS)]
    args: Annotated[list[str], Field(default_factory=list, max_length=MAX_ARGV_ITEMS)]
    env: Annotated[dict[str, str], Field(default_factory=dict, max_length=MAX_ENV)]
    gpus: Annotated[int, Field(strict=True, ge=1, le=MAX_GPUS, description="GPUs wanted, 1-8")]
    nfs: Annotated[list[NfsMount], Field(default_factory=list, max_length=MAX_NFS)]
    name: Annotated[
        str | None, Field(default=None, description="a DNS label (lowercase, digits, '-')")
    ]
    labels: Annotated[dict[str, str], Field(default_factory=dict, max_length=MAX_LABELS)]
    max_runtime_s: Annotated[int | None, Field(default=None, strict=True, ge=1, le=MAX_RUNTIME_S)]

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if not IMAGE_RE.match(v):
            raise ValueError(
                f"{v!r} is not an image reference; write [registry/]repository[:tag][@digest] "
                "with a lowercase repository, e.g. nvcr.io/nvidia/pytorch:25.01-py3"
            )
        return v

    @field_validator("command", "args")
    @classmethod
    def _argv(cls, v: list[str]) -> list[str]:
        for item in v:
            _check_no_nul(item, "an argument")
        if sum(len(item.encode()) for item in v) > MAX_ARGV_BYTES:
            raise ValueError(f"is longer than {MAX_ARGV_BYTES} bytes in all")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not ENV_NAME_RE.match(key):
                raise ValueError(
                    f"{key!r} is not a valid variable name (letters, digits, '_'; not "
                    "starting with a digit)"
                )
            if key.startswith(RESERVED_ENV_PREFIX):
                raise ValueError(
                    f"{key!r}: names starting with {RESERVED_ENV_PREFIX} are set by gpucaas"
                )
            _check_no_nul(value, f"the value of {key}")
            if len(value.encode()) > MAX_ENV_VALUE_BYTES:
                raise ValueError(f"the value of {key} is longer than {MAX_ENV_VALUE_BYTES} bytes")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not DNS_LABEL_RE.match(v):
            raise ValueError(
                f"{v!r} is not a DNS label: 1-63 lowercase letters, digits or '-', starting "
                "and ending with a letter or digit"
            )
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not LABEL_KEY_RE.match(key):
                raise ValueError(f"label key {key!r} is not a valid label name")
            if not LABEL_VALUE_RE.match(value):
                raise ValueError(
                    f"label {key}={value!r}: values are up to 63 letters, digits, '-', '_' "
                    "or '.', starting and ending with a letter or digit"
                )
        return v

    @model_validator(mode="after")
    def _mounts_unique(self) -> ContainerCreate:
        seen: set[str] = set()
        for mount in self.nfs:
            if mount.mount_path in seen:
                raise ValueError(f"nfs: two mounts at {mount.mount_path}")
            seen.add(mount.mount_path)
        return self


class PartitionView(BaseModel):
    board: str
    partition_id: int | None
    module_ids: list[int]


class Container(BaseModel):
    """A container as the API shows it."""

    id: str
    tenant: str
    name: str | None
    image: str
    command: list[str]
    args: list[str]
    env: dict[str, str]
    gpus: int
    """GPUs asked for."""
    gpus_granted: int
    """The partition size that holds them (3 → 4, 5 → 8)."""
    nfs: list[NfsMount]
    labels: dict[str, str]
    max_runtime_s: int | None
    state: State
    reason: str
    message: str
    exit_code: int | None
    partition: PartitionView | None
    created_at: str
    updated_at: str
    timestamps: dict[str, str] = Field(default_factory=dict)
    """When each state was entered (ISO-8601, UTC); empty in list pages."""
    boot_seconds: float | None = None
    """Submit → running, when it got there."""


class ContainerPage(BaseModel):
    items: list[Container]
    next_page_token: str | None


class Event(BaseModel):
    at: str
    state: State
    reason: str
    message: str


class EventList(BaseModel):
    items: list[Event]


class TenantCreate(BaseModel):
    model_config = STRICT

    name: Annotated[str, Field(description="a DNS label; also the Kubernetes namespace suffix")]
    max_gpus: Annotated[int, Field(default=8, strict=True, ge=0, le=1_000_000)]
    max_containers: Annotated[int, Field(default=16, strict=True, ge=0, le=1_000_000)]
    nfs_exports: Annotated[
        list[str],
        Field(
            default_factory=list,
            max_length=64,
            description="exports the tenant may mount, as server:/path (subpaths allowed)",
        ),
    ]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not DNS_LABEL_RE.match(v) or len(v) > 40:
            raise ValueError(
                f"{v!r} is not a tenant name: 1-40 lowercase letters, digits or '-', starting "
                "and ending with a letter or digit"
            )
        return v

    @field_validator("nfs_exports")
    @classmethod
    def _exports(cls, v: list[str]) -> list[str]:
        out = []
        for export in v:
            server, sep, path = export.partition(":")
            if not sep:
                raise ValueError(f"{export!r} is not server:/path")
            mount = NfsMount(server=server, path=path, mount_path="/x")
            out.append(mount.export)
        return out


class Tenant(BaseModel):
    name: str
    max_gpus: int
    max_containers: int
    nfs_exports: list[str]
    created_at: str
    gpus_in_use: int = 0
    containers_active: int = 0


class TenantList(BaseModel):
    items: list[Tenant]


class TokenCreate(BaseModel):
    model_config = STRICT

    label: Annotated[str, Field(default="", max_length=200)]


class Token(BaseModel):
    id: str
    tenant: str | None
    """None for admin tokens."""
    label: str
    created_at: str
    revoked_at: str | None


class NewToken(Token):
    token: str
    """The secret: shown once, stored only as a hash."""


class TokenList(BaseModel):
    items: list[Token]


class TenantCreated(BaseModel):
    tenant: Tenant
    token: NewToken


class GpuView(BaseModel):
    module_id: int
    state: str
    """free, used, reserved, unhealthy or cordoned."""
    container: str | None = None
    tenant: str | None = None


class BoardPartition(BaseModel):
    partition_id: int | None
    module_ids: list[int]
    container: str
    tenant: str


class BoardView(BaseModel):
    name: str
    model: str
    cordoned: bool
    gpus: list[GpuView]
    partitions: list[BoardPartition]


class FleetView(BaseModel):
    boards: list[BoardView]
    capacity: int
    allocated: int
    free: int
    queued: int
    partitions_active: int


class CordonRequest(BaseModel):
    model_config = STRICT

    cordoned: bool = True


class DrainResult(BaseModel):
    board: str
    stopping: list[str]


class Health(BaseModel):
    """``GET /healthz``: the API answers, and how far the scheduler loop got."""

    ok: bool
    scheduler_passes: int
    backend: str


class ErrorBody(BaseModel):
    type: str
    message: str
    details: list[dict[str, Any]] = Field(default_factory=list)


class ErrorReply(BaseModel):
    error: ErrorBody

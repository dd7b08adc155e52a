"""The gpucaas error tree, grouped by what the caller can do about an error.

Every exception gpucaas raises on purpose is a :class:`GpucaasError`. The branch it sits in
says what to do next, the HTTP status the API answers with, and the exit status of the
``gpucaas`` and ``fmctl`` commands (:func:`exit_code`)::

    GpucaasError                        exit 1 unless a branch below says otherwise
    ├── InvalidRequest                  exit 2  fix your input (HTTP 4xx)
    │   ├── topology: ModelError, UnknownModel, UnknownPartition, NotAPartition,
    │   │             SizeOutOfRange
    │   ├── placement: NoFit, UnknownPolicy, UnknownNode
    │   ├── sim: TraceError, SyntheticSpecError
    │   ├── runtime: InvalidVmSpec, RuntimeConfigError
    │   ├── fabric: FabricAddressError, FabricStateError, FmControllerRefused
    │   ├── node: InvalidBDF, ModuleMapError > ModuleMapMissing, UnknownDevice (also
    │   │         VfioFailure), DiscoveryError (also Unavailable)
    │   ├── cdi: CdiError
    │   ├── control: NotFound, Unauthenticated, Forbidden, ExecutorRefused, BadStoreUrl,
    │   │            KubernetesRefused (also KubernetesApiError)
    │   └── client: ApiInvalidRequest (also ApiError)
    ├── Refused                         exit 1  a valid request the system turns down now:
    │   │                                       wait, free something, or ask the operator
    │   ├── Conflict                    exit 1  the state changed under you (in use, exists);
    │   │   │                                   re-read and retry
    │   │   ├── placement: DuplicateNode
    │   │   ├── fabric: PartitionInUse, PartitionNotActive (also FabricManagerError)
    │   │   ├── node: PartitionHeld, VfioError > DeviceInUse (also VfioFailure)
    │   │   ├── control: IdempotencyMismatch, AlreadyExists, StateConflict, AlreadyRunning,
    │   │   │            StateDirBusy, StoreConflict, KubernetesConflict
    │   │   └── client: ApiConflict (also ApiError)
    │   ├── control: QuotaExceeded (also InvalidRequest: the API answers 403/429)
    │   ├── client: ApiRefused (429, and 403 for a quota; also ApiInvalidRequest)
    │   └── fabric: FabricManagerError  Fabric Manager answered with a failure code; each
    │               leaf also sits in the branch of its code: FabricBadRequest
    │               (InvalidRequest, still exit 1: FM refused), FabricManagerNotReady,
    │               FabricNotShared, FabricVersionMismatch, FabricManagerFailure
    │               (Unavailable), FabricManagerDown > FmControllerDown (Unreachable: exit 3)
    ├── Unavailable                     exit 1  a dependency is not ready or failed; retry
    │   │                                       later, or call the operator (HTTP 503)
    │   ├── node: NvidiaSmiUnavailable, DevicePluginError, KernelWriteError (also
    │   │         VfioFailure)
    │   ├── control: StoreUnavailable, EngineNotFound, ShimStartFailed, EngineCommandFailed,
    │   │            KubernetesError (also KubernetesApiError)
    │   ├── client: ApiUnavailable (5xx; also ApiError), WaitTimeout
    │   └── Unreachable                 exit 3  a server cannot be reached at all: start it,
    │       │                                   or fix the address
    │       ├── fabric: FabricManagerDown, FmControllerDown, NvfmLibraryMissing
    │       ├── control: StoreUnreachable (also StoreUnavailable), KubernetesUnreachable
    │       │            (also KubernetesError)
    │       └── client: ApiUnreachable (also ApiUnavailable)
    └── MisuseError                     exit 1  a bug in the caller (also a RuntimeError)
        └── control: StoreQueryError

Family bases say where an error came from, not what to do, so they sit beside the branches:
``fabric.FabricManagerError`` (a Refused), ``control.KubernetesApiError``,
``client.ApiError`` and ``node.VfioFailure``.

A class with two parents takes the exit status of the first that :func:`exit_code` checks:
Unreachable, then Refused, then InvalidRequest.

Each package defines its leaves in its ``_errors.py``. A leaf declares its fields as
annotated attributes under :func:`errorclass`, and its message as a ``template`` that
names them, so it keeps structured attributes and an API maps it to JSON without parsing
text::

    @errorclass
    class UnknownNode(InvalidRequest):
        template = "no node {node!r} in the fleet"
        node: str

A sequence field formatted with a spec is joined with that spec (``{known:, }``); a
template may name a property for text that needs more than a field. Messages that choose
between sentences override ``__str__`` instead. A base used on its own takes one message
(``InvalidRequest("limit must be between 1 and 500")``), as any exception does.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar, dataclass_transform

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "Conflict",
    "GpucaasError",
    "InvalidRequest",
    "MisuseError",
    "Refused",
    "Unavailable",
    "Unreachable",
    "errorclass",
    "exit_code",
    "own_errors",
]

EXIT_OK = 0
"""Exit status of a command that did what it was asked."""
EXIT_REFUSED = 1
"""Exit status when the system refused or failed (in use, quota, not ready); retry may help."""
EXIT_BAD_INPUT = 2
"""Exit status for bad input or usage (also what click gives a usage error)."""
EXIT_UNREACHABLE = 3
"""Exit status when a server (the API, the fm-controller, Fabric Manager) cannot be reached."""


class _Formatter(string.Formatter):
    """``str.format`` plus one rule: a sequence formatted with a spec is joined by it."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        if format_spec and isinstance(value, (tuple, list)):
            return format_spec.join(map(str, value))
        return super().format_field(value, format_spec)


_FORMATTER = _Formatter()


class _Attributes(Mapping[str, Any]):
    """The error's attributes (fields and properties) by name, for its template."""

    def __init__(self, error: GpucaasError) -> None:
        self._error = error

    def __getitem__(self, name: str) -> Any:
        try:
            return getattr(self._error, name)
        except AttributeError:
            raise KeyError(name) from None

    def __iter__(self) -> Any:
        return iter(vars(self._error))

    def __len__(self) -> int:
        return len(vars(self._error))


def _restore(cls: type[GpucaasError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls, *args)
    error.__dict__.update(state)
    return error


class GpucaasError(Exception):
    """Base of every error gpucaas raises on purpose."""

    template: ClassVar[str | None] = None
    """The message, formatted with the error's attributes by name; None: the first argument."""

    def __str__(self) -> str:
        if self.template is None:
            return super().__str__()
        return _FORMATTER.vformat(self.template, (), _Attributes(self))

    def __reduce__(self) -> tuple[Any, ...]:
        # A dataclass __init__ takes keyword-only fields, which Exception's pickling
        # (cls(*args)) cannot pass; rebuild from the attributes instead.
        return (_restore, (type(self), self.args, dict(self.__dict__)))


_E = TypeVar("_E", bound=type[GpucaasError])


@dataclass_transform(eq_default=False, field_specifiers=(dataclasses.field,))
def errorclass(cls: _E) -> _E:
    """Give ``cls`` an ``__init__`` and ``__repr__`` from its annotated fields (a dataclass
    that compares by identity, as exceptions do); ``template`` builds its message."""
    dataclasses.dataclass(eq=False)(cls)
    return cls


class InvalidRequest(GpucaasError):
    """The input was wrong; the message says which value and what to do."""


class Refused(GpucaasError):
    """A valid request that the system turns down now (in use, over quota, not allowed)."""


class Conflict(Refused):
    """The state changed under the caller (e.g. a GPU is already in use)."""


class Unavailable(GpucaasError):
    """A dependency is not ready or failed; retry, or call the operator."""


class Unreachable(Unavailable):
    """A server cannot be reached at all (refused connection, timeout, no client library)."""


class MisuseError(GpucaasError, RuntimeError):
    """The caller broke a contract of the API (a bug, not bad user input)."""


_EXIT_ORDER: Sequence[tuple[type[GpucaasError], int]] = (
    (Unreachable, EXIT_UNREACHABLE),
    (Refused, EXIT_REFUSED),
    (InvalidRequest, EXIT_BAD_INPUT),
)


def exit_code(error: GpucaasError) -> int:
    """The exit status a command ends with for ``error``, from its branch of the tree.

    3 for :class:`Unreachable`, 1 for :class:`Refused` (checked before InvalidRequest, so a
    quota refusal that is also a 4xx exits 1), 2 for :class:`InvalidRequest`, and 1 for
    everything else (Unavailable, MisuseError).
    """
    for base, code in _EXIT_ORDER:
        if isinstance(error, base):
            return code
    return EXIT_REFUSED


def own_errors(namespace: dict[str, Any]) -> None:
    """Show a package's exceptions under the package's name (``gpucaas.fabric.PartitionInUse``,
    not ``gpucaas.fabric._errors.PartitionInUse``) in tracebacks, reprs and pickles, as httpx
    does: every exception class in ``__all__`` that a module inside the package defines gets
    the package as its ``__module__``. A package's ``__init__`` ends with
    ``own_errors(globals())``; names it re-exports from another package keep their own.
    """
    package: str = namespace["__name__"]
    for name in namespace["__all__"]:
        value = namespace[name]
        if (
            isinstance(value, type)
            and issubclass(value, BaseException)
            and value.__module__.startswith(f"{package}.")
        ):
            value.__module__ = package

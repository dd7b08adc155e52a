"""The map itself (:class:`ModuleMap`, one :class:`ModuleEntry` per GPU), its checks against
the GPUs discovered on this node (:func:`validate`), and its file: written atomically by
:func:`save`, read back by :func:`load` after the GPUs have moved to vfio-pci.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpucaas._files import write_atomically
from gpucaas.node.discovery import InvalidBDF, parse_bdf
from gpucaas.topology import ModuleId

from ._errors import ModuleMapError, ModuleMapMissing

DEFAULT_MAP_PATH = Path("/var/lib/gpucaas/module-map.json")
"""Where the node agent keeps the map; it survives reboots and driver rebinding."""

MAP_DOCUMENT_KIND = "gpucaas.node/module-map"
MAP_DOCUMENT_VERSION = 1

DEFAULT_GPU_COUNT = 8


_HOW_TO_CAPTURE = (
    "run `gpucaas node capture-map` on this node while the NVIDIA driver is still bound "
    "(before the GPUs move to vfio-pci), or `gpucaas node capture-map --from FILE` with the "
    "output of `nvidia-smi -q -x` saved from this node"
)


@dataclass(frozen=True)
class ModuleEntry:
    """One GPU: its baseboard module ID, sysfs BDF (``0000:18:00.0``) and UUID."""

    module_id: ModuleId
    bdf: str
    uuid: str
    serial: str | None = None
    product: str | None = None


@dataclass(frozen=True)
class ModuleMap:
    """Module ID -> GPU for one node, with where and when it was captured.

    ``entries`` are kept in module-ID order. ``source`` says where the data came from
    (``nvidia-smi -q -x`` or ``file:PATH``); ``captured_at`` is an ISO 8601 UTC timestamp.
    """

    entries: tuple[ModuleEntry, ...]
    source: str
    captured_at: str
    board_model: str | None = None
    driver_version: str | None = None
    _by_module: Mapping[int, ModuleEntry] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    _by_bdf: Mapping[str, ModuleEntry] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        entries = tuple(sorted(self.entries, key=lambda e: (e.module_id, e.bdf)))
        object.__setattr__(self, "entries", entries)
        object.__setattr__(self, "_by_module", {e.module_id: e for e in entries})
        object.__setattr__(self, "_by_bdf", {e.bdf: e for e in entries})

    @property
    def module_ids(self) -> tuple[ModuleId, ...]:
        return tuple(e.module_id for e in self.entries)

    def by_module(self, module_id: int) -> ModuleEntry:
        """The GPU with this module ID; :class:`ModuleMapError` if the map has none."""
        try:
            return self._by_module[module_id]
        except KeyError:
            raise ModuleMapError(
                "no GPU with this module ID in the module map",
                module_id,
                f"the map has modules {_ids_text(self.module_ids) or 'none'}",
                source=self.source,
            ) from None

    def by_bdf(self, bdf: str) -> ModuleEntry:
        """The GPU at this PCI address (any form nvidia-smi or sysfs prints)."""
        key = normalize_bdf(bdf)
        try:
            return self._by_bdf[key]
        except KeyError:
            raise ModuleMapError(
                "no GPU at this PCI address in the module map",
                key,
                f"the map has {', '.join(e.bdf for e in self.entries) or 'no GPUs'}; if the "
                f"hardware changed, capture the map again ({_HOW_TO_CAPTURE})",
                source=self.source,
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON document (see :data:`MAP_DOCUMENT_KIND`)."""
        return {
            "kind": MAP_DOCUMENT_KIND,
            "version": MAP_DOCUMENT_VERSION,
            "board_model": self.board_model,
            "driver_version": self.driver_version,
            "source": self.source,
            "captured_at": self.captured_at,
            "modules": [
                {
                    "module_id": e.module_id,
                    "bdf": e.bdf,
                    "uuid": e.uuid,
                    "serial": e.serial,
                    "product": e.product,
                }
                for e in self.entries
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, doc: object, *, source: str = "module map") -> ModuleMap:
        """Read a document written by :meth:`to_dict`; :class:`ModuleMapError` if it is not."""

        def bad(what: str, value: object) -> ModuleMapError:
            return ModuleMapError(
                what,
                value,
                f"this is not a module map gpucaas wrote, or it is damaged; {_HOW_TO_CAPTURE}",
                source=source,
            )

        if not isinstance(doc, dict):
            raise bad("expected a JSON object", type(doc).__name__)
        if doc.get("kind") != MAP_DOCUMENT_KIND:
            raise bad(f"not a module map (kind is not {MAP_DOCUMENT_KIND!r})", doc.get("kind"))
        if doc.get("version") != MAP_DOCUMENT_VERSION:
            raise bad(
                f"unsupported module map version (this gpucaas reads {MAP_DOCUMENT_VERSION})",
                doc.get("version"),
            )
        modules = doc.get("modules")
        if not isinstance(modules, list):
            raise bad("'modules' must be a list", type(modules).__name__)
        entries = []
        for i, item in enumerate(modules):
            if not isinstance(item, dict):
                raise bad(f"modules[{i}] must be an object", item)
            mid = item.get("module_id")
            if not isinstance(mid, int) or isinstance(mid, bool):
                raise bad(f"modules[{i}].module_id must be an integer", mid)
            bdf = _str_field(item, "bdf", i, bad, required=True)
            assert bdf is not None
            try:
                bdf = normalize_bdf(bdf)
            except ModuleMapError:
                raise bad(f"modules[{i}].bdf is not a PCI address", bdf) from None
            uuid = _str_field(item, "uuid", i, bad, required=True)
            assert uuid is not None
            entries.append(
                ModuleEntry(
                    module_id=ModuleId(mid),
                    bdf=bdf,
                    uuid=uuid,
                    serial=_str_field(item, "serial", i, bad),
                    product=_str_field(item, "product", i, bad),
                )
            )
        for key in ("source", "captured_at"):
            if not isinstance(doc.get(key), str):
                raise bad(f"{key!r} must be a string", doc.get(key))
        for key in ("board_model", "driver_version"):
            if doc.get(key) is not None and not isinstance(doc.get(key), str):
                raise bad(f"{key!r} must be a string or null", doc.get(key))
        return cls(
            entries=tuple(entries),
            source=doc["source"],
            captured_at=doc["captured_at"],
            board_model=doc.get("board_model"),
            driver_version=doc.get("driver_version"),
        )

    @classmethod
    def from_json(cls, text: str, *, source: str = "module map") -> ModuleMap:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModuleMapError(
                "not valid JSON",
                f"line {exc.lineno}, column {exc.colno}: {exc.msg}",
                f"the file is damaged; {_HOW_TO_CAPTURE}",
                source=source,
            ) from exc
        return cls.from_dict(doc, source=source)


def _str_field(
    item: Mapping[str, object],
    key: str,
    index: int,
    bad: Callable[[str, object], ModuleMapError],
    *,
    required: bool = False,
) -> str | None:
    value = item.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise bad(f"modules[{index}].{key} must be a non-empty string", value)
    return value


def normalize_bdf(text: str) -> str:
    """A PCI address in sysfs form: ``00000000:9A:00.0`` -> ``0000:9a:00.0`` (see
    :func:`parse_bdf`), with this module's error type."""
    try:
        return parse_bdf(text)
    except InvalidBDF:
        raise ModuleMapError(
            "not a PCI address",
            repr(text),
            "expected DOMAIN:BUS:DEVICE.FUNCTION, e.g. 0000:18:00.0 or 00000000:18:00.0",
        ) from None


def _ids_text(ids: Iterable[int]) -> str:
    return ",".join(str(i) for i in sorted(ids))


def _duplicates(pairs: Iterable[tuple[Any, str]]) -> dict[Any, list[str]]:
    seen: dict[Any, list[str]] = collections.defaultdict(list)
    for key, where in pairs:
        seen[key].append(where)
    return {k: v for k, v in seen.items() if len(v) > 1}


def _dups_text(dups: Mapping[Any, list[str]], label: str) -> str:
    return "; ".join(f"{label} {k} on {', '.join(v)}" for k, v in sorted(dups.items()))


def validate(
    module_map: ModuleMap, gpu_bdfs: Sequence[str], *, gpu_count: int = DEFAULT_GPU_COUNT
) -> list[str]:
    """Problems with ``module_map`` against the GPUs discovered on this node; empty if none.

    Checks that there are exactly ``gpu_count`` GPUs, that module IDs 1..``gpu_count`` each
    appear once, that no BDF or UUID repeats, and that the map's BDFs are the discovered ones.
    """
    problems: list[str] = []
    entries = module_map.entries
    if len(entries) != gpu_count:
        problems.append(f"the map has {len(entries)} GPUs, expected {gpu_count}")
    ids = collections.Counter(int(e.module_id) for e in entries)
    out_of_range = sorted(i for i in ids if not 1 <= i <= gpu_count)
    if out_of_range:
        problems.append(f"module IDs outside 1..{gpu_count}: {_ids_text(out_of_range)}")
    missing = sorted(set(range(1, gpu_count + 1)) - set(ids))
    if missing:
        problems.append(f"module IDs missing from the map: {_ids_text(missing)}")
    for label, dups in (
        ("module", _duplicates((e.module_id, e.bdf) for e in entries)),
        ("BDF", _duplicates((e.bdf, f"module {e.module_id}") for e in entries)),
        ("UUID", _duplicates((e.uuid, e.bdf) for e in entries)),
    ):
        if dups:
            problems.append(f"duplicate {label}s: {_dups_text(dups, label)}")
    discovered: set[str] = set()
    for bdf in gpu_bdfs:
        try:
            discovered.add(normalize_bdf(bdf))
        except ModuleMapError:
            problems.append(f"discovered GPU address is not a PCI address: {bdf!r}")
    in_map = {e.bdf for e in entries}
    if extra := sorted(in_map - discovered):
        problems.append(f"GPUs in the map but not discovered on this node: {', '.join(extra)}")
    if absent := sorted(discovered - in_map):
        problems.append(f"GPUs discovered on this node but not in the map: {', '.join(absent)}")
    return problems


def save(
    module_map: ModuleMap,
    path: Path = DEFAULT_MAP_PATH,
    *,
    gpu_count: int = DEFAULT_GPU_COUNT,
) -> None:
    """Write the map atomically (old file or new, never half); refuse an invalid map."""
    problems = validate(module_map, [e.bdf for e in module_map.entries], gpu_count=gpu_count)
    if problems:
        raise ModuleMapError(
            "refusing to save an invalid module map",
            "; ".join(problems),
            f"nothing was written to {path}; {_HOW_TO_CAPTURE}",
            source=module_map.source,
        )
    write_atomically(path, module_map.to_json())


def load(path: Path = DEFAULT_MAP_PATH, *, gpu_count: int = DEFAULT_GPU_COUNT) -> ModuleMap:
    """Read a map written by :func:`save`. The file is never modified, even when refused.

    Raises :class:`ModuleMapMissing` if there is no file, and :class:`ModuleMapError` if it
    is not a module map, is damaged, or fails the checks :func:`save` applies.
    """
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModuleMapMissing(
            "no module map on this node", "the file does not exist", _HOW_TO_CAPTURE, source=source
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModuleMapError(
            "cannot read the module map",
            str(exc),
            f"check the file's permissions, or {_HOW_TO_CAPTURE}",
            source=source,
        ) from exc
    module_map = ModuleMap.from_json(text, source=source)
    problems = validate(module_map, [e.bdf for e in module_map.entries], gpu_count=gpu_count)
    if problems:
        raise ModuleMapError(
            "the stored module map is invalid",
            "; ".join(problems),
            f"the file was left as it is; {_HOW_TO_CAPTURE}",
            source=source,
        )
    return module_map

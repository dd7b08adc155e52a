"""Reading board models from TOML files, with errors that name the file and the field.

Models ship as data in ``gpucaas/topology/models/`` (one file per model) and are loaded and
validated when :mod:`gpucaas.topology` is imported, so a broken table fails loudly at start
instead of producing GPU sets Fabric Manager refuses. Operators may load their own table
(e.g. a custom FM partition file) with :func:`load_model_file`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ._errors import ModelError, UnknownModel
from ._model import MAX_GPUS, MAX_PARTITIONS, Bars, BoardModel, GpuDevice, NvSwitch, Partition
from ._types import ModuleId, PartitionId, mask_of

_KNOWN_KEYS = {
    "name",
    "aliases",
    "description",
    "gpu_count",
    "gpu_devices",
    "nvswitch",
    "bars",
    "partitions",
}


def load_model_file(path: Path | str) -> BoardModel:
    """Load and validate one board model file. Raises :class:`ModelError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(str(path), "(file)", f"cannot read it: {exc.strerror}") from exc
    return parse_model(text, source=str(path))


def parse_model(text: str, *, source: str) -> BoardModel:
    """Build a :class:`BoardModel` from TOML text; ``source`` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModelError(source, "(syntax)", f"not valid TOML: {exc}") from exc
    return _build(data, source)


def _build(data: Mapping[str, Any], source: str) -> BoardModel:
    def fail(field: str, reason: str) -> ModelError:
        return ModelError(source, field, reason)

    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown field; allowed: {', '.join(sorted(_KNOWN_KEYS))}")
    name = _req(data, "name", str, fail)
    if not name or not all(c.isalnum() or c == "-" for c in name):
        raise fail("name", f"{name!r} must be non-empty letters, digits and '-'")
    aliases = data.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise fail("aliases", "must be a list of non-empty strings")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description", "must be a string")
    gpu_count = _req(data, "gpu_count", int, fail)
    if not 1 <= gpu_count <= MAX_GPUS:
        raise fail("gpu_count", f"{gpu_count} is out of range; must be 1 to {MAX_GPUS}")

    raw_parts = data.get("partitions")
    if not isinstance(raw_parts, list) or not raw_parts:
        raise fail("partitions", "must be a non-empty array of [[partitions]] tables")
    if len(raw_parts) > MAX_PARTITIONS:
        raise fail(
            "partitions",
            f"{len(raw_parts)} partitions; Fabric Manager holds at most {MAX_PARTITIONS}",
        )
    partitions: list[Partition] = []
    seen_ids: set[int] = set()
    seen_masks: dict[int, int] = {}
    for n, raw in enumerate(raw_parts):
        where = f"partitions[{n}]"
        if not isinstance(raw, dict):
            raise fail(where, "must be a table with id, gpus and nvlinks")
        extra = sorted(set(raw) - {"id", "gpus", "nvlinks"})
        if extra:
            raise fail(f"{where}.{extra[0]}", "unknown field; allowed: id, gpus, nvlinks")
        pid = _req(raw, "id", int, fail, prefix=where)
        if pid < 0:
            raise fail(f"{where}.id", f"{pid} must be ≥ 0")
        if pid in seen_ids:
            raise fail(f"{where}.id", f"partition id {pid} appears twice")
        seen_ids.add(pid)
        gpus = raw.get("gpus")
        if not isinstance(gpus, list) or not gpus or not all(_is_int(g) for g in gpus):
            raise fail(f"{where}.gpus", "must be a non-empty list of module IDs")
        for g in gpus:
            if not 1 <= g <= gpu_count:
                raise fail(f"{where}.gpus", f"module ID {g} is out of range 1..{gpu_count}")
        if len(set(gpus)) != len(gpus):
            raise fail(f"{where}.gpus", f"{gpus} lists a module ID twice")
        mask = mask_of(gpus)
        if mask in seen_masks:
            raise fail(f"{where}.gpus", f"same GPU set as partition {seen_masks[mask]}")
        seen_masks[mask] = pid
        nvlinks = _req(raw, "nvlinks", int, fail, prefix=where)
        if nvlinks < 0:
            raise fail(f"{where}.nvlinks", f"{nvlinks} must be ≥ 0")
        partitions.append(
            Partition(PartitionId(pid), tuple(ModuleId(g) for g in sorted(gpus)), nvlinks, mask)
        )
    covered = 0
    for p in partitions:
        covered |= p.mask
    if covered != (1 << gpu_count) - 1:
        missing = [m for m in range(1, gpu_count + 1) if not covered >> (m - 1) & 1]
        raise fail("partitions", f"module IDs {missing} are in no partition")

    return BoardModel(
        name=name,
        aliases=tuple(aliases),
        description=description,
        gpu_count=gpu_count,
        partitions=tuple(sorted(partitions, key=lambda p: p.id)),
        gpu_devices=_gpu_devices(data.get("gpu_devices", []), fail),
        nvswitch=_nvswitch(data.get("nvswitch"), fail),
        bars=_bars(data.get("bars"), fail),
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _req(data: Mapping[str, Any], key: str, kind: type, fail: Any, *, prefix: str = "") -> Any:
    field = f"{prefix}.{key}" if prefix else key
    if key not in data:
        raise fail(field, "is required")
    value = data[key]
    if kind is int and not _is_int(value) or kind is not int and not isinstance(value, kind):
        raise fail(field, f"{value!r} must be {'an integer' if kind is int else 'a string'}")
    return value


def _gpu_devices(raw: Any, fail: Any) -> tuple[GpuDevice, ...]:
    if not isinstance(raw, list):
        raise fail("gpu_devices", "must be an array of [[gpu_devices]] tables")
    out = []
    for n, item in enumerate(raw):
        where = f"gpu_devices[{n}]"
        if not isinstance(item, dict):
            raise fail(where, "must be a table with name and device_id")
        extra = sorted(set(item) - {"name", "device_id", "bar2_gib"})
        if extra:
            raise fail(f"{where}.{extra[0]}", "unknown field; allowed: name, device_id, bar2_gib")
        bar2 = item.get("bar2_gib")
        if bar2 is not None and (not _is_int(bar2) or bar2 < 1):
            raise fail(f"{where}.bar2_gib", f"{bar2!r} must be a positive integer (GiB)")
        out.append(
            GpuDevice(
                _req(item, "name", str, fail, prefix=where),
                _req(item, "device_id", int, fail, prefix=where),
                bar2,
            )
        )
    return tuple(out)


def _nvswitch(raw: Any, fail: Any) -> NvSwitch | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise fail("nvswitch", "must be a table with name, device_id and count")
    return NvSwitch(
        _req(raw, "name", str, fail, prefix="nvswitch"),
        _req(raw, "device_id", int, fail, prefix="nvswitch"),
        _req(raw, "count", int, fail, prefix="nvswitch"),
    )


def _bars(raw: Any, fail: Any) -> Bars | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise fail("bars", "must be a table with bar0_mib, bar2_gib and bar4_mib")
    return Bars(
        *(_req(raw, k, int, fail, prefix="bars") for k in ("bar0_mib", "bar2_gib", "bar4_mib"))
    )


def _shipped_files() -> Iterator[tuple[str, str]]:
    folder = resources.files("gpucaas.topology") / "models"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            yield f"gpucaas/topology/models/{entry.name}", entry.read_text(encoding="utf-8")


def load_shipped_models() -> dict[str, BoardModel]:
    """Every shipped model by name and alias. Raises :class:`ModelError` for a bad file."""
    models: dict[str, BoardModel] = {}
    for source, text in _shipped_files():
        model = parse_model(text, source=source)
        expected = Path(source).stem
        if model.name != expected:
            raise ModelError(
                source, "name", f"{model.name!r} must match the file name {expected!r}"
            )
        for key in (model.name, *model.aliases):
            if key in models:
                raise ModelError(source, "aliases", f"{key!r} is already a model name or alias")
            models[key] = model
    return models


class ModelRegistry:
    """Board models by name or alias."""

    def __init__(self, models: Mapping[str, BoardModel]) -> None:
        self._models = dict(models)

    def get(self, name: str) -> BoardModel:
        """The model with this name or alias. Raises :class:`UnknownModel`."""
        try:
            return self._models[name]
        except KeyError:
            raise UnknownModel(name, self.names()) from None

    def names(self) -> list[str]:
        """Canonical model names, sorted (aliases excluded)."""
        return sorted({m.name for m in self._models.values()})

    def __contains__(self, name: object) -> bool:
        return name in self._models

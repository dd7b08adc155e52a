"""Capturing the map from ``nvidia-smi -q -x``, the one place that knows module IDs while
the NVIDIA driver is still bound.

Where nvidia-smi puts the module ID (both layouts are accepted)::

    driver <= R555   <gpu><gpu_module_id>N</gpu_module_id>
    driver >= R565   <gpu><platformInfo>...<module_id>N</module_id>...</platformInfo>
"""

from __future__ import annotations

import datetime as _dt
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from gpucaas.topology import ModuleId

from ._errors import ModuleMapError, NvidiaSmiUnavailable
from ._map import DEFAULT_GPU_COUNT, ModuleEntry, ModuleMap, _duplicates, _dups_text, normalize_bdf

NVIDIA_SMI_TIMEOUT_S = 60.0


_NOT_REPORTED = {"", "N/A", "0"}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _text(el: ET.Element | None) -> str | None:
    if el is None or el.text is None:
        return None
    value = el.text.strip()
    return value or None


def _module_id_text(gpu: ET.Element) -> str | None:
    """The module ID as nvidia-smi printed it, from either layout, or None."""
    for path in ("platformInfo/module_id", "gpu_module_id", "module_id"):
        value = _text(gpu.find(path))
        if value is not None:
            return value
    return None


def parse_nvidia_smi_xml(
    xml: str | Path, *, gpu_count: int = DEFAULT_GPU_COUNT, source: str | None = None
) -> ModuleMap:
    """Build the map from ``nvidia-smi -q -x`` output: a ``str`` is the XML, a ``Path`` a file.

    BDFs are normalised to the sysfs form. Raises :class:`ModuleMapError` for XML that does
    not parse, a GPU with no module ID (old driver, or not an HGX baseboard), a module ID
    outside 1..``gpu_count``, and duplicate module IDs, BDFs or UUIDs.
    """
    if isinstance(xml, Path):
        source = source or f"file:{xml}"
        try:
            text = xml.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ModuleMapError(
                "nvidia-smi XML file not found",
                str(xml),
                "pass the path of a file holding `nvidia-smi -q -x` output from this node",
                source=source,
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ModuleMapError(
                "cannot read nvidia-smi XML file",
                f"{xml} ({exc})",
                "pass a readable file holding `nvidia-smi -q -x` output",
                source=source,
            ) from exc
    else:
        text = xml
        source = source or "nvidia-smi XML"
    return _parse(text, gpu_count=gpu_count, source=source)


def _parse(text: str, *, gpu_count: int, source: str) -> ModuleMap:
    def bad(what: str, value: object, todo: str) -> ModuleMapError:
        return ModuleMapError(what, value, todo, source=source)

    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        line, col = exc.position
        reason = str(exc).split(":")[0]
        raise bad(
            "does not parse as XML",
            f"line {line}, column {col}: {reason}",
            "pass the complete, unmodified output of `nvidia-smi -q -x`",
        ) from exc
    if root.tag != "nvidia_smi_log":
        raise bad(
            "not nvidia-smi XML (root element is not <nvidia_smi_log>)",
            f"<{root.tag}>",
            "pass the output of `nvidia-smi -q -x` (not -q alone, not CSV)",
        )
    driver = _text(root.find("driver_version"))
    gpus = root.findall("gpu")
    if not gpus:
        raise bad(
            "nvidia-smi reports no GPUs",
            f"attached_gpus={_text(root.find('attached_gpus')) or 'N/A'}",
            "capture while the NVIDIA driver is bound to the GPUs (`nvidia-smi -L` lists them)",
        )

    entries: list[ModuleEntry] = []
    for gpu in gpus:
        raw_bdf = _text(gpu.find("pci/pci_bus_id")) or gpu.get("id")
        if raw_bdf is None:
            raise bad(
                "a <gpu> has no PCI address (no <pci><pci_bus_id> and no id attribute)",
                _text(gpu.find("uuid")) or "unknown GPU",
                "pass the complete, unmodified output of `nvidia-smi -q -x`",
            )
        try:
            bdf = normalize_bdf(raw_bdf)
        except ModuleMapError:
            raise bad(
                "a GPU's PCI address is not DOMAIN:BUS:DEVICE.FUNCTION",
                repr(raw_bdf),
                "pass the complete, unmodified output of `nvidia-smi -q -x`",
            ) from None
        product = _text(gpu.find("product_name"))
        name = f"GPU {bdf}" + (f" ({product})" if product else "")
        uuid = _text(gpu.find("uuid"))
        if uuid is None:
            raise bad(
                f"{name} has no <uuid>",
                "missing",
                "pass the complete, unmodified output of `nvidia-smi -q -x`",
            )
        raw_id = _module_id_text(gpu)
        if raw_id is None or raw_id in _NOT_REPORTED:
            raise bad(
                f"{name} reports no module ID (no <platformInfo><module_id> or "
                "<gpu_module_id>, or N/A)",
                f"driver {driver or 'unknown'}, module ID {raw_id or 'absent'}",
                "this NVIDIA driver is too old to report module IDs, or this is not an HGX "
                "baseboard; capture again with a current data-centre driver bound (R550 and "
                "later are known to report them). Module IDs are never guessed from PCI order",
            )
        try:
            module_id = int(raw_id)
        except ValueError:
            raise bad(
                f"{name} has a module ID that is not a number",
                repr(raw_id),
                "pass the complete, unmodified output of `nvidia-smi -q -x`",
            ) from None
        if not 1 <= module_id <= gpu_count:
            raise bad(
                f"{name} has a module ID outside 1..{gpu_count}",
                module_id,
                f"an HGX baseboard with {gpu_count} GPUs numbers its modules 1..{gpu_count}; "
                "check the board's GPU count, or capture again from this node",
            )
        entries.append(
            ModuleEntry(
                module_id=ModuleId(module_id),
                bdf=bdf,
                uuid=uuid,
                serial=_text(gpu.find("serial")),
                product=product,
            )
        )

    dup_ids = _duplicates((e.module_id, e.bdf) for e in entries)
    if dup_ids:
        if len({e.module_id for e in entries}) == 1 and len(entries) > 1:
            todo = (
                f"every GPU reports module ID {entries[0].module_id}, as PCIe (non-HGX) GPUs "
                "do; partitions need an HGX baseboard with distinct module IDs"
            )
        else:
            todo = "the XML is inconsistent (edited, or merged from two nodes?); capture it again"
        raise bad("duplicate module IDs", _dups_text(dup_ids, "module"), todo)
    dup_bdfs = _duplicates((e.bdf, e.uuid) for e in entries)
    if dup_bdfs:
        raise bad(
            "the same PCI address appears more than once",
            _dups_text(dup_bdfs, "BDF"),
            "the XML is inconsistent (edited, or merged from two captures?); capture it again",
        )
    dup_uuids = _duplicates((e.uuid, e.bdf) for e in entries)
    if dup_uuids:
        raise bad(
            "the same GPU UUID appears more than once",
            _dups_text(dup_uuids, "UUID"),
            "the XML is inconsistent (edited, or merged from two captures?); capture it again",
        )

    products = {e.product for e in entries}
    return ModuleMap(
        entries=tuple(entries),
        source=source,
        captured_at=_now(),
        board_model=products.pop() if len(products) == 1 else None,
        driver_version=driver,
    )


def capture(
    *,
    xml: Path | None = None,
    nvidia_smi: str = "nvidia-smi",
    gpu_count: int = DEFAULT_GPU_COUNT,
    timeout_s: float = NVIDIA_SMI_TIMEOUT_S,
) -> ModuleMap:
    """Build the map by running ``nvidia-smi -q -x``, or from a saved file (``xml``).

    Raises :class:`NvidiaSmiUnavailable` when nvidia-smi is missing, exits non-zero or times
    out, and :class:`ModuleMapError` when its output is unusable (see
    :func:`parse_nvidia_smi_xml`).
    """
    if xml is not None:
        return parse_nvidia_smi_xml(xml, gpu_count=gpu_count)
    command = (nvidia_smi, "-q", "-x")
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError:
        raise NvidiaSmiUnavailable(command, f"{nvidia_smi} not found") from None
    except PermissionError as exc:
        raise NvidiaSmiUnavailable(command, f"{nvidia_smi} cannot be run ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise NvidiaSmiUnavailable(command, f"no answer in {timeout_s:g} s") from exc
    except OSError as exc:
        raise NvidiaSmiUnavailable(command, str(exc)) from exc
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        detail = f": {said[0]}" if said else ""
        raise NvidiaSmiUnavailable(command, f"exit status {done.returncode}{detail}")
    return _parse(done.stdout, gpu_count=gpu_count, source=" ".join(command))

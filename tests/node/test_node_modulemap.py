"""Module-ID map: parsing nvidia-smi XML, capture, validation, and the stored file.

The fixtures in ``data/`` are assembled from public nvidia-smi samples, not captured from our
hardware (see the comment at the top of each).
"""

from __future__ import annotations

import datetime as dt
import json
import stat
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from gpucaas.errors import InvalidRequest, Unavailable
from gpucaas.node.modulemap import (
    DEFAULT_MAP_PATH,
    MAP_DOCUMENT_KIND,
    MAP_DOCUMENT_VERSION,
    ModuleEntry,
    ModuleMap,
    ModuleMapError,
    ModuleMapMissing,
    NvidiaSmiUnavailable,
    capture,
    load,
    parse_nvidia_smi_xml,
    save,
    validate,
)
from gpucaas.node.modulemap._map import normalize_bdf  # internal helper, tested directly
from gpucaas.topology import ModuleId

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "nvidia-smi-hgx-h100.xml"
FIXTURE_R555 = DATA / "nvidia-smi-hgx-h100-r555.xml"
PRODUCT = "NVIDIA H100 80GB HBM3"

# module ID -> (sysfs BDF, UUID, serial), as written in the fixtures.
EXPECTED = {
    1: ("0000:3a:00.0", "GPU-d577a12c-d606-5acf-9783-630e3bcfbca8", "1652423017072"),
    2: ("0000:18:00.0", "GPU-c87c09ec-e63f-5ab7-b481-e593e7edcf71", "1652423001234"),
    3: ("0000:5d:00.0", "GPU-235cce7d-2a9e-5e39-9b17-b2119ac54f1b", "1652423024991"),
    4: ("0000:2a:00.0", "GPU-e0acfbee-bf4d-59ab-b752-20f19386dbe4", "1652423009153"),
    5: ("0000:ab:00.0", "GPU-15f13451-f526-56c8-8203-d34db01f6eb3", "1652423040829"),
    6: ("0000:db:00.0", "GPU-0dfae3f4-7cb0-5611-b319-b2a79c5369e3", "1652423056667"),
    7: ("0000:9a:00.0", "GPU-88bf4f34-3c74-5f9e-a665-7cdf510d1a27", "1652423032910"),
    8: ("0000:ba:00.0", "GPU-d9555df8-64fd-5d7e-9c7e-41ebcc82b141", "1652423048748"),
}
EXPECTED_ENTRIES = tuple(
    ModuleEntry(ModuleId(mid), bdf, uuid, serial, PRODUCT)
    for mid, (bdf, uuid, serial) in sorted(EXPECTED.items())
)
ALL_BDFS = [bdf for bdf, _, _ in EXPECTED.values()]


def fixture_map() -> ModuleMap:
    return parse_nvidia_smi_xml(FIXTURE)


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [FIXTURE, FIXTURE_R555], ids=["platformInfo-module_id(R565+)", "gpu_module_id(R555)"]
)
def test_parse_fixture_gives_the_exact_map(path: Path) -> None:
    m = parse_nvidia_smi_xml(path)

    assert m.entries == EXPECTED_ENTRIES
    assert m.board_model == PRODUCT
    assert m.source == f"file:{path}"
    assert m.driver_version in {"570.124.06", "555.42.06"}
    captured = dt.datetime.fromisoformat(m.captured_at)
    assert captured.tzinfo is not None


def test_module_order_is_not_pci_order() -> None:
    m = fixture_map()
    by_module = [e.bdf for e in m.entries]
    assert by_module != sorted(by_module)
    # The first GPU in PCI order (bus 18) is module 2, not module 1.
    assert m.by_bdf("00000000:18:00.0").module_id == 2
    assert m.by_module(1).bdf == "0000:3a:00.0"


def test_fixture_describes_the_same_host_as_the_sysfs_fixture() -> None:
    from tests.node import sysfs_fixture

    m = fixture_map()
    assert {e.bdf: e.module_id for e in m.entries} == sysfs_fixture.MODULE_ID_BY_BDF
    assert validate(m, sysfs_fixture.GPU_BDFS) == []


def test_parse_accepts_text_and_names_the_source() -> None:
    m = parse_nvidia_smi_xml(FIXTURE.read_text(), source="node hgx-07")
    assert m.entries == EXPECTED_ENTRIES
    assert m.source == "node hgx-07"


@pytest.mark.parametrize(
    ("raw", "sysfs"),
    [
        ("00000000:18:00.0", "0000:18:00.0"),
        ("00000000:9A:00.0", "0000:9a:00.0"),
        ("0000:9a:00.0", "0000:9a:00.0"),
        ("9A:00.0", "0000:9a:00.0"),
        ("00000001:DB:1F.7", "0001:db:1f.7"),
        (" 00000000:AB:00.0\n", "0000:ab:00.0"),
    ],
    ids=["nvidia-smi", "nvidia-smi-uppercase", "sysfs", "no-domain", "domain-1", "whitespace"],
)
def test_normalize_bdf(raw: str, sysfs: str) -> None:
    assert normalize_bdf(raw) == sysfs


@pytest.mark.parametrize("raw", ["", "18:00", "0000:18:00.8", "gpu0", "0000:1g:00.0"])
def test_normalize_bdf_rejects_garbage(raw: str) -> None:
    with pytest.raises(ModuleMapError, match="not a PCI address"):
        normalize_bdf(raw)


Mutate = Callable[[ET.Element], None]


def _gpu(root: ET.Element, bus: str) -> ET.Element:
    for gpu in root.iter("gpu"):
        if gpu.get("id") == f"00000000:{bus}:00.0":
            return gpu
    raise AssertionError(bus)


def _set_module(bus: str, value: str) -> Mutate:
    def apply(root: ET.Element) -> None:
        el = _gpu(root, bus).find("platformInfo/module_id")
        assert el is not None
        el.text = value

    return apply


def _drop_module_ids(root: ET.Element) -> None:
    for gpu in root.iter("gpu"):
        info = gpu.find("platformInfo")
        assert info is not None
        gpu.remove(info)


def _all_module_one(root: ET.Element) -> None:
    for el in root.iter("module_id"):
        el.text = "1"


def _duplicate_bdf(root: ET.Element) -> None:
    pci = _gpu(root, "2A").find("pci/pci_bus_id")
    assert pci is not None
    pci.text = "00000000:18:00.0"


def _drop_uuid(root: ET.Element) -> None:
    gpu = _gpu(root, "5D")
    uuid = gpu.find("uuid")
    assert uuid is not None
    gpu.remove(uuid)


def _drop_gpus(root: ET.Element) -> None:
    for gpu in root.findall("gpu"):
        root.remove(gpu)


def _mutated(mutate: Mutate) -> str:
    root = ET.parse(FIXTURE).getroot()
    mutate(root)
    return ET.tostring(root, encoding="unicode")


ERROR_CASES: list[tuple[str, str | None, Mutate | None, int, str]] = [
    # (id, raw text or None, mutation or None, gpu_count, expected message pattern)
    (
        "truncated-xml",
        FIXTURE.read_text()[:5000],
        None,
        8,
        r"does not parse as XML: line \d+, column \d+: unclosed token;",
    ),
    ("not-xml", "NVIDIA-SMI has failed", None, 8, "does not parse"),
    ("wrong-root", "<gpus><gpu/></gpus>", None, 8, r"not nvidia-smi XML.*<gpus>"),
    ("no-gpus", None, _drop_gpus, 8, "reports no GPUs.*attached_gpus=8"),
    (
        "no-module-id(old driver)",
        None,
        _drop_module_ids,
        8,
        r"GPU 0000:18:00.0 \(NVIDIA H100 80GB HBM3\) reports no module ID.*driver 570.124.06"
        r".*too old.*not an HGX.*never guessed from PCI order",
    ),
    ("module-id-N/A", None, _set_module("9A", "N/A"), 8, "0000:9a:00.0.*reports no module ID"),
    ("module-id-text", None, _set_module("9A", "six"), 8, "not a number: 'six'"),
    ("module-id-9", None, _set_module("9A", "9"), 8, r"0000:9a:00.0.*outside 1..8: 9"),
    ("gpu-count-4", None, None, 4, r"0000:9a:00.0 .* outside 1..4: 7"),
    (
        "duplicate-module-id",
        None,
        _set_module("2A", "2"),
        8,
        r"duplicate module IDs: module 2 on 0000:18:00.0, 0000:2a:00.0; .*inconsistent",
    ),
    ("all-module-1(PCIe GPUs)", None, _all_module_one, 8, r"every GPU reports module ID 1"),
    ("duplicate-bdf", None, _duplicate_bdf, 8, r"same PCI address.*BDF 0000:18:00.0"),
    ("missing-uuid", None, _drop_uuid, 8, r"GPU 0000:5d:00.0 .* has no <uuid>"),
]


@pytest.mark.parametrize(
    ("raw", "mutate", "gpu_count", "pattern"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_parse_errors_say_what_and_what_to_do(
    raw: str | None, mutate: Mutate | None, gpu_count: int, pattern: str
) -> None:
    text = raw if raw is not None else _mutated(mutate) if mutate else FIXTURE.read_text()
    with pytest.raises(ModuleMapError, match=pattern) as info:
        parse_nvidia_smi_xml(text, gpu_count=gpu_count)
    assert isinstance(info.value, InvalidRequest)
    assert info.value.todo  # every message says what to do
    assert str(info.value).startswith("nvidia-smi XML: ")


def test_parse_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "smi.xml"
    with pytest.raises(ModuleMapError, match=f"not found: {missing}"):
        parse_nvidia_smi_xml(missing)


# --- capture -------------------------------------------------------------------------------


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "nvidia-smi"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_capture_runs_nvidia_smi_q_x(tmp_path: Path) -> None:
    args = tmp_path / "args"
    fake = _script(tmp_path, f'echo "$@" > {args}\ncat {FIXTURE}\n')

    m = capture(nvidia_smi=str(fake))

    assert args.read_text().split() == ["-q", "-x"]
    assert m.entries == EXPECTED_ENTRIES
    assert m.source == f"{fake} -q -x"


def test_capture_from_file_does_not_run_nvidia_smi(tmp_path: Path) -> None:
    m = capture(xml=FIXTURE, nvidia_smi=str(tmp_path / "absent"))
    assert m.entries == EXPECTED_ENTRIES


@pytest.mark.parametrize(
    ("body", "timeout_s", "pattern"),
    [
        (
            "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
            'driver." >&2\nexit 9\n',
            60.0,
            r"exit status 9: NVIDIA-SMI has failed",
        ),
        (None, 8, r"not found"),
        ("exec sleep 5\n", 0.2, r"no answer in 0.2 s"),
    ],
    ids=["exit-9", "missing-binary", "timeout"],
)
def test_capture_failures_are_unavailable(
    tmp_path: Path, body: str | None, timeout_s: float, pattern: str
) -> None:
    fake = _script(tmp_path, body) if body is not None else tmp_path / "no-such-nvidia-smi"
    with pytest.raises(NvidiaSmiUnavailable, match=pattern) as info:
        capture(nvidia_smi=str(fake), timeout_s=timeout_s)
    assert isinstance(info.value, Unavailable)
    message = str(info.value)
    assert "while the NVIDIA driver is bound" in message
    assert "--from FILE" in message


def test_capture_not_executable(tmp_path: Path) -> None:
    # A directory cannot be executed, even by root (a file without the x bit can be).
    with pytest.raises(NvidiaSmiUnavailable, match="cannot be run"):
        capture(nvidia_smi=str(tmp_path))


def test_capture_bad_output_is_a_map_error(tmp_path: Path) -> None:
    fake = _script(tmp_path, "echo '<nvidia_smi_log><gpu>'\n")
    with pytest.raises(ModuleMapError, match="does not parse"):
        capture(nvidia_smi=str(fake))


# --- lookups and JSON -------------------------------------------------------------------


def test_lookups_and_misses() -> None:
    m = fixture_map()
    assert m.module_ids == tuple(range(1, 9))
    assert m.by_module(6).uuid == EXPECTED[6][1]
    assert m.by_bdf("0000:DB:00.0").module_id == 6
    with pytest.raises(ModuleMapError, match=r"no GPU with this module ID.*: 9; .*1,2,3"):
        m.by_module(9)
    with pytest.raises(ModuleMapError, match=r"no GPU at this PCI address.*0000:19:00.0"):
        m.by_bdf("00000000:19:00.0")


def test_json_document_is_versioned_and_round_trips() -> None:
    m = fixture_map()
    doc = json.loads(m.to_json())
    assert doc["kind"] == MAP_DOCUMENT_KIND
    assert doc["version"] == MAP_DOCUMENT_VERSION
    assert [e["module_id"] for e in doc["modules"]] == list(range(1, 9))
    assert doc["modules"][0] == {
        "module_id": 1,
        "bdf": "0000:3a:00.0",
        "uuid": EXPECTED[1][1],
        "serial": EXPECTED[1][2],
        "product": PRODUCT,
    }
    assert ModuleMap.from_json(m.to_json()) == m


def test_entries_are_kept_in_module_order() -> None:
    m = fixture_map()
    shuffled = ModuleMap(entries=tuple(reversed(m.entries)), source="x", captured_at="t")
    assert shuffled.entries == m.entries


# --- validate ------------------------------------------------------------------------------


def _drop(module_id: int) -> ModuleMap:
    m = fixture_map()
    return ModuleMap(
        entries=tuple(e for e in m.entries if e.module_id != module_id),
        source=m.source,
        captured_at=m.captured_at,
    )


def _relabel(module_id: int, new_id: int) -> ModuleMap:
    m = fixture_map()
    return ModuleMap(
        entries=tuple(
            ModuleEntry(ModuleId(new_id), e.bdf, e.uuid) if e.module_id == module_id else e
            for e in m.entries
        ),
        source=m.source,
        captured_at=m.captured_at,
    )


VALIDATE_CASES: list[tuple[str, Callable[[], ModuleMap], list[str], list[str]]] = [
    ("matches", fixture_map, ALL_BDFS, []),
    (
        "nvidia-smi-form-bdfs-match",
        fixture_map,
        [f"00000000:{b[5:].upper()}" for b in ALL_BDFS],
        [],
    ),
    (
        "gpu-not-discovered",
        fixture_map,
        [b for b in ALL_BDFS if b != "0000:ab:00.0"],
        ["GPUs in the map but not discovered on this node: 0000:ab:00.0"],
    ),
    (
        "extra-gpu-discovered",
        fixture_map,
        [*ALL_BDFS, "0000:cc:00.0"],
        ["GPUs discovered on this node but not in the map: 0000:cc:00.0"],
    ),
    (
        "seven-gpus",
        lambda: _drop(5),
        ALL_BDFS,
        [
            "the map has 7 GPUs, expected 8",
            "module IDs missing from the map: 5",
            "GPUs discovered on this node but not in the map: 0000:ab:00.0",
        ],
    ),
    (
        "duplicate-module-id",
        lambda: _relabel(5, 6),
        ALL_BDFS,
        [
            "module IDs missing from the map: 5",
            "duplicate modules: module 6 on 0000:ab:00.0, 0000:db:00.0",
        ],
    ),
    (
        "module-id-out-of-range",
        lambda: _relabel(8, 9),
        ALL_BDFS,
        ["module IDs outside 1..8: 9", "module IDs missing from the map: 8"],
    ),
    (
        "garbage-discovered-bdf",
        fixture_map,
        [*ALL_BDFS, "gpu9"],
        ["discovered GPU address is not a PCI address: 'gpu9'"],
    ),
]


@pytest.mark.parametrize(
    ("make", "bdfs", "problems"),
    [case[1:] for case in VALIDATE_CASES],
    ids=[case[0] for case in VALIDATE_CASES],
)
def test_validate(make: Callable[[], ModuleMap], bdfs: list[str], problems: list[str]) -> None:
    assert validate(make(), bdfs) == problems


def test_validate_other_gpu_count() -> None:
    assert validate(fixture_map(), ALL_BDFS, gpu_count=4) == [
        "the map has 8 GPUs, expected 4",
        "module IDs outside 1..4: 5,6,7,8",
    ]


# --- save / load ---------------------------------------------------------------------------


def test_default_path() -> None:
    assert DEFAULT_MAP_PATH == Path("/var/lib/gpucaas/module-map.json")


def test_save_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state" / "module-map.json"
    m = fixture_map()
    save(m, path)
    assert load(path) == m
    assert [p.name for p in path.parent.iterdir()] == ["module-map.json"]  # no temp left


def test_save_replaces_an_existing_map(tmp_path: Path) -> None:
    path = tmp_path / "module-map.json"
    save(fixture_map(), path)
    newer = parse_nvidia_smi_xml(FIXTURE_R555)
    save(newer, path)
    assert load(path) == newer


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: _drop(3), r"refusing to save.*7 GPUs, expected 8.*nothing was written"),
        (lambda: _relabel(5, 6), r"refusing to save.*duplicate modules: module 6"),
    ],
    ids=["seven-gpus", "duplicate-module-id"],
)
def test_save_refuses_an_invalid_map(
    tmp_path: Path, make: Callable[[], ModuleMap], pattern: str
) -> None:
    path = tmp_path / "module-map.json"
    with pytest.raises(ModuleMapError, match=pattern):
        save(make(), path)
    assert not path.exists()


def test_load_missing_says_how_to_capture(tmp_path: Path) -> None:
    path = tmp_path / "module-map.json"
    pattern = r"module-map.json: no module map on this node: the file does not exist; .*capture-map"
    with pytest.raises(ModuleMapMissing, match=pattern):
        load(path)


def _doc(**changes: object) -> str:
    doc = fixture_map().to_dict()
    doc.update(changes)
    return json.dumps(doc)


def _dup_doc() -> str:
    doc = fixture_map().to_dict()
    doc["modules"][1]["module_id"] = 1
    return json.dumps(doc)


CORRUPT_CASES: list[tuple[str, str, str]] = [
    ("truncated", _doc()[:200], r"not valid JSON: line \d+"),
    ("empty", "", "not valid JSON"),
    ("json-list", "[]", "expected a JSON object: list"),
    ("foreign-json", json.dumps({"apiVersion": "v1"}), r"not a module map \(kind"),
    ("future-version", _doc(version=2), r"unsupported module map version.*: 2"),
    ("modules-not-list", _doc(modules={}), "'modules' must be a list"),
    ("module-id-string", _doc(modules=[{"module_id": "1"}]), r"modules\[0\].module_id"),
    (
        "bad-bdf",
        _doc(modules=[{"module_id": 1, "bdf": "x", "uuid": "GPU-1"}]),
        r"modules\[0\].bdf is not a PCI address",
    ),
    ("no-uuid", _doc(modules=[{"module_id": 1, "bdf": "0000:18:00.0"}]), r"modules\[0\].uuid"),
    ("no-captured-at", _doc(captured_at=None), "'captured_at' must be a string"),
    ("duplicate-module-id", _dup_doc(), r"stored module map is invalid.*duplicate modules"),
]


@pytest.mark.parametrize(
    ("content", "pattern"),
    [case[1:] for case in CORRUPT_CASES],
    ids=[case[0] for case in CORRUPT_CASES],
)
def test_load_refuses_a_corrupt_file_and_keeps_it(
    tmp_path: Path, content: str, pattern: str
) -> None:
    path = tmp_path / "module-map.json"
    path.write_text(content)
    before = path.stat()
    with pytest.raises(ModuleMapError, match=pattern) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "capture-map" in str(info.value)
    assert path.read_text() == content
    assert path.stat().st_mtime_ns == before.st_mtime_ns


# --- a real capture ------------------------------------------------------------------------

CAPTURED_H200 = DATA / "captured-h200-r580" / "nvidia-smi-q-x.xml"


def test_real_h200_r580_capture_parses_with_module_id_from_platform_info() -> None:
    # Unedited `nvidia-smi -q -x` from one H200 (driver 580.159.04, see that folder's README).
    m = parse_nvidia_smi_xml(CAPTURED_H200)

    assert [(e.module_id, e.bdf, e.product) for e in m.entries] == [
        (1, "0000:00:06.0", "NVIDIA H200")
    ]
    assert m.entries[0].uuid == "GPU-2cd8f179-6cc0-2723-126d-7380f2824cd5"
    assert m.driver_version == "580.159.04"
    # One GPU is not an HGX board: validating against what an 8-GPU node must have says so.
    problems = validate(m, ["0000:00:06.0"])
    assert problems and any("8" in p for p in problems)

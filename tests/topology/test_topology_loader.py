"""Reading board models from TOML (gpucaas.topology._loader): every invalid file is a
ModelError that names the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpucaas.errors import InvalidRequest
from gpucaas.runtime import H100_BAR_GIB, H200_BAR_GIB
from gpucaas.topology import (
    ModelError,
    ModelRegistry,
    UnknownModel,
    get_model,
    load_model_file,
    load_shipped_models,
    parse_model,
)

SHIPPED = Path(__file__).resolve().parents[2] / "src" / "gpucaas" / "topology" / "models"

# A valid 4-GPU buddy table; the cases below break it one field at a time.
VALID = """\
name = "tiny-4"
aliases = ["tiny-four"]
description = "four GPUs"
gpu_count = 4

[[gpu_devices]]
name = "T4"
device_id = 0x1234

[nvswitch]
name = "NVSwitch"
device_id = 0x22a3
count = 1

[bars]
bar0_mib = 16
bar2_gib = 64
bar4_mib = 32

[[partitions]]
id = 0
gpus = [1, 2, 3, 4]
nvlinks = 72

[[partitions]]
id = 1
gpus = [1, 2]
nvlinks = 36

[[partitions]]
id = 2
gpus = [3, 4]
nvlinks = 36

[[partitions]]
id = 3
gpus = [1]
nvlinks = 0

[[partitions]]
id = 4
gpus = [2]
nvlinks = 0

[[partitions]]
id = 5
gpus = [3]
nvlinks = 0

[[partitions]]
id = 6
gpus = [4]
nvlinks = 0
"""

HEADER = 'name = "tiny-4"\ngpu_count = 4\n'


def part(pid: object, gpus: object, nvlinks: object = 0) -> str:
    return f"[[partitions]]\nid = {pid}\ngpus = {gpus}\nnvlinks = {nvlinks}\n"


SINGLES = "".join(part(i, [i]) for i in range(1, 5))


def write(tmp_path: Path, text: str, name: str = "model.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_file_loads(tmp_path: Path) -> None:
    model = load_model_file(write(tmp_path, VALID))
    assert model.name == "tiny-4"
    assert model.aliases == ("tiny-four",)
    assert model.description == "four GPUs"
    assert model.gpu_count == 4
    assert model.sizes == (1, 2, 4)
    assert [p.module_ids for p in model.partitions][:3] == [(1, 2, 3, 4), (1, 2), (3, 4)]
    assert model.partition(0).nvlinks == 72
    assert model.gpu_devices[0].device_id == 0x1234
    assert model.nvswitch is not None and model.nvswitch.count == 1
    assert model.bars is not None and model.bars.bar2_gib == 64
    assert model.nested
    best = model.best_partition(1, 0b0001)
    assert best is not None and best.module_ids == (2,)


def test_an_h200_on_the_h100_board_has_its_own_measured_bar() -> None:
    model = get_model("hgx-h200-8")
    bars = {d.name: d.bar2_gib for d in model.gpu_devices}
    assert bars == {"H100 SXM5": None, "H200": 256}  # 256 GiB: tests/node/data/captured-h200-r580
    assert model.bars is not None and model.bars.bar2_gib == 128
    # the boot budget's per-GPU BARs are the model's
    assert (model.bars.bar2_gib, bars["H200"]) == (H100_BAR_GIB, H200_BAR_GIB)


def test_optional_tables_may_be_left_out() -> None:
    model = parse_model(HEADER + SINGLES, source="minimal")
    assert model.aliases == ()
    assert model.description == ""
    assert model.gpu_devices == ()
    assert model.nvswitch is None
    assert model.bars is None


def test_partitions_are_sorted_by_id_and_gpus_sorted() -> None:
    text = (
        HEADER + part(9, [4, 3, 2, 1]) + part(2, [2]) + part(1, [1]) + part(3, [3]) + part(4, [4])
    )
    model = parse_model(text, source="x")
    assert [p.id for p in model.partitions] == [1, 2, 3, 4, 9]
    assert model.partition(9).module_ids == (1, 2, 3, 4)


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("name = [", "(syntax)", "not valid TOML"),
        ("gpu_count = 4\n" + SINGLES, "name", "is required"),
        ('name = "tiny-4"\n' + SINGLES, "gpu_count", "is required"),
        (HEADER, "partitions", "non-empty array"),
        (HEADER + "partitions = []\n", "partitions", "non-empty array"),
        (HEADER + 'colour = "green"\n' + SINGLES, "colour", "unknown field"),
        (HEADER + part(1, [1]) + "speed = 3\n", "partitions[0].speed", "unknown field"),
        (HEADER + part(0, [5]) + SINGLES, "partitions[0].gpus", "module ID 5 is out of range 1..4"),
        (HEADER + part(0, [0]) + SINGLES, "partitions[0].gpus", "module ID 0 is out of range"),
        (HEADER + SINGLES + part(1, [1, 2]), "partitions[4].id", "partition id 1 appears twice"),
        (HEADER + SINGLES + part(7, [2]), "partitions[4].gpus", "same GPU set as partition 2"),
        (HEADER + part(1, [1, 1]) + SINGLES, "partitions[0].gpus", "lists a module ID twice"),
        (HEADER + part(1, [1]) + part(2, [2]) + part(3, [3]), "partitions", "[4] are in no"),
        (HEADER + part('"one"', [1]) + SINGLES, "partitions[0].id", "must be an integer"),
        (HEADER + part(0, '["1"]') + SINGLES, "partitions[0].gpus", "list of module IDs"),
        (HEADER + part(0, "[true]") + SINGLES, "partitions[0].gpus", "list of module IDs"),
        (HEADER + part(0, "[]") + SINGLES, "partitions[0].gpus", "non-empty list"),
        (HEADER + part(0, "3") + SINGLES, "partitions[0].gpus", "list of module IDs"),
        (HEADER + part(0, [1], "1.5") + SINGLES, "partitions[0].nvlinks", "must be an integer"),
        (HEADER + part(0, [1], -1) + SINGLES, "partitions[0].nvlinks", "-1 must be ≥ 0"),
        (HEADER + part(-1, [1, 2]) + SINGLES, "partitions[0].id", "-1 must be ≥ 0"),
        (
            HEADER + "[[partitions]]\ngpus = [1]\nnvlinks = 0\n" + SINGLES,
            "partitions[0].id",
            "is required",
        ),
        (HEADER + "partitions = [1]\n", "partitions[0]", "must be a table"),
        ('name = "tiny-4"\ngpu_count = "4"\n' + SINGLES, "gpu_count", "must be an integer"),
        ('name = "tiny-4"\ngpu_count = true\n' + SINGLES, "gpu_count", "must be an integer"),
        ('name = "tiny-4"\ngpu_count = 0\n' + SINGLES, "gpu_count", "0 is out of range"),
        ('name = "tiny-4"\ngpu_count = 17\n' + SINGLES, "gpu_count", "must be 1 to 16"),
        ("name = 4\ngpu_count = 4\n" + SINGLES, "name", "must be a string"),
        ('name = "tiny 4"\ngpu_count = 4\n' + SINGLES, "name", "letters, digits and '-'"),
        ('name = ""\ngpu_count = 4\n' + SINGLES, "name", "non-empty"),
        (HEADER + 'aliases = "x"\n' + SINGLES, "aliases", "list of non-empty strings"),
        (HEADER + 'aliases = [""]\n' + SINGLES, "aliases", "list of non-empty strings"),
        (HEADER + "description = 3\n" + SINGLES, "description", "must be a string"),
        (
            HEADER + "[[gpu_devices]]\nname = 'X'\n" + SINGLES,
            "gpu_devices[0].device_id",
            "is required",
        ),
        (
            HEADER + "[[gpu_devices]]\nname = 'X'\ndevice_id = '0x2330'\n" + SINGLES,
            "gpu_devices[0].device_id",
            "must be an integer",
        ),
        (
            HEADER + "[[gpu_devices]]\nname = 'X'\ndevice_id = 1\nbar2_gib = 0\n" + SINGLES,
            "gpu_devices[0].bar2_gib",
            "must be a positive integer",
        ),
        (
            HEADER + "[[gpu_devices]]\nname = 'X'\ndevice_id = 1\nbar_gib = 9\n" + SINGLES,
            "gpu_devices[0].bar_gib",
            "unknown field",
        ),
        (HEADER + "gpu_devices = 3\n" + SINGLES, "gpu_devices", "array"),
        (HEADER + "nvswitch = 3\n" + SINGLES, "nvswitch", "must be a table"),
        (
            HEADER + "[nvswitch]\nname = 'N'\ndevice_id = 1\n" + SINGLES,
            "nvswitch.count",
            "is required",
        ),
        (
            HEADER + "[bars]\nbar0_mib = 16\nbar2_gib = 'big'\nbar4_mib = 32\n" + SINGLES,
            "bars.bar2_gib",
            "must be an integer",
        ),
        (HEADER + "bars = 1\n" + SINGLES, "bars", "must be a table"),
        (
            HEADER + "".join(part(i, [1 + i % 4]) for i in range(65)),
            "partitions",
            "at most 64",
        ),
    ],
    ids=[
        "bad TOML",
        "missing name",
        "missing gpu_count",
        "no partitions",
        "empty partitions",
        "unknown top-level field",
        "unknown partition field",
        "module id above gpu_count",
        "module id zero",
        "duplicate partition id",
        "duplicate GPU set",
        "module listed twice in one partition",
        "GPU in no partition",
        "non-int partition id",
        "non-int module id",
        "bool module id",
        "empty GPU list",
        "GPU list not a list",
        "non-int nvlinks",
        "negative nvlinks",
        "negative partition id",
        "partition without id",
        "partitions not tables",
        "gpu_count as string",
        "gpu_count as bool",
        "gpu_count zero",
        "gpu_count above FM's 16",
        "name not a string",
        "name with a space",
        "empty name",
        "aliases not a list",
        "empty alias",
        "description not a string",
        "gpu device without device_id",
        "gpu device id as string",
        "gpu device bar2_gib zero",
        "gpu device unknown field",
        "gpu_devices not an array",
        "nvswitch not a table",
        "nvswitch without count",
        "bar not an integer",
        "bars not a table",
        "more partitions than FM holds",
    ],
)
def test_invalid_model_names_the_file_and_the_field(
    tmp_path: Path, text: str, field: str, reason: str
) -> None:
    path = write(tmp_path, text, "broken-model.toml")
    with pytest.raises(ModelError) as info:
        load_model_file(path)
    err = info.value
    assert err.path == str(path)
    assert err.field == field
    assert reason in err.reason
    message = str(err)
    assert str(path) in message
    assert repr(field) in message
    assert reason in message
    assert isinstance(err, InvalidRequest)


def test_parse_model_names_its_source() -> None:
    with pytest.raises(ModelError, match=r"invalid board model custom-fm\.toml: field 'name'"):
        parse_model("gpu_count = 4\n" + SINGLES, source="custom-fm.toml")


def test_missing_file_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ModelError) as info:
        load_model_file(str(path))
    assert info.value.field == "(file)"
    assert str(path) in str(info.value)
    assert "cannot read it" in str(info.value)


@pytest.mark.parametrize("name", ["hgx-h100-8", "hgx-b200-8"], ids=lambda n: n)
def test_shipped_files_load_from_disk_to_the_same_table(name: str) -> None:
    model = load_model_file(SHIPPED / f"{name}.toml")
    shipped = get_model(name)
    assert model.partitions == shipped.partitions
    assert model.gpu_devices == shipped.gpu_devices
    assert model.bars == shipped.bars
    assert model.aliases == shipped.aliases


def test_load_shipped_models_maps_names_and_aliases() -> None:
    models = load_shipped_models()
    assert set(models) == {
        "hgx-h100-8",
        "hgx-h200-8",
        "hgx-h800-8",
        "hgx-h20-8",
        "hgx-b200-8",
        "hgx-b300-8",
    }
    assert models["hgx-h200-8"] is models["hgx-h100-8"]
    assert models["hgx-b300-8"] is models["hgx-b200-8"]


def test_registry_of_a_loaded_model(tmp_path: Path) -> None:
    model = load_model_file(write(tmp_path, VALID))
    registry = ModelRegistry({"tiny-4": model, "tiny-four": model})
    assert registry.get("tiny-four") is model
    assert registry.names() == ["tiny-4"]
    assert "tiny-four" in registry
    with pytest.raises(UnknownModel, match=r"unknown board model 'tiny-5'; known models: tiny-4"):
        registry.get("tiny-5")

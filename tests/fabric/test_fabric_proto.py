"""The committed gRPC code is exactly what grpc_tools.protoc makes of fabric.proto."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PROTO = "gpucaas/fabric/proto/fabric.proto"
GENERATED = ("fabric_pb2.py", "fabric_pb2.pyi", "fabric_pb2_grpc.py")


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    protoc = pytest.importorskip(
        "grpc_tools.protoc",
        reason="grpcio-tools is missing: install the dev extras (pip install -e '.[dev]')",
    )
    (tmp_path / PROTO).parent.mkdir(parents=True)
    shutil.copy(SRC / PROTO, tmp_path / PROTO)
    code = protoc.main(
        [
            "protoc",
            f"-I{tmp_path}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(tmp_path / PROTO),
        ]
    )
    assert code == 0
    for name in GENERATED:
        fresh = (tmp_path / "gpucaas/fabric/proto" / name).read_text()
        committed = (SRC / "gpucaas/fabric/proto" / name).read_text()
        assert fresh == committed, (
            f"{name} is stale; regenerate: cd src && python -m grpc_tools.protoc -I. "
            f"--python_out=. --grpc_python_out=. --pyi_out=. {PROTO}"
        )

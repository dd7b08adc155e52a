"""RemoteFabric refuses a partition id protobuf cannot carry (uint32) as NvfmLibrary does, with
FabricBadRequest, instead of letting protobuf's ValueError out (issue 13, point 10)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gpucaas.fabric import FabricBadRequest, RemoteFabric

CALLS: dict[str, Callable[[RemoteFabric, int], None]] = {
    "activate": lambda fabric, pid: fabric.activate(pid),
    "deactivate": lambda fabric, pid: fabric.deactivate(pid),
    "set_activated": lambda fabric, pid: fabric.set_activated([3, pid]),
}


@pytest.mark.parametrize("pid", [-1, 2**32, 10**20], ids=["negative", "2^32", "20 digits"])
@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_an_id_out_of_uint32_is_a_bad_request_before_any_call(
    tmp_path: Path, call: Callable[[RemoteFabric, int], None], pid: int
) -> None:
    # No controller listens there: the refusal comes before the channel is used.
    with RemoteFabric(str(tmp_path / "absent.sock")) as fabric:
        with pytest.raises(FabricBadRequest, match="partition ids are 0 to 4294967295"):
            call(fabric, pid)

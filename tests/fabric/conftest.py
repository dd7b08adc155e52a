"""Fixtures for the fabric tests: ``fakenvfm``, a C stand-in for NVIDIA's libnvfm.so.

``fakenvfm.c`` is compiled once per session with the machine's gcc into a temporary
directory; tests that need it skip, saying why, when gcc is missing. The library keeps
its state in C globals, and :class:`gpucaas.fabric.NvfmLibrary` dlopens the same file, so
the ``fakenvfm`` fixture resets that state before each test and checks afterwards that the
test closed every connection it opened.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

FAKENVFM_SOURCE = Path(__file__).with_name("fakenvfm.c")
GCC_FLAGS = ("-shared", "-fPIC", "-O1", "-Wall", "-Werror")


class FakeNvfm:
    """The fake library's test hooks (the fake_* functions of fakenvfm.c), typed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        signatures: dict[str, tuple[list[type], type | None]] = {
            "fake_reset": ([], None),
            "fake_fail_next": ([ctypes.c_char_p, ctypes.c_int], None),
            "fake_restart": ([], None),
            "fake_set_bogus_counts": ([ctypes.c_long, ctypes.c_long], None),
            "fake_add_failed_port": (
                [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint],
                ctypes.c_int,
            ),
            "fake_last_address": ([], ctypes.c_char_p),
            "fake_last_address_type": ([], ctypes.c_int),
            "fake_last_timeout_ms": ([], ctypes.c_uint),
            "fake_last_unix_flag": ([], ctypes.c_uint),
            "fake_last_stamp": ([], ctypes.c_uint),
            "fake_last_stamp_function": ([], ctypes.c_char_p),
            "fake_initialised": ([], ctypes.c_int),
            "fake_init_calls": ([], ctypes.c_int),
            "fake_shutdown_calls": ([], ctypes.c_int),
            "fake_connect_calls": ([], ctypes.c_int),
            "fake_disconnect_calls": ([], ctypes.c_int),
            "fake_open_handles": ([], ctypes.c_int),
            "fake_active_mask": ([], ctypes.c_ulong),
            "fake_sizeof": ([ctypes.c_char_p], ctypes.c_long),
            "fake_offsetof": ([ctypes.c_char_p], ctypes.c_long),
            "fake_expected_version": ([ctypes.c_char_p], ctypes.c_uint),
            "fmLibInit": ([], ctypes.c_int),
            "fmLibShutdown": ([], ctypes.c_int),
        }
        for name, (argtypes, restype) in signatures.items():
            function = getattr(self.lib, name)
            function.argtypes = argtypes
            function.restype = restype

    def reset(self) -> None:
        self.lib.fake_reset()

    def fail_next(self, function: str, code: int) -> None:
        """Make the next call of ``function`` (e.g. "fmConnect") return ``code``."""
        self.lib.fake_fail_next(function.encode(), code)

    def restart(self) -> None:
        """FM restarted with --restart: active set forgotten until set-activated."""
        self.lib.fake_restart()

    def set_bogus_counts(self, partitions: int = -1, gpus: int = -1) -> None:
        self.lib.fake_set_bogus_counts(partitions, gpus)

    def add_failed_port(self, *, switch: bool, uuid: str, bus: str, port: int) -> None:
        assert self.lib.fake_add_failed_port(int(switch), uuid.encode(), bus.encode(), port) == 0

    @property
    def last_address(self) -> str:
        return bytes(self.lib.fake_last_address()).decode()

    @property
    def last_address_type(self) -> int:
        return int(self.lib.fake_last_address_type())

    @property
    def last_timeout_ms(self) -> int:
        return int(self.lib.fake_last_timeout_ms())

    @property
    def last_unix_flag(self) -> int:
        return int(self.lib.fake_last_unix_flag())

    @property
    def last_stamp(self) -> tuple[str, int]:
        """(the call, the version stamp it was given) of the last versioned call."""
        return (
            bytes(self.lib.fake_last_stamp_function()).decode(),
            int(self.lib.fake_last_stamp()),
        )

    @property
    def initialised(self) -> bool:
        return bool(self.lib.fake_initialised())

    def calls(self) -> dict[str, int]:
        return {
            "init": int(self.lib.fake_init_calls()),
            "shutdown": int(self.lib.fake_shutdown_calls()),
            "connect": int(self.lib.fake_connect_calls()),
            "disconnect": int(self.lib.fake_disconnect_calls()),
        }

    @property
    def open_handles(self) -> int:
        return int(self.lib.fake_open_handles())

    @property
    def active_ids(self) -> frozenset[int]:
        mask = int(self.lib.fake_active_mask())
        return frozenset(i for i in range(mask.bit_length()) if mask >> i & 1)

    def sizeof(self, struct: str) -> int:
        return int(self.lib.fake_sizeof(struct.encode()))

    def offsetof(self, struct: str, field: str) -> int:
        return int(self.lib.fake_offsetof(f"{struct}.{field}".encode()))

    def expected_version(self, struct: str) -> int:
        return int(self.lib.fake_expected_version(struct.encode()))

    def lib_init(self) -> int:
        """Call the fake's fmLibInit directly, as another user in the process would."""
        return int(self.lib.fmLibInit())

    def lib_shutdown(self) -> int:
        return int(self.lib.fmLibShutdown())


@pytest.fixture(scope="session")
def fakenvfm_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the compiled fake libnvfm (built once per session)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found on PATH; it is needed to build tests/fabric/fakenvfm.c")
    out = tmp_path_factory.mktemp("fakenvfm") / "libfakenvfm.so"
    result = subprocess.run(
        [gcc, *GCC_FLAGS, "-o", str(out), str(FAKENVFM_SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"gcc could not build {FAKENVFM_SOURCE.name}:\n{result.stderr}")
    return out


@pytest.fixture
def fakenvfm(fakenvfm_library: Path) -> Iterator[FakeNvfm]:
    """The fake library, reset; fails the test if it leaves a connection open."""
    fake = FakeNvfm(fakenvfm_library)
    fake.reset()
    yield fake
    leaked = fake.open_handles
    fake.reset()
    assert leaked == 0, f"the test left {leaked} fmConnect handle(s) open: close NvfmLibrary"

"""tests/node's helper modules (the sysfs fixture, the test kubelet) for tests in other
folders: tests/node has no package, so they are loaded by file, once."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

NODE_TESTS = Path(__file__).resolve().parent / "node"


def node_test_module(name: str) -> ModuleType:
    """``tests/node/<name>.py`` as module ``name``."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, NODE_TESTS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]

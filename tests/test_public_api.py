"""Every package's public surface is its ``__all__`` (STYLE.md §1, as httpx's
test_exported_members): sorted, unique, existing, public, and complete."""

from __future__ import annotations

import importlib
import inspect
import traceback
from types import ModuleType

import pytest

from gpucaas.errors import GpucaasError

PUBLIC_MODULES = [
    "gpucaas.cdi",
    "gpucaas.client",
    "gpucaas.control",
    "gpucaas.errors",
    "gpucaas.fabric",
    "gpucaas.node",
    "gpucaas.node.deviceplugin",
    "gpucaas.node.discovery",
    "gpucaas.node.health",
    "gpucaas.node.modulemap",
    "gpucaas.node.vfio",
    "gpucaas.placement",
    "gpucaas.runtime",
    "gpucaas.sim",
    "gpucaas.topology",
]


def _isort_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 "isort-style" order: CONSTANTS, then Classes, then functions."""
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def _exports(module_name: str) -> tuple[ModuleType, list[str]]:
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module_name} has no __all__: list its public names"
    return module, list(exported)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES, ids=PUBLIC_MODULES)
def test_all_is_sorted_unique_and_public(module_name: str) -> None:
    module, exported = _exports(module_name)
    assert exported, f"{module_name}.__all__ is empty"
    assert len(set(exported)) == len(exported), "duplicate names in __all__"
    assert exported == sorted(exported, key=_isort_key), "__all__ is not sorted"
    for name in exported:
        assert not name.startswith("_"), f"{module_name}.__all__ exports private {name}"
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name}"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES, ids=PUBLIC_MODULES)
def test_every_public_name_defined_in_the_package_is_exported(module_name: str) -> None:
    """A public class or function the package defines (not one it merely imports from a
    sibling package) is in ``__all__``; nothing leaks out unlisted."""
    module, exported = _exports(module_name)
    package = module_name if hasattr(module, "__path__") else module_name.rpartition(".")[0]
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        defined_in = getattr(value, "__module__", None)
        if not isinstance(defined_in, str) or not (
            defined_in == module_name or defined_in.startswith(f"{package}.")
        ):
            continue
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        assert name in exported, f"{module_name}.{name} is public but not in __all__"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES, ids=PUBLIC_MODULES)
def test_exported_exceptions_join_the_error_tree(module_name: str) -> None:
    module, exported = _exports(module_name)
    for name in exported:
        value = getattr(module, name)
        if inspect.isclass(value) and issubclass(value, BaseException):
            assert issubclass(value, GpucaasError), f"{module_name}.{name} is no GpucaasError"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES, ids=PUBLIC_MODULES)
def test_exported_exceptions_show_the_public_module(module_name: str) -> None:
    """Tracebacks and reprs show ``gpucaas.fabric.PartitionInUse``, never the private module
    that defines it (httpx sets ``__module__`` the same way)."""
    module, exported = _exports(module_name)
    for name in exported:
        value = getattr(module, name)
        if not (inspect.isclass(value) and issubclass(value, BaseException)):
            continue
        assert value.__module__ in PUBLIC_MODULES, f"{module_name}.{name}: {value.__module__}"
        line = traceback.format_exception_only(value.__new__(value))[-1]
        assert line.startswith(f"{value.__module__}.{name}"), line

"""Imports point one way (DESIGN.md "Layers", STYLE.md §1).

Read statically from the source (every ``import``, module level or inside a function, since
a lazy import is still a dependency), plus what importing a package really loads. The rules:

1. The pure core (``topology``, ``placement``) imports no shell package.
2. ``control`` (the server) and ``client`` (the SDK) never import each other: both import the
   shared wire leaf. The client loads no server dependency.
3. A private ``_module`` of a package is imported only from inside that package. The root's
   own ``gpucaas._name`` modules are the shared leaves, importable by everyone.
4. Shared leaves import only the standard library (and pydantic, for the wire models).
5. What the control plane imports from the node side (``gpucaas.cdi``, ``gpucaas.node.health``)
   loads neither grpc nor yaml; the client loads no server dependency.

``test_the_checker_catches_each_kind`` shows each rule failing on a planted violation.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import gpucaas

SRC = Path(gpucaas.__file__).resolve().parent

CORE = {"topology", "placement"}
SHELL = {"fabric", "node", "control", "client", "cli", "sim", "runtime", "cdi", "servicevm"}
NEVER_EACH_OTHER = {("control", "client"), ("client", "control")}
LEAF_ALLOWED_THIRD_PARTY = {"pydantic"}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name, e.g. gpucaas.control._app
    imported: str  # dotted name as resolved, e.g. gpucaas.client._states
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(root: Path) -> list[Import]:
    found: list[Import] = []
    for path in sorted(root.rglob("*.py")):
        if "proto" in path.relative_to(root).parts:
            continue  # generated gRPC code
        name = module_name(root, path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.extend(Import(name, alias.name, node.lineno) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                found.append(Import(name, target, node.lineno))
                # ``from pkg import _private`` names a private module too.
                found.extend(
                    Import(name, f"{target}.{alias.name}", node.lineno)
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                )
    return found


def violations(root: Path) -> list[str]:
    """Every import that breaks a rule, as ``importer:line -> imported (rule)``."""
    stdlib = sys.stdlib_module_names
    found: list[str] = []
    for imp in imports_of(root):
        if imp.imported.split(".")[0] != "gpucaas":
            if imp.importer.split(".")[1].startswith("_") and imp.importer.count(".") == 1:
                top = imp.imported.split(".")[0]
                if top not in stdlib and top not in LEAF_ALLOWED_THIRD_PARTY:
                    found.append(f"{imp.importer}:{imp.line} -> {imp.imported} (leaf: stdlib only)")
            continue
        src_parts = imp.importer.split(".")
        dst_parts = imp.imported.split(".")
        src_pkg = src_parts[1] if len(src_parts) > 1 else None
        dst_pkg = dst_parts[1] if len(dst_parts) > 1 else None
        if src_pkg is None or dst_pkg is None or src_pkg == dst_pkg:
            if src_pkg is not None and src_pkg.startswith("_") and len(src_parts) == 2:
                if dst_pkg not in (None, "errors") and not dst_pkg.startswith("_"):
                    found.append(
                        f"{imp.importer}:{imp.line} -> {imp.imported} (leaf imports a package)"
                    )
            continue
        root_leaf = dst_pkg.startswith("_") or dst_pkg == "errors"
        if src_pkg.startswith("_") and len(src_parts) == 2 and not root_leaf:
            found.append(f"{imp.importer}:{imp.line} -> {imp.imported} (leaf imports a package)")
        if src_pkg in CORE and dst_pkg in SHELL:
            found.append(f"{imp.importer}:{imp.line} -> {imp.imported} (core imports shell)")
        if (src_pkg, dst_pkg) in NEVER_EACH_OTHER:
            found.append(f"{imp.importer}:{imp.line} -> {imp.imported} ({src_pkg} -> {dst_pkg})")
        private = [p for p in dst_parts[2:] if p.startswith("_") and not p.startswith("__")]
        if private and not root_leaf:
            found.append(
                f"{imp.importer}:{imp.line} -> {imp.imported} (private module of {dst_pkg})"
            )
    return sorted(set(found))


def test_imports_point_one_way() -> None:
    found = violations(SRC)
    assert not found, "forbidden imports:\n" + "\n".join(found)


PLANTED = {
    "topology/__init__.py": "from gpucaas.node import thing\n",
    "control/__init__.py": "from gpucaas.client import State\n",
    "client/__init__.py": "def f():\n    from gpucaas.control import app\n",
    "cli/__init__.py": "from gpucaas.fabric._server import serve\n",
    "node/__init__.py": "from gpucaas.fabric import _sim\n",
    "_leaf.py": "import grpc\nfrom gpucaas.fabric import x\n",
    "fabric/__init__.py": "from ._sim import ok\nfrom gpucaas._files import fine\n",
}


def test_the_checker_catches_each_kind(tmp_path: Path) -> None:
    root = tmp_path / "gpucaas"
    for rel, text in PLANTED.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "__init__.py").write_text("")
    found = "\n".join(violations(root))
    for expected in [
        "gpucaas.topology:1 -> gpucaas.node (core imports shell)",
        "gpucaas.control:1 -> gpucaas.client (control -> client)",
        "gpucaas.client:2 -> gpucaas.control (client -> control)",
        "gpucaas.cli:1 -> gpucaas.fabric._server (private module of fabric)",
        "gpucaas.node:1 -> gpucaas.fabric._sim (private module of fabric)",
        "gpucaas._leaf:1 -> grpc (leaf: stdlib only)",
        "gpucaas._leaf:2 -> gpucaas.fabric (leaf imports a package)",
    ]:
        assert expected in found
    assert "gpucaas.fabric:" not in found, "a package's own private modules are its own"


def _loaded_by(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return {name.split(".")[0] for name in out.split()}


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        ("import gpucaas.client", {"fastapi", "sqlalchemy", "uvicorn", "grpc", "yaml"}),
        ("import gpucaas._files, gpucaas._jsonlog", {"grpc", "yaml", "pydantic", "fastapi"}),
        # What the control plane takes from the node side: the CDI names and the
        # unhealthy-GPU annotation. Only the device plugin loads gRPC.
        ("import gpucaas.cdi", {"grpc", "yaml", "lightkube"}),
        ("import gpucaas.node", {"grpc", "yaml", "lightkube", "prometheus_client"}),
        ("import gpucaas.node.health", {"grpc", "yaml", "lightkube", "prometheus_client"}),
        (
            "import gpucaas.node.discovery, gpucaas.node.modulemap, gpucaas.node.vfio",
            {"grpc", "yaml", "lightkube"},
        ),
    ],
    ids=[
        "client-without-server",
        "leaves-stdlib-only",
        "cdi",
        "node",
        "node-health",
        "discovery-modulemap-vfio",
    ],
)
def test_what_an_import_loads(statement: str, forbidden: set[str]) -> None:
    loaded = _loaded_by(statement) & forbidden
    assert not loaded, f"{statement!r} loads {sorted(loaded)}"


def test_the_device_plugin_loads_grpc() -> None:
    """The check above can see a module load: the device plugin does load gRPC."""
    assert "grpc" in _loaded_by("import gpucaas.node.deviceplugin")

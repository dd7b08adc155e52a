"""containerd's configuration for the Kata GPU runtime: a drop-in file, or a merge into config.toml.

The kubelet asks containerd for the RuntimeClass's ``handler``; containerd must map that name
to the Kata shim and Kata's NVIDIA GPU configuration, and must resolve the CDI names the device
plugin returns. This module writes exactly those settings and nothing else, for the two
containerd families a node may run. Pure: text in, text out; the CLI reads and writes files.

Where the keys live (checked against containerd's ``docs/cri/config.md``, the CRI config
structs -- ``pkg/cri/config/config.go`` in 1.7, ``internal/cri/config/config.go`` in 2.x --
and the containerd 1.7.35 and 2.4.2 sources and binaries)::

    containerd 1.7   version = 2
        plugins."io.containerd.grpc.v1.cri"                       enable_cdi, cdi_spec_dirs
        plugins."io.containerd.grpc.v1.cri".containerd.runtimes.<handler>
    containerd 2.x   version = 3 (or 4, from 2.3)
        plugins."io.containerd.cri.v1.runtime"                    cdi_spec_dirs
        plugins."io.containerd.cri.v1.runtime".containerd.runtimes.<handler>

Each runtime table takes ``runtime_type``, ``runtime_path`` (the shim binary, so no
``containerd-shim-kata-qemu-nvidia-gpu-v2`` is needed on ``$PATH``), ``pod_annotations``
(Go ``path.Match`` globs passed to the shim; Kata reads ``io.katacontainers.*`` per-pod
overrides), ``privileged_without_host_devices`` (a privileged pod must not get the host's
``/dev`` in a VM) and ``options``, which containerd hands to the shim: the Kata shim reads
``ConfigPath`` (containerd's ``runtimeoptions.Options``). These are the ``Runtime`` struct's
``toml`` tags in both families.

CDI. containerd 1.7 defaults ``enable_cdi`` to false (``pkg/cri/config/config_unix.go``), so
1.7 output sets it to true. containerd 2.0 turned it on by default (docs/containerd-2.0.md,
"CDI is now enabled by default"), 2.2 deprecated the key and 2.4 removed it ("CDI support
will always be enabled", RELEASES.md; 2.4.2 logs ``Ignoring unknown key in TOML for plugin
... key=enable_cdi``). For 2.x we therefore never add the key; a merge only turns an
existing ``enable_cdi = false`` to true, because containerd 2.0-2.3 obey it.
``cdi_spec_dirs`` exists in every version.

Config versions. 1.7 accepts version 1 and 2 only (``ValidateV2``: "unsupported config
version 3"). 2.x reads 1, 2, 3 and, from 2.3, 4 (``version.ConfigVersion``; version 4 moves
the gRPC/TTRPC/debug/metrics server settings into plugins, the CRI plugin IDs are the same
as in 3), migrating older files on every start. We write version 3, the oldest 2.x layout,
so one drop-in serves 2.0 through 2.4; a merge keeps the file's own version (3 or 4).

Imports. The main config lists drop-ins with ``imports = ["/etc/containerd/conf.d/*.toml"]``
(globs allowed, relative paths resolved against the importing file). How they merge differs:

- containerd 1.7 (``services/server/config/config.go``, ``mergeConfig``): plugin sections are
  *replaced whole*. A drop-in that defines ``plugins."io.containerd.grpc.v1.cri"`` throws away
  the main file's whole CRI section (sandbox image, runc's ``SystemdCgroup``, registry
  config, ...). Use ``merge`` on 1.7 hosts whose config.toml has CRI settings.
- containerd 2.x (``cmd/containerd/server/config/config.go``): plugin sections merge key by
  key (containerd 2.0, "Allow sections of Plugins to be merged", #9982); a scalar or a list
  in the drop-in replaces the main file's (lists are not joined). containerd PR #12891 made
  a drop-in of a higher version than the main file fatal ("drop-in config version 4 higher
  than root config version 2", seen with 2.3.2); 2.4.2 migrates each file instead. Keep the
  main file at version 3 or 4 (``containerd config migrate``) and both work.

Unknown keys and wrong types (both families, tried with ``containerd config dump``): an
unknown key is ignored -- silently in 1.7 (go-toml v1 ``Unmarshal``), with a warning
("Ignoring unknown key in TOML") in 2.x -- so a misspelled key does nothing. A value of the
wrong type fails the load (1.7: "(5, 1): Can't convert yes(string) to bool"; 2.x: "cannot
decode TOML string into struct field config.Runtime.PrivilegedWithoutHostDevices of type
bool") and containerd does not start. That is why ``merge`` refuses a file where one of our
keys has the wrong type.

Refuses: text that is not TOML, a config version the requested containerd does not use, and
keys of ours that hold the wrong type. It never deletes an operator's key outside our runtime
table; inside it, only the test mapping removes Kata-only keys.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

import tomlkit
import tomlkit.exceptions
import tomlkit.items
from tomlkit.container import Container, OutOfOrderTableProxy

from gpucaas.errors import MisuseError

from ._errors import RuntimeConfigError
from ._overhead import RUNTIME_CLASS_NAME

KATA_RUNTIME_TYPE = "io.containerd.kata-qemu-nvidia-gpu.v2"
"""The shim v2 runtime type of Kata's NVIDIA GPU runtime (kata-deploy's name for it)."""
KATA_SHIM_PATH = "/opt/kata/bin/containerd-shim-kata-v2"
"""Where kata-deploy installs the Kata shim; ``runtime_path`` points containerd at it."""
KATA_CONFIG_PATH = "/opt/kata/share/defaults/kata-containers/configuration-qemu-nvidia-gpu.toml"
"""Kata's NVIDIA GPU configuration, passed to the shim as ``options.ConfigPath``."""
KATA_POD_ANNOTATIONS: tuple[str, ...] = ("io.katacontainers.*",)
"""Pod annotations containerd passes to the Kata shim (per-pod Kata overrides)."""
CDI_SPEC_DIRS: tuple[str, ...] = ("/etc/cdi", "/var/run/cdi")
"""Where containerd looks for CDI specs: containerd's default, and where the node agent
writes (``gpucaas node cdi generate --dir /var/run/cdi``)."""
RUNC_RUNTIME_TYPE = "io.containerd.runc.v2"
"""runc's runtime type, used only by the test mapping (``test_runc_alias``)."""
DROPIN_PATH = "/etc/containerd/conf.d/gpucaas-kata.toml"
"""Where the drop-in goes by default; the main config imports ``/etc/containerd/conf.d/*.toml``."""

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class ContainerdVersion(StrEnum):
    """The containerd family a node runs: the config layout differs between them."""

    V1_7 = "1.7"
    """containerd 1.7: config version 2, CRI plugin ``io.containerd.grpc.v1.cri``."""
    V2 = "2"
    """containerd 2.x: config version 3 (4 from 2.3), CRI plugin
    ``io.containerd.cri.v1.runtime``."""

    @property
    def config_version(self) -> int:
        """The ``version`` we write in a drop-in."""
        return 2 if self is ContainerdVersion.V1_7 else 3

    @property
    def accepted_versions(self) -> tuple[int, ...]:
        """The ``version`` values of a main config we merge into for this family."""
        return (2,) if self is ContainerdVersion.V1_7 else (3, 4)

    @property
    def cri_plugin(self) -> str:
        """The plugin ID whose table holds the runtimes and the CDI keys."""
        return (
            "io.containerd.grpc.v1.cri"
            if self is ContainerdVersion.V1_7
            else ("io.containerd.cri.v1.runtime")
        )


@dataclass(frozen=True)
class KataRuntime:
    """The runtime handler(s) to configure, and where the Kata pieces are on the host.

    ``aliases`` are more handler names with the same settings (a RuntimeClass per partition
    size can use its own handler). ``test_runc_alias`` is for test beds without VMs only: every
    handler then maps to runc (``io.containerd.runc.v2``) so pods of the Kata RuntimeClass run
    as plain containers, and the Kata-only keys are left out (a merge removes them).
    """

    name: str = RUNTIME_CLASS_NAME
    runtime_type: str = KATA_RUNTIME_TYPE
    runtime_path: str = KATA_SHIM_PATH
    config_path: str = KATA_CONFIG_PATH
    cdi_spec_dirs: tuple[str, ...] = CDI_SPEC_DIRS
    pod_annotations: tuple[str, ...] = KATA_POD_ANNOTATIONS
    aliases: tuple[str, ...] = ()
    test_runc_alias: bool = False

    def __post_init__(self) -> None:
        for handler in (self.name, *self.aliases):
            if not isinstance(handler, str) or not _DNS_LABEL.fullmatch(handler):
                raise RuntimeConfigError(
                    "runtime",
                    f"handler name {handler!r} is not a DNS label",
                    "use lower-case letters, digits and '-', at most 63 characters "
                    "(Kubernetes requires it of RuntimeClass.handler)",
                )
        if len(set(self.handlers)) != len(self.handlers):
            raise RuntimeConfigError(
                "runtime", f"handler names repeat: {list(self.handlers)}", "give each once"
            )
        for what, path in (("runtime path", self.runtime_path), ("config path", self.config_path)):
            if not path.startswith("/"):
                raise RuntimeConfigError(
                    "runtime", f"{what} {path!r} is not absolute", "pass an absolute path"
                )
        if not self.cdi_spec_dirs or not all(d.startswith("/") for d in self.cdi_spec_dirs):
            raise RuntimeConfigError(
                "runtime",
                f"CDI spec dirs {list(self.cdi_spec_dirs)} must be absolute paths, at least one",
                f"pass e.g. {' '.join('--cdi-spec-dir ' + d for d in CDI_SPEC_DIRS)}",
            )

    @property
    def handlers(self) -> tuple[str, ...]:
        """Every handler name configured: ``name`` first, then the aliases."""
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class Change:
    """One key a merge set: ``key`` is its dotted TOML path, ``old`` its value before (None:
    it was not set), ``new`` after (None: removed)."""

    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        old = "(unset)" if self.old is None else _toml_value(self.old)
        new = "(removed)" if self.new is None else _toml_value(self.new)
        return f"{self.key}: {old} -> {new}"


@dataclass(frozen=True)
class Merged:
    """The result of :func:`merge_containerd_config`: the new text and what changed. No
    changes means ``text`` is the input, byte for byte."""

    text: str
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class DropIn:
    """A drop-in file for containerd's ``imports``: ``text`` to write at ``path``,
    ``imports_line`` for the main config, and ``notes`` the operator must read."""

    text: str
    path: str
    imports_line: str
    notes: tuple[str, ...] = field(default=())


# --- the settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Setting:
    """One key we own: ``keys`` from the document root, ``value`` to set (None: remove it),
    ``ensure_items``: a list to which our items are added rather than replacing it."""

    keys: tuple[str, ...]
    value: Any
    ensure_items: bool = False
    only_if_present: bool = False


def _settings(version: ContainerdVersion, runtime: KataRuntime) -> list[_Setting]:
    """Every key we set, in the order they appear in a drop-in."""
    cri = ("plugins", version.cri_plugin)
    settings: list[_Setting] = []
    if version is ContainerdVersion.V1_7:
        settings.append(_Setting((*cri, "enable_cdi"), True))
    else:
        # On by default from 2.0, no longer a key from 2.4: only undo an explicit false.
        settings.append(_Setting((*cri, "enable_cdi"), True, only_if_present=True))
    settings.append(_Setting((*cri, "cdi_spec_dirs"), list(runtime.cdi_spec_dirs), True))
    for handler in runtime.handlers:
        table = (*cri, "containerd", "runtimes", handler)
        if runtime.test_runc_alias:
            settings += [
                _Setting((*table, "runtime_type"), RUNC_RUNTIME_TYPE),
                _Setting((*table, "runtime_path"), None),
                _Setting((*table, "options", "ConfigPath"), None),
            ]
            continue
        settings += [
            _Setting((*table, "runtime_type"), runtime.runtime_type),
            _Setting((*table, "runtime_path"), runtime.runtime_path),
            _Setting((*table, "privileged_without_host_devices"), True),
            _Setting((*table, "pod_annotations"), list(runtime.pod_annotations), True),
            _Setting((*table, "options", "ConfigPath"), runtime.config_path),
        ]
    return settings


# --- drop-in ------------------------------------------------------------------------------------


def containerd_dropin(
    version: ContainerdVersion,
    runtime: KataRuntime | None = None,
    *,
    path: str = DROPIN_PATH,
) -> DropIn:
    """A complete, small containerd config holding only our settings, for ``imports``.

    Parameters:
        version: the containerd family of the node (the file's ``version`` and plugin IDs).
        runtime: the handler(s) and Kata paths (defaults: :class:`KataRuntime`).
        path: where the operator will put the file; it only shapes ``imports_line``.

    The notes say what the operator must check: on containerd 1.7 the drop-in *replaces* the
    main file's whole CRI section; on 2.x the main file must be version 3 or 4. Raises
    :class:`RuntimeConfigError` for a relative ``path``.
    """
    runtime = runtime or KataRuntime()
    if not path.startswith("/"):
        raise RuntimeConfigError("drop-in", f"path {path!r} is not absolute", "pass one")
    glob = str(PurePosixPath(path).parent / "*.toml")
    imports_line = f'imports = ["{glob}"]'
    notes = [
        f"add `{imports_line}` to the main config (/etc/containerd/config.toml), next to its "
        "`version`, then restart containerd; containerd merges imported files into the main one"
    ]
    if version is ContainerdVersion.V1_7:
        notes.append(
            "containerd 1.7 replaces whole plugin sections from imported files: this drop-in "
            f'replaces the main config\'s entire [plugins."{version.cri_plugin}"] section '
            "(sandbox image, runc SystemdCgroup, registry...); if the main config has CRI "
            "settings, use --merge instead"
        )
    else:
        notes.append(
            "keep the main config at version 3 or 4: some containerd 2.x releases (2.3) refuse "
            "a drop-in of a higher version than the main file and do not start (run "
            "`containerd config migrate` on a version 2 file first)"
        )
    if runtime.test_runc_alias:
        notes.append(
            f"TEST ONLY: handler(s) {', '.join(runtime.handlers)} map to runc, not Kata VMs"
        )

    doc = tomlkit.document()
    doc.add(tomlkit.comment("Generated by `gpucaas node runtime-config containerd`."))
    doc.add(tomlkit.comment(f"containerd {version.value}: load it from the main config with"))
    doc.add(tomlkit.comment(f"  {imports_line}"))
    if version is ContainerdVersion.V1_7:
        doc.add(tomlkit.comment("containerd 1.7 replaces the main config's CRI section with this."))
    if runtime.test_runc_alias:
        doc.add(tomlkit.comment("TEST ONLY: the Kata handler names run plain runc containers."))
    doc.add("version", version.config_version)
    created: list[_Table] = []
    for setting in _settings(version, runtime):
        if setting.value is None or setting.only_if_present:
            continue
        _table_for(doc, setting.keys[:-1], "drop-in", created)[setting.keys[-1]] = setting.value
    _end_with_blank_line(created)
    text = tomlkit.dumps(doc)
    _check_result(text, version, runtime)
    return DropIn(text=text, path=path, imports_line=imports_line, notes=tuple(notes))


# --- merge --------------------------------------------------------------------------------------


def merge_containerd_config(
    text: str,
    version: ContainerdVersion,
    runtime: KataRuntime | None = None,
    *,
    source: str = "config.toml",
) -> Merged:
    """Set our keys in an existing containerd config, keeping everything else as it was.

    Comments, key order and formatting of the operator's file survive (tomlkit edits the
    document in place); keys already right are not touched; other keys in our runtime tables
    stay. ``cdi_spec_dirs`` and ``pod_annotations`` keep the operator's entries and gain ours.
    Merging the result again changes nothing and returns no changes.

    Parameters:
        text: the current config.toml.
        version: the node's containerd family; the file's ``version`` must match it.
        runtime: the handler(s) and Kata paths (defaults: :class:`KataRuntime`).
        source: the file's name, for error messages.

    Raises :class:`RuntimeConfigError` when ``text`` is not TOML (with line and column), has
    no ``version`` or version 1, has a version of the other containerd family, or holds one of
    our keys (or a table on the way to it) with the wrong type.
    """
    runtime = runtime or KataRuntime()
    doc = _parse(text, source)
    _check_version(doc, version, source)
    changes: list[Change] = []
    created: list[_Table] = []
    for setting in _settings(version, runtime):
        change = _apply(doc, setting, source, created)
        if change is not None:
            changes.append(change)
    if not changes:
        return Merged(text=text, changes=())
    _end_with_blank_line(created)
    merged = tomlkit.dumps(doc)
    _check_result(merged, version, runtime)
    return Merged(text=merged, changes=tuple(changes))


def _parse(text: str, source: str) -> tomlkit.TOMLDocument:
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise RuntimeConfigError(
            source,
            f"not valid TOML at line {exc.line}, column {exc.col}: {_reason(exc)}",
            "fix the file (containerd would not start with it either)",
        ) from exc
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuntimeConfigError(
            source, f"not valid TOML: {exc}", "fix the file (containerd would not start with it)"
        ) from exc
    return doc


def _reason(exc: tomlkit.exceptions.ParseError) -> str:
    message = str(exc)
    return message.split(" at line ")[0] if " at line " in message else message


def _check_version(doc: tomlkit.TOMLDocument, version: ContainerdVersion, source: str) -> None:
    raw = _plain(doc.get("version"))
    if raw is None or raw == 1:
        found = "has no `version` (so it is version 1)" if raw is None else "is version 1"
        if version is ContainerdVersion.V1_7:
            fix = (
                "rewrite it as version 2 with full plugin IDs (containerd 1.7 has no "
                "`config migrate`; `containerd config default` shows the layout)"
            )
        else:
            fix = "run `containerd config migrate` (containerd 2.x) and merge into its output"
        raise RuntimeConfigError(source, f"the config {found}", fix)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise RuntimeConfigError(
            source, f"`version` is {raw!r}, not an integer", "set `version = 2` (1.7) or 3 (2.x)"
        )
    if raw in version.accepted_versions:
        return
    if version is ContainerdVersion.V2 and raw == 2:
        raise RuntimeConfigError(
            source,
            "the config is version 2, containerd 1.x's layout",
            "pass --containerd 1.7 if this node runs containerd 1.7; on containerd 2.x run "
            "`containerd config migrate` first and merge into its output",
        )
    if version is ContainerdVersion.V1_7 and raw in ContainerdVersion.V2.accepted_versions:
        raise RuntimeConfigError(
            source,
            f"the config is version {raw}, containerd 2.x's layout (containerd 1.7 reads only 2)",
            "pass --containerd 2",
        )
    raise RuntimeConfigError(
        source,
        f"the config is version {raw}, which gpucaas does not know",
        "gpucaas writes versions 2 (containerd 1.7), 3 and 4 (containerd 2.x)",
    )


def _apply(
    doc: tomlkit.TOMLDocument, setting: _Setting, source: str, created: list[_Table]
) -> Change | None:
    *parents, key = setting.keys
    if setting.value is None or setting.only_if_present:
        table = _existing_table(doc, tuple(parents), source)
        if table is None or key not in table:
            return None
    else:
        table = _table_for(doc, tuple(parents), source, created)
    path = _key_path(setting.keys)
    current = table.get(key)
    old = _plain(current)
    if setting.value is None:
        del table[key]
        if parents[-1] == "options" and not table:  # the test mapping emptied Kata's options
            parent = _existing_table(doc, tuple(parents[:-1]), source)
            assert parent is not None
            del parent["options"]
        return Change(path, old, None)
    _check_type(path, current, setting.value, source)
    if setting.ensure_items:
        missing = [item for item in setting.value if item not in (old or [])]
        if old is not None and not missing:
            return None
        if old is None:
            _set(table, key, setting.value)
            return Change(path, None, list(setting.value))
        array = current
        assert isinstance(array, tomlkit.items.Array)
        for item in missing:
            array.append(item)
        return Change(path, old, [*old, *missing])
    if old == setting.value:
        return None
    _set(table, key, setting.value)
    return Change(path, old, setting.value)


def _check_type(path: str, current: Any, wanted: Any, source: str) -> None:
    if current is None:
        return
    value = _plain(current)
    if isinstance(wanted, bool):
        ok = isinstance(value, bool)
        kind = "a boolean (true or false)"
    elif isinstance(wanted, str):
        ok = isinstance(value, str)
        kind = "a string"
    else:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        kind = "an array of strings"
    if not ok:
        raise RuntimeConfigError(
            source,
            f"{path} is {_toml_value(value)} ({_kind(value)}); containerd needs {kind}",
            "fix or remove that key, then run again",
        )


# --- tomlkit helpers ----------------------------------------------------------------------------

# A table defined in several places (dotted keys and headers) comes as an OutOfOrderTableProxy.
_Table = tomlkit.items.Table | tomlkit.items.InlineTable | OutOfOrderTableProxy | Container
_TABLES = (tomlkit.items.Table, tomlkit.items.InlineTable, OutOfOrderTableProxy)


def _table_for(
    container: _Table, keys: tuple[str, ...], source: str, created: list[_Table]
) -> _Table:
    """The table at ``keys`` under ``container``, creating missing ones (as real tables; the
    intermediate ones as super tables, which print no header of their own) and listing the
    new ones in ``created``."""
    table = container
    for depth, key in enumerate(keys):
        child = table.get(key)
        if child is None:
            if isinstance(table, tomlkit.items.InlineTable):
                table[key] = tomlkit.inline_table()
            else:
                table[key] = tomlkit.table(is_super_table=depth < len(keys) - 1)
            child = table[key]
            created.append(child)
        if not isinstance(child, _TABLES):
            path = _key_path(keys[: depth + 1])
            raise RuntimeConfigError(
                source,
                f"{path} is {_toml_value(_plain(child))} ({_kind(_plain(child))}); "
                "containerd needs a table there",
                "fix or remove that key, then run again",
            )
        table = child
    return table


def _set(table: _Table, key: str, value: Any) -> None:
    """Set ``key``, indented like the keys already in ``table`` (a new key of an indented
    operator table should not stick out)."""
    existing = key in table
    table[key] = value
    if existing or not isinstance(table, tomlkit.items.Table):
        return
    for sibling_key, item in table.value.body:
        if sibling_key is not None and sibling_key.key != key and _is_key_value(item):
            new = table.value.item(key)
            if isinstance(new, tomlkit.items.Item):
                new.trivia.indent = item.trivia.indent
            return


def _is_key_value(item: Any) -> bool:
    return isinstance(item, tomlkit.items.Item) and not isinstance(
        item, tomlkit.items.Table | tomlkit.items.AoT | tomlkit.items.Whitespace
    )


def _end_with_blank_line(created: list[_Table]) -> None:
    """Separate each new leaf table from the header after it, as containerd's own files do."""
    for table in created:
        if (
            isinstance(table, tomlkit.items.Table)
            and not table.is_super_table()
            and not any(isinstance(v, tomlkit.items.Table) for v in table.value.values())
        ):
            table.add(tomlkit.nl())


def _existing_table(container: _Table, keys: tuple[str, ...], source: str) -> _Table | None:
    table = container
    for depth, key in enumerate(keys):
        child = table.get(key)
        if child is None:
            return None
        if not isinstance(child, _TABLES):
            raise RuntimeConfigError(
                source,
                f"{_key_path(keys[: depth + 1])} is {_toml_value(_plain(child))} "
                f"({_kind(_plain(child))}); containerd needs a table there",
                "fix or remove that key, then run again",
            )
        table = child
    return table


def _plain(item: Any) -> Any:
    """A tomlkit item as a plain Python value (None stays None)."""
    if isinstance(item, tomlkit.items.Item | Container | OutOfOrderTableProxy):
        return item.unwrap()
    return item


def _key_path(keys: Iterable[str]) -> str:
    return ".".join(k if _BARE_KEY.fullmatch(k) else f'"{k}"' for k in keys)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{...}"
    try:
        return str(tomlkit.item(value).as_string())
    except (TypeError, ValueError):
        return repr(value)


def _check_result(text: str, version: ContainerdVersion, runtime: KataRuntime) -> None:
    """Our output must parse and carry our settings: a bug here must not reach a node."""
    data = tomllib.loads(text)
    cri = data.get("plugins", {}).get(version.cri_plugin, {})
    runtimes = cri.get("containerd", {}).get("runtimes", {})
    problems: list[str] = []
    if not set(runtime.cdi_spec_dirs) <= set(cri.get("cdi_spec_dirs", [])):
        problems.append("cdi_spec_dirs")
    if version is ContainerdVersion.V1_7 and cri.get("enable_cdi") is not True:
        problems.append("enable_cdi")
    for handler in runtime.handlers:
        table = runtimes.get(handler, {})
        wanted = RUNC_RUNTIME_TYPE if runtime.test_runc_alias else runtime.runtime_type
        if table.get("runtime_type") != wanted:
            problems.append(f"{handler}.runtime_type")
        if not runtime.test_runc_alias and (
            table.get("options", {}).get("ConfigPath") != runtime.config_path
        ):
            problems.append(f"{handler}.options.ConfigPath")
    if problems:  # pragma: no cover - a bug in this module, not bad input
        raise MisuseError(f"generated containerd config lost {', '.join(problems)}:\n{text}")


def runtime_handlers(text: str, version: ContainerdVersion) -> Sequence[str]:
    """The runtime handler names a containerd config defines for ``version``'s CRI plugin
    (for checks and tests; raises :class:`RuntimeConfigError` on text that is not TOML)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuntimeConfigError("config", f"not valid TOML: {exc}", "fix the file") from exc
    cri = data.get("plugins", {}).get(version.cri_plugin, {})
    return tuple(cri.get("containerd", {}).get("runtimes", {}))

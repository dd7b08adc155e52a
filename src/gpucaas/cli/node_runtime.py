"""``gpucaas node runtime-config``: containerd and Kata configuration for the Kata GPU runtime.

``containerd`` writes a drop-in for containerd's ``imports`` or merges the same keys into an
existing config.toml (keeping a ``.bak`` and the operator's comments); ``kata`` writes Kata's
GPU passthrough drop-in and says which kubelet timeout multi-GPU boots need. The TOML comes
from :mod:`gpucaas.runtime`; this module reads and writes the files. Files are replaced
atomically (a temporary file in the same directory, then a rename), so containerd or Kata
never read half a file. A refused merge writes nothing and exits 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpucaas._files import write_atomically
from gpucaas.runtime import (
    CDI_SPEC_DIRS,
    DROPIN_PATH,
    HGX_GPUS,
    KATA_BASE_MEMORY_GIB,
    KATA_BASE_VCPUS,
    KATA_CONFIG_PATH,
    KATA_DROPIN_NAME,
    KATA_SHIM_PATH,
    RUNTIME_CLASS_NAME,
    ContainerdVersion,
    KataRuntime,
    RuntimeConfigError,
    containerd_dropin,
    effective_kernel_params,
    kata_gpu_dropin,
    merge_containerd_config,
)

from ._common import JsonOption, print_json, user_errors

app = typer.Typer(
    help="containerd and Kata configuration for the Kata GPU runtime.", no_args_is_help=True
)


@app.callback()
def _runtime_config() -> None:
    """containerd and Kata configuration for the Kata GPU runtime."""


OutputOption = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write to this file (atomically) instead of stdout."),
]
ConfigPathOption = Annotated[
    str,
    typer.Option(
        "--config-path", help="Kata's configuration file for the GPU runtime (options.ConfigPath)."
    ),
]


@app.command("containerd")
def containerd(
    version: Annotated[
        ContainerdVersion,
        typer.Option(
            "--containerd",
            help="The node's containerd: 1.7 (config version 2) or 2 (2.x, version 3).",
            show_default=False,
        ),
    ],
    merge: Annotated[
        Path | None,
        typer.Option(
            "--merge",
            help="Merge into this config.toml (keeps FILE.bak, comments and other settings).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="With --merge: print the merged file, write nothing.")
    ] = False,
    output: OutputOption = None,
    runtime_name: Annotated[
        str, typer.Option("--runtime-name", help="The runtime handler (RuntimeClass.handler).")
    ] = RUNTIME_CLASS_NAME,
    alias: Annotated[
        list[str] | None,
        typer.Option("--alias", help="Another handler name with the same settings (repeatable)."),
    ] = None,
    runtime_path: Annotated[
        str, typer.Option("--runtime-path", help="The Kata shim binary.")
    ] = KATA_SHIM_PATH,
    config_path: ConfigPathOption = KATA_CONFIG_PATH,
    cdi_spec_dir: Annotated[
        list[str] | None,
        typer.Option(
            "--cdi-spec-dir",
            help="A directory containerd reads CDI specs from (repeatable; default "
            "/etc/cdi and /var/run/cdi).",
        ),
    ] = None,
    test_runc_alias: Annotated[
        bool,
        typer.Option(
            "--test-runc-alias",
            help="TEST BEDS ONLY: map the handler(s) to runc instead of Kata VMs.",
            hidden=True,
        ),
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Configure containerd to run the Kata GPU runtime handler, with CDI on.

    Without --merge, print (or write with --output) a drop-in file to load through
    `imports` in containerd's main config. With --merge FILE, set the same keys in FILE
    itself: only ours change, the rest of the file (comments included) stays as it was, the
    previous content is kept in FILE.bak and the changes are listed. Merging twice changes
    nothing the second time. On containerd 1.7 prefer --merge: 1.7 replaces the main config's
    whole CRI section with an imported one.

    Example: gpucaas node runtime-config containerd --containerd 2 --merge config.toml --dry-run
    """
    if dry_run and merge is None:
        raise typer.BadParameter("--dry-run needs --merge FILE", param_hint="--dry-run")
    if merge is not None and output is not None:
        raise typer.BadParameter("use --merge or --output, not both", param_hint="--output")
    with user_errors():
        runtime = KataRuntime(
            name=runtime_name,
            runtime_path=runtime_path,
            config_path=config_path,
            cdi_spec_dirs=tuple(cdi_spec_dir) if cdi_spec_dir else CDI_SPEC_DIRS,
            aliases=tuple(alias or ()),
            test_runc_alias=test_runc_alias,
        )
        if merge is not None:
            _merge(merge, version, runtime, dry_run=dry_run, json_=json_)
            return
        dropin = containerd_dropin(version, runtime, path=str(output or DROPIN_PATH))
        if output is not None:
            _write_atomically(output, dropin.text, backup=False)
    if json_:
        print_json(
            {
                "path": dropin.path,
                "written": output is not None,
                "imports": dropin.imports_line,
                "notes": list(dropin.notes),
                "text": dropin.text,
            }
        )
        return
    if output is None:
        typer.echo(dropin.text, nl=False)
        for note in dropin.notes:
            typer.echo(f"note: {note}", err=True)
        return
    typer.echo(f"wrote {output}")
    for note in dropin.notes:
        typer.echo(f"note: {note}")


def _merge(
    path: Path, version: ContainerdVersion, runtime: KataRuntime, *, dry_run: bool, json_: bool
) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise RuntimeConfigError(
            str(path), f"cannot read it ({reason})", "check the path and permissions"
        ) from exc
    merged = merge_containerd_config(text, version, runtime, source=str(path))
    backup: Path | None = None
    if merged.changes and not dry_run:
        backup = _write_atomically(path, merged.text, backup=True)
    changes = [{"key": c.key, "old": c.old, "new": c.new} for c in merged.changes]
    if json_:
        print_json(
            {
                "file": str(path),
                "dry_run": dry_run,
                "written": backup is not None,
                "backup": None if backup is None else str(backup),
                "changes": changes,
                **({"text": merged.text} if dry_run else {}),
            }
        )
        return
    if dry_run:
        typer.echo(merged.text, nl=False)
        for change in merged.changes:
            typer.echo(f"would set {change}", err=True)
        return
    if not merged.changes:
        typer.echo(f"{path}: already configured, nothing written")
        return
    typer.echo(f"merged into {path} (previous content in {backup}):")
    for change in merged.changes:
        typer.echo(f"  {change}")
    typer.echo("restart containerd to apply (systemctl restart containerd)")


def _write_atomically(path: Path, text: str, *, backup: bool) -> Path | None:
    """Replace ``path`` with ``text`` through a temporary file and a rename, keeping its mode;
    with ``backup``, first save the previous content as ``path.bak`` (returned)."""
    saved: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
        if backup and path.exists():
            saved = path.with_name(path.name + ".bak")
            write_atomically(saved, path.read_bytes(), mode=mode)
        write_atomically(path, text, mode=mode)
    except OSError as exc:
        raise RuntimeConfigError(
            str(path), f"cannot write it ({exc.strerror})", "check the directory's permissions"
        ) from exc
    return saved


@app.command("kata")
def kata(
    gpus: Annotated[
        int, typer.Option("--gpus", help="GPUs of the largest VM this configuration boots.")
    ] = HGX_GPUS,
    pcie_root_ports: Annotated[
        int,
        typer.Option("--pcie-root-ports", help="PCIe root ports per VM (at least --gpus, max 16)."),
    ] = HGX_GPUS,
    memory_gib: Annotated[
        int, typer.Option("--memory-gib", help="The VM's base memory; Kata adds the pod's limits.")
    ] = KATA_BASE_MEMORY_GIB,
    vcpus: Annotated[
        int, typer.Option("--vcpus", help="The VM's base vCPUs; Kata adds the pod's CPU limits.")
    ] = KATA_BASE_VCPUS,
    hugepages: Annotated[
        bool,
        typer.Option(
            "--hugepages/--no-hugepages", help="Back guest RAM with the host's hugepages."
        ),
    ] = True,
    kernel_param: Annotated[
        list[str] | None,
        typer.Option("--kernel-param", help="Another guest kernel parameter (repeatable)."),
    ] = None,
    timeout: Annotated[
        int | None,
        typer.Option(
            "--timeout",
            help="Seconds for Kata's dial_timeout and create_container_timeout "
            "(default: 1200, or the kubelet timeout if longer).",
        ),
    ] = None,
    config_path: ConfigPathOption = KATA_CONFIG_PATH,
    base_config: Annotated[
        Path | None,
        typer.Option(
            "--base-config",
            help="Read the base kernel_params from this file (default: --config-path and "
            "its config.d, when they exist here).",
        ),
    ] = None,
    output: OutputOption = None,
    json_: JsonOption = False,
) -> None:
    """Write Kata's GPU passthrough drop-in and say which kubelet timeout it needs.

    The drop-in cold-plugs each GPU into its own PCIe root port, sizes the VM's base,
    adds the guest kernel parameters GPUs need and lengthens Kata's timeouts. A drop-in's
    kernel_params replace the base file's, so the base ones are read and kept. Install the
    file in the config.d directory next to Kata's configuration (the path is printed), and set
    the kubelet's runtimeRequestTimeout to the value printed: its 2-minute default is too
    short for multi-GPU boots.

    Example: gpucaas node runtime-config kata --gpus 8 --output config.d/60-gpucaas-gpu.toml
    """
    with user_errors():
        texts = _base_texts(Path(config_path), base_config)
        base_params = effective_kernel_params(texts, source=str(base_config or config_path))
        dropin = kata_gpu_dropin(
            gpus=gpus,
            pcie_root_ports=pcie_root_ports,
            memory_gib=memory_gib,
            vcpus=vcpus,
            hugepages=hugepages,
            kernel_params=kernel_param or (),
            base_kernel_params=base_params if texts else None,
            timeout_s=timeout,
            config_path=config_path,
        )
        if output is not None:
            _write_atomically(output, dropin.text, backup=False)
    notes = list(dropin.notes)
    if json_:
        print_json(
            {
                "path": str(output) if output is not None else dropin.path,
                "written": output is not None,
                "kernel_params": dropin.kernel_params,
                "kubelet": {"runtimeRequestTimeout": dropin.kubelet_runtime_request_timeout},
                "notes": notes,
                "text": dropin.text,
            }
        )
        return
    if output is None:
        typer.echo(dropin.text, nl=False)
        for note in notes:
            typer.echo(f"note: {note}", err=True)
        return
    typer.echo(f"wrote {output}")
    typer.echo(f"kubelet: runtimeRequestTimeout: {dropin.kubelet_runtime_request_timeout}")
    for note in notes:
        typer.echo(f"note: {note}")


def _base_texts(config_path: Path, base_config: Path | None) -> list[str]:
    """The texts Kata loads before our drop-in: the base file, then the drop-ins that sort
    before ours. Empty when the base is not on this machine (and not given)."""
    base = base_config or config_path
    if base_config is None and not config_path.is_file():
        return []
    try:
        texts = [base.read_text(encoding="utf-8")]
        dropins = base.parent / "config.d"
        if base_config is None and dropins.is_dir():
            for entry in sorted(dropins.iterdir()):
                if entry.is_file() and entry.name < KATA_DROPIN_NAME:
                    texts.append(entry.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise RuntimeConfigError(
            str(base), f"cannot read it ({reason})", "check the path, or pass --base-config"
        ) from exc
    return texts

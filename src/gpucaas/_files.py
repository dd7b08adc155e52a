"""The one atomic file writer: a reader sees the old file or the new one, never a part.

A shared leaf (DESIGN.md): it imports only the standard library, so any package (the node
agent, the control plane, the fabric, the CLI) writes state files without importing another
package's machinery. Every file gpucaas must not lose half of goes through here.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_MODE",
    "make_private_dir",
    "private_file",
    "write_atomically",
]

PRIVATE_MODE = 0o600
"""The default mode: state files (credentials, desired sets, checkpoints) are the owner's."""
PRIVATE_DIR_MODE = 0o700
"""The mode of state directories: only their owner lists or enters them."""


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) and make it mode 0700, whatever the umask and
    whatever mode an existing directory had. Raises :class:`OSError` as the system does."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)


def private_file(path: Path) -> None:
    """Create ``path`` empty if it is missing, and make it mode 0600 either way (for files
    other programs then write: a database, a lock). Raises :class:`OSError` as the system does."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_MODE))
    os.chmod(path, PRIVATE_MODE)


def write_atomically(path: Path, data: str | bytes, *, mode: int = PRIVATE_MODE) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8) with the given mode.

    Writes a temporary file beside ``path``, fsyncs it, renames it over ``path`` and fsyncs
    the directory, so a crash leaves the old or the new content and the rename itself is
    durable. Creates missing parent directories. Raises :class:`OSError` as the system does.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

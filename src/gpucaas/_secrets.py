"""Tokens read from the flags, the environment, config files and token files: cleaned, checked,
and never repeated back.

A shared leaf (DESIGN.md): the client (its config file and ``GPUCAAS_TOKEN``), ``gpucaas up``
(``GPUCAAS_ADMIN_TOKEN``) and the fm-controller and ``fmctl`` (``--token-file``) all read
secrets, and all must treat them alike:

- Surrounding whitespace is dropped: ``echo gpc_… > file`` and a ``$(cat file)`` in an
  environment variable leave a newline that no HTTP header or gRPC metadata may carry.
- A token is printable ASCII (what HTTP headers carry); anything else is refused with the
  character's position, never the token itself, so a message cannot leak it to a log.
- A file that holds a secret and that group or others may read (or write) is refused, as ssh
  refuses such a private key; the message says ``chmod 600 FILE``.

It imports only the standard library and the error tree.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gpucaas.errors import InvalidRequest

__all__ = ["check_private", "clean_token", "read_secret_file"]

_LOOSE_BITS = stat.S_IRWXG | stat.S_IRWXO
"""Mode bits that let someone other than the owner read or change a secret file."""
_MAX_BYTES = 64 * 1024
"""A token file holds one token; more is a wrong file, not read whole."""


def clean_token(value: str, source: str) -> str:
    """``value`` without surrounding whitespace, checked to be a non-empty token of printable
    ASCII. ``source`` says where it came from (``GPUCAAS_TOKEN``, a file) for the message.

    Raises:
        InvalidRequest: empty, or a character outside printable ASCII (named by position and
            kind, never shown).
    """
    token = value.strip()
    if not token:
        raise InvalidRequest(f"the token from {source} is empty; give the token itself")
    for position, char in enumerate(token, start=1):
        if "!" <= char <= "~":
            continue
        kind = "a space or control character" if char.isascii() else "not ASCII"
        raise InvalidRequest(
            f"the token from {source} is not a valid token: character {position} of "
            f"{len(token)} is {kind}; tokens are printable ASCII (gpc_…), copy it again"
        )
    return token


def check_private(path: Path, mode: int, what: str) -> None:
    """Refuse a secret file whose ``mode`` (``st_mode``) lets group or others in.

    Raises:
        InvalidRequest: naming the file, its mode and ``chmod 600``.
    """
    if mode & _LOOSE_BITS:
        raise InvalidRequest(
            f"{what} {path} is open to group or others (mode {stat.S_IMODE(mode):04o}) and holds "
            f"a secret; run `chmod 600 {path}` (as ssh asks of a private key)"
        )


def read_secret_file(path: Path, what: str = "the token file") -> str:
    """The token in ``path`` (the whole file, surrounding whitespace dropped), after checking
    that only its owner may read it.

    Raises:
        InvalidRequest: unreadable, open to group or others, not UTF-8 text, or not a clean
            token (:func:`clean_token`).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidRequest(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        # fstat of the file we read, not stat of the path: no window to swap it in between.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidRequest(f"{what} {path} is not a regular file")
        check_private(path, info.st_mode, what)
        with os.fdopen(os.dup(fd), "rb") as file:
            data = file.read(_MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_BYTES:
        raise InvalidRequest(f"{what} {path} is over 64 KiB; it should hold one token")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(f"{what} {path} is not UTF-8 text; it should hold one token") from None
    return clean_token(text, f"{what} {path}")

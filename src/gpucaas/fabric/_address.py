"""Fabric Manager addresses: ``a.b.c.d[:port]``, a unix socket path, ``vsock:CID:PORT``."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from ._errors import FabricAddressError

DEFAULT_FM_PORT = 6666
"""FM's default TCP port (FM_CMD_PORT_NUMBER); FM binds 127.0.0.1 unless configured."""

MAX_ADDRESS = 255
"""addressInfo is char[256] in fmConnectParams_v2, NUL included."""


class AddressType(enum.IntEnum):
    """``fmConnectParams_v2.addressType``."""

    UNKNOWN = 0
    INET = 1
    UNIX = 2
    VSOCK = 3


@dataclass(frozen=True, slots=True)
class FmAddress:
    kind: AddressType
    info: str
    """What goes in ``addressInfo``: ``a.b.c.d:port``, the socket path, or ``cid:port``."""

    def __str__(self) -> str:
        return f"vsock:{self.info}" if self.kind is AddressType.VSOCK else self.info


def parse_address(text: str) -> FmAddress:
    """Parse one of the accepted forms. Raises :class:`FabricAddressError`."""
    text = text.strip()
    if not text:
        raise FabricAddressError(text, "it is empty")
    if len(text) > MAX_ADDRESS:
        raise FabricAddressError(text[:40] + "…", f"longer than {MAX_ADDRESS} characters")
    if text.startswith("vsock:"):
        parts = text.split(":")
        if len(parts) != 3 or not all(p.isdigit() for p in parts[1:]):
            raise FabricAddressError(text, "a vsock address is vsock:CID:PORT with numbers")
        cid, port = int(parts[1]), int(parts[2])
        if not 0 < port < 2**32 or not 0 <= cid < 2**32:
            raise FabricAddressError(text, "CID and port must be 32-bit unsigned numbers")
        return FmAddress(AddressType.VSOCK, f"{cid}:{port}")
    if text.startswith(("/", "./", "../")) or text.startswith("unix:"):
        path = text.removeprefix("unix:")
        if not path:
            raise FabricAddressError(text, "the socket path is empty")
        return FmAddress(AddressType.UNIX, path)
    host, sep, port_text = text.partition(":")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise FabricAddressError(
            text, f"{host!r} is not an IPv4 address (FM takes no host names)"
        ) from None
    port = DEFAULT_FM_PORT
    if sep:
        # libnvfm's own parser rejects 65535 (portNumber >= 65535), so we do too.
        if not port_text.isdigit() or not 0 < int(port_text) < 65535:
            raise FabricAddressError(text, f"port {port_text!r} must be 1 to 65534")
        port = int(port_text)
    return FmAddress(AddressType.INET, f"{host}:{port}")

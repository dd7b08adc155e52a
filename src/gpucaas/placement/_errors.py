"""Errors of the placement package.

::

    InvalidRequest
    ├── NoFit            no board in the fleet can ever hold the request (NEVER_FITS)
    ├── UnknownPolicy    no policy by that name
    └── UnknownNode      no node by that name
    Conflict
    └── DuplicateNode    a node with that name is already in the fleet
"""

from __future__ import annotations

from collections.abc import Sequence

from gpucaas.errors import Conflict, InvalidRequest


class NoFit(InvalidRequest):
    """No board in the fleet can ever hold the request; the reasons say why."""

    def __init__(self, request_id: object, reasons: Sequence[str]) -> None:
        super().__init__(request_id, tuple(reasons))
        self.request_id = request_id
        self.reasons = tuple(reasons)

    def __str__(self) -> str:
        return f"request {self.request_id} can never be placed: {'; '.join(self.reasons)}"


class UnknownPolicy(InvalidRequest):
    """No placement policy has that name; the message lists the names there are."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = tuple(known)

    def __str__(self) -> str:
        return f"unknown placement policy {self.name!r}; choose one of: {', '.join(self.known)}"


class UnknownNode(InvalidRequest):
    """No node by that name is in the fleet."""

    def __init__(self, node: str) -> None:
        super().__init__(node)
        self.node = node

    def __str__(self) -> str:
        return f"no node {self.node!r} in the fleet"


class DuplicateNode(Conflict):
    """A node by that name is already in the fleet."""

    def __init__(self, node: str) -> None:
        super().__init__(node)
        self.node = node

    def __str__(self) -> str:
        return f"node {self.node!r} is already in the fleet; remove it first to re-add it"

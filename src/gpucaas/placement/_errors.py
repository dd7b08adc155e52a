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

from gpucaas.errors import Conflict, InvalidRequest, errorclass


@errorclass
class NoFit(InvalidRequest):
    """No board in the fleet can ever hold the request; the reasons say why."""

    template = "request {request_id} can never be placed: {reasons:; }"
    request_id: object
    reasons: Sequence[str]

    def __post_init__(self) -> None:
        self.reasons = tuple(self.reasons)


@errorclass
class UnknownPolicy(InvalidRequest):
    """No placement policy has that name; the message lists the names there are."""

    template = "unknown placement policy {name!r}; choose one of: {known:, }"
    name: str
    known: Sequence[str]

    def __post_init__(self) -> None:
        self.known = tuple(self.known)


@errorclass
class UnknownNode(InvalidRequest):
    """No node by that name is in the fleet."""

    template = "no node {node!r} in the fleet"
    node: str


@errorclass
class DuplicateNode(Conflict):
    """A node by that name is already in the fleet."""

    template = "node {node!r} is already in the fleet; remove it first to re-add it"
    node: str

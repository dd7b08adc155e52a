"""Placement: which partition, on which board. Pure and deterministic, no I/O.

The simulator, the scheduler loop, the device plugin and the DRA driver all call these
same functions: one brain, many callers.
"""

from gpucaas.topology import BoardModel

from ._api import Allocator
from ._errors import DuplicateNode, NoFit, UnknownNode, UnknownPolicy
from ._fleet import Fleet
from ._fluid import FluidPool
from ._policy import (
    FLUID,
    POLICIES,
    POLICY_NAMES,
    BestFit,
    CountOnly,
    FirstFit,
    Policy,
    Random,
    Spread,
    get_policy,
)
from ._queue import DEFAULT_MAX_BYPASS, Queue, Scheduled
from ._types import BoardState, Code, Placement, Request, RequestId, Status


def make_allocator(
    policy: str, model: BoardModel, nodes: int, *, seed: int = 0, index: bool = True
) -> Allocator:
    """A fleet of ``nodes`` empty boards named ``node-0000``…, or the ``fluid`` pool of the
    same capacity. Raises :class:`UnknownPolicy`."""
    if policy == FLUID:
        return FluidPool(model, nodes * model.gpu_count)
    fleet = Fleet(policy, seed=seed, index=index)
    for n in range(nodes):
        fleet.add_node(f"node-{n:04d}", model)
    return fleet


__all__ = [
    "DEFAULT_MAX_BYPASS",
    "FLUID",
    "POLICIES",
    "POLICY_NAMES",
    "Allocator",
    "BestFit",
    "BoardState",
    "Code",
    "CountOnly",
    "DuplicateNode",
    "FirstFit",
    "Fleet",
    "FluidPool",
    "NoFit",
    "Placement",
    "Policy",
    "Queue",
    "Random",
    "Request",
    "RequestId",
    "Scheduled",
    "Spread",
    "Status",
    "UnknownNode",
    "UnknownPolicy",
    "get_policy",
    "make_allocator",
]

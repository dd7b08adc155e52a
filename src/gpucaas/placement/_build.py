"""Building a fleet of identical boards, or its fluid bound, by policy name."""

from __future__ import annotations

from gpucaas.topology import BoardModel

from ._api import Allocator
from ._fleet import Fleet
from ._fluid import FluidPool
from ._policy import FLUID


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

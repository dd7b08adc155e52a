"""Placement: which partition, on which board. Pure and deterministic, no I/O.

The simulator, the scheduler loop, the device plugin and the DRA driver all call these
same functions: one brain, many callers.
"""

from gpucaas.errors import own_errors

from ._api import Allocator
from ._build import make_allocator
from ._errors import DuplicateNode, NoFit, UnknownNode, UnknownPolicy
from ._fleet import Fleet
from ._fluid import FluidPool
from ._policy import (
    DEFAULT_POLICY,
    FLUID,
    POLICIES,
    POLICY_NAMES,
    STOCK_NODE_RANKS,
    WHOLE_BOARD_SHARE,
    AdaptiveFit,
    BestFit,
    CountOnly,
    FirstFit,
    Policy,
    Random,
    Spread,
    Stock,
    StockSpread,
    get_policy,
)
from ._queue import DEFAULT_MAX_BYPASS, Queue, Scheduled
from ._types import BoardState, Code, Placement, Request, RequestId, Status

__all__ = [
    "DEFAULT_MAX_BYPASS",
    "DEFAULT_POLICY",
    "FLUID",
    "POLICIES",
    "POLICY_NAMES",
    "STOCK_NODE_RANKS",
    "WHOLE_BOARD_SHARE",
    "AdaptiveFit",
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
    "Stock",
    "StockSpread",
    "UnknownNode",
    "UnknownPolicy",
    "get_policy",
    "make_allocator",
]

own_errors(globals())

"""A container's states, as the API names them: the state machine the server, the client and
the CLI share.

A shared leaf of the standard library alone, apart from the pydantic wire models
(:mod:`gpucaas._wire`, which re-exports it), so the CLI can build its ``--state`` option
without loading pydantic or the client just to print ``--help``.
"""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    """A container's life. Final states never change again."""

    QUEUED = "queued"
    """Accepted and stored; waiting for GPUs."""
    PLACING = "placing"
    """GPUs reserved in the store; the backend is being told."""
    STARTING = "starting"
    """The backend is creating the workload (partition activated, VM/process starting)."""
    RUNNING = "running"
    """The workload runs."""
    SUCCEEDED = "succeeded"
    """Exited with code 0."""
    FAILED = "failed"
    """Exited non-zero, could not start, ran past max_runtime_s, or never fits."""
    STOPPED = "stopped"
    """Stopped by the tenant or the operator."""
    LOST = "lost"
    """The backend can no longer find it (the reason says what was seen)."""

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({State.SUCCEEDED, State.FAILED, State.STOPPED, State.LOST})
ACTIVE_STATES = frozenset(State) - FINAL_STATES

"""Errors of the runtime package: a VM or containerd setting we cannot use.

::

    InvalidRequest
    ├── InvalidVmSpec        a VM memory, vCPU or GPU count out of range (names the parameter)
    └── RuntimeConfigError   a containerd config we cannot merge into (names the file)

Both keep structured attributes and build their text from a template, so the CLI can print
one line and an API can map them to JSON without parsing the message.
"""

from __future__ import annotations

from gpucaas.errors import InvalidRequest, errorclass


@errorclass
class InvalidVmSpec(InvalidRequest):
    """A VM parameter is out of range: ``parameter`` names it, ``value`` is what was given,
    ``expected`` says what is accepted."""

    template = "{parameter}={value!r} is out of range; pass {expected}"
    parameter: str
    value: object
    expected: str


@errorclass
class RuntimeConfigError(InvalidRequest):
    """A containerd config we cannot merge into: ``source`` names the file, ``problem`` says
    what is wrong with it and ``fix`` what to do. Nothing has been written."""

    template = "{source}: {problem}; {fix}"
    source: str
    problem: str
    fix: str

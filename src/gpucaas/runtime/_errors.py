"""Errors of the runtime package: a VM size or count that no Kata VM can have.

::

    InvalidRequest
    └── InvalidVmSpec   a VM memory, vCPU or GPU count out of range (names the parameter)

It keeps structured attributes and builds its text in ``__str__``, so the CLI can print one
line and an API can map it to JSON without parsing the message.
"""

from __future__ import annotations

from gpucaas.errors import InvalidRequest


class InvalidVmSpec(InvalidRequest):
    """A VM parameter is out of range: ``parameter`` names it, ``value`` is what was given,
    ``expected`` says what is accepted."""

    def __init__(self, parameter: str, value: object, expected: str) -> None:
        super().__init__(parameter, value, expected)
        self.parameter = parameter
        self.value = value
        self.expected = expected

    def __str__(self) -> str:
        return f"{self.parameter}={self.value!r} is out of range; pass {self.expected}"

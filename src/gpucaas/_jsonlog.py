"""The JSON log formatter every gpucaas daemon uses (one object per line, for log shippers).

A shared leaf: standard library only, so a CLI command can set up logging without importing
the daemon it is about to start.
"""

from __future__ import annotations

import json
import logging
from typing import Any

__all__ = ["JsonFormatter"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message and any ``extra`` fields."""

    _skip = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        data.update({k: v for k, v in record.__dict__.items() if k not in self._skip})
        return json.dumps(data, default=str)

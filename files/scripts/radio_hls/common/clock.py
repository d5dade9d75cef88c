"""UTC time as the programs write it into their files, and read it back."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any


def iso(timestamp: float) -> str:
    """ISO 8601 to the second with the zone as +00:00: status, health and now-playing files."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def iso_z(timestamp: float) -> str:
    """ISO 8601 to the second with the zone as Z: the listeners file (as the analytics have always written it)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def parse(value: Any) -> float | None:
    """Unix time from a number or an ISO 8601 string with a zone (either form above); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed.timestamp() if parsed.tzinfo is not None else None
    return None

"""Logging of the long-running and timer programs: one line per record on standard error, which systemd puts in
the journal with its own time stamp and the unit's name, so a line holds only the level and the message."""

from __future__ import annotations

import logging
import os
import sys


def setup() -> None:
    """Log at LOG_LEVEL (the role's hls_log_level; INFO when unset, as when run by hand)."""
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(), format="%(levelname)s %(message)s",
                        stream=sys.stderr)

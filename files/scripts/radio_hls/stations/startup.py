"""Start every enabled station at boot, STARTS_AT_ONCE at a time (hls-stations-start.service).

hls@ instances are enabled into hls-stations.target, which nothing pulls in at boot: were they wanted by
multi-user.target, systemd would start them all at once, and a thousand mount namespaces set up together take
the host minutes (sync.STARTS_AT_ONCE). This oneshot starts the target's stations in steps instead, then the target
itself, which starts whatever it still wants (a station enabled meanwhile) and marks the boot's stations as started.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from radio_hls.common import logs
from radio_hls.stations.station import slug_of_unit
from radio_hls.stations.sync import Systemctl, run_systemctl, start_in_steps

TARGET = "hls-stations.target"
log = logging.getLogger("hls-stations-start")


def enabled_stations(systemctl: Systemctl) -> list[str]:
    """The slugs of the hls@ instances enabled into TARGET, in name order."""
    wanted = systemctl(["show", "--property=Wants", "--value", TARGET]).split()
    return sorted(slug for unit in wanted if (slug := slug_of_unit(unit)) is not None)


def start_stations(systemctl: Systemctl) -> int:
    slugs = enabled_stations(systemctl)
    start_in_steps(systemctl, slugs)
    systemctl(["start", TARGET])
    log.info("started %d station(s)", len(slugs))
    return len(slugs)


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    logs.setup()
    try:
        start_stations(run_systemctl)
    except RuntimeError as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

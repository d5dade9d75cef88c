"""hls-watchdog: restart a station whose FFmpeg runs but has not finished a segment for too long.

A silent upstream already ends FFmpeg through its read timeout; this catches the rest: an FFmpeg that
is stuck (stopped, deadlocked, fed a trickle that never makes a segment). Run by hls-watchdog.timer.
A restart keeps the playlist (systemd's RuntimeDirectoryPreserve=restart), so listeners see a
discontinuity, not an error. Only a station that still runs is restarted: one stopped meanwhile stays stopped.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from radio_hls.common import logs
from radio_hls.common.contract import LAUNCH_INFO_NAME
from radio_hls.operations.snapshot import parse_show as parse_units
from radio_hls.stations.runs import read_run
from radio_hls.stations.station import UNIT_PREFIX, UNIT_SUFFIX, slug_of_unit, unit_name

log = logging.getLogger("hls-watchdog")


@dataclass(frozen=True)
class RunningStation:
    slug: str
    started_monotonic: float  # seconds, CLOCK_MONOTONIC, when its FFmpeg (or launcher) started


def parse_show(text: str) -> list[RunningStation]:
    """Running stations from `systemctl show -p Id -p SubState -p ExecMainStartTimestampMonotonic`."""
    stations = []
    for unit, fields in parse_units(text).items():
        slug = slug_of_unit(unit)
        if slug is not None and fields.get("SubState") == "running":
            started = int(fields.get("ExecMainStartTimestampMonotonic") or 0) / 1_000_000
            stations.append(RunningStation(slug, started))
    return stations


def last_progress(directory: Path) -> float | None:
    """When FFmpeg last finished a segment (its run's segment list is replaced after each), or the run began.

    FFmpeg's own files, not the playlist: hls-playlists writes that one, and its failure is not the station's."""
    run = read_run(directory)
    if run is None:
        return None
    times = []
    for path in (directory / LAUNCH_INFO_NAME, run.list_path(directory)):
        try:
            times.append(path.stat().st_mtime)
        except OSError:
            pass
    return max(times, default=None)


def stalled(stations: Iterable[RunningStation], output_root: Path, stall_seconds: float,
            now_wall: float, now_monotonic: float) -> list[str]:
    """Slugs that finished no segment for stall_seconds, or none that long after the start."""
    result = []
    for station in stations:
        running_for = now_monotonic - station.started_monotonic
        progress = last_progress(output_root / station.slug)
        quiet_for = running_for if progress is None else min(now_wall - progress, running_for)
        if quiet_for > stall_seconds:
            result.append(station.slug)
    return result


def running_stations() -> list[RunningStation]:
    out = subprocess.run(
        ["systemctl", "show", "-p", "Id", "-p", "SubState", "-p", "ExecMainStartTimestampMonotonic",
         f"{UNIT_PREFIX}*{UNIT_SUFFIX}"],
        capture_output=True, text=True, check=True,
    ).stdout
    return parse_show(out)


def restart_command(slug: str) -> list[str]:
    """Restart one station only if it still runs.

    The station may have been stopped (an operator, the sync's `disable --now`) since `systemctl show` said it
    ran: try-restart leaves an inactive unit alone, where restart would start it again, and (measured on systemd
    252) lets a stop under way finish, where restart replaces it. --job-mode=fail: should the unit have any other
    job queued, the restart fails instead of replacing it.
    """
    return ["systemctl", "try-restart", "--no-block", "--job-mode=fail", unit_name(slug)]


def restart_if_running(slug: str) -> bool:
    result = subprocess.run(restart_command(slug), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        # Not an error of the watchdog: the station is being stopped, and that wins.
        log.warning("hls@%s not restarted: %s", slug, result.stderr.strip() or f"exit status {result.returncode}")
    return result.returncode == 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stall-seconds", type=float, default=float(os.environ.get("HLS_STALL_SECONDS", "120")))
    parser.add_argument("--output-root", type=Path, default=os.environ.get("HLS_OUTPUT_ROOT"),
                        help="the stations' output directories (default: $HLS_OUTPUT_ROOT, which the unit sets)")
    args = parser.parse_args(argv)
    if args.output_root is None:
        parser.error("--output-root or HLS_OUTPUT_ROOT is required")
    logs.setup()
    slugs = stalled(running_stations(), args.output_root, args.stall_seconds, time.time(), time.monotonic())
    for slug in slugs:
        log.warning("restarting hls@%s: no playlist update for more than %g s", slug, args.stall_seconds)
        restart_if_running(slug)
    return 0


if __name__ == "__main__":
    sys.exit(main())

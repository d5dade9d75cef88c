"""hlsctl: the stations at a glance, and thin wrappers around systemctl for one station.

  hlsctl status            a table: state, uptime, restarts, playlist age, codec, listeners, now playing
  hlsctl status <slug>     the same for one station, plus the last lines of its FFmpeg log
  hlsctl start|stop|restart <slug>

systemd stays the source of truth: status reads it live, the verbs call systemctl.
Colours on a terminal (not when piped, nor with NO_COLOR set).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from radio_hls.common.contract import BadSetting
from radio_hls.operations.health import evaluate
from radio_hls.operations.snapshot import Config, Snapshot, SnapshotError, Station, collect, read_settings
from radio_hls.stations.station import InvalidStation, unit_name, validate_slug

COLUMNS = ("STATION", "STATE", "UPTIME", "RESTARTS", "PLAYLIST", "CODEC", "LISTENERS", "NOW PLAYING")
GREEN, YELLOW, RED, RESET = "\033[32m", "\033[33m", "\033[31m", "\033[0m"
LOG_LINES = 20
NOW_PLAYING_WIDTH = 48


def duration(seconds: float | None) -> str:
    """45s, 12m05s, 3h07m, 2d04h."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def codec(station: Station) -> str:
    if station.mode is None:
        return "-"
    return f"{station.upstream_codec or '?'} {station.mode}"


def now_playing(station: Station) -> str:
    title = (station.now_playing or {}).get("title") or "-"
    return title if len(title) <= NOW_PLAYING_WIDTH else title[: NOW_PLAYING_WIDTH - 1] + "…"


def rows(snapshot: Snapshot, max_age: float) -> list[tuple[list[str], str]]:
    """Each station's cells and its colour: green healthy, red unhealthy, yellow not enabled."""
    health = {result.slug: result for result in evaluate(snapshot, max_age)}
    table = []
    for station in snapshot.stations:
        result = health[station.slug]
        colour = YELLOW if not result.should_run else GREEN if result.healthy else RED
        state = station.state if station.enabled else f"{station.state}, disabled"
        cells = [station.slug, state, duration(station.uptime), str(station.restarts),
                 duration(station.playlist_age), codec(station), str(station.listeners), now_playing(station)]
        table.append((cells, colour))
    return table


def render_table(table: list[tuple[list[str], str]], colour: bool) -> str:
    widths = [max([len(header)] + [len(cells[i]) for cells, _ in table]) for i, header in enumerate(COLUMNS)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    out = [line(COLUMNS)]
    for cells, tint in table:
        text = line(cells)
        out.append(f"{tint}{text}{RESET}" if colour else text)
    return "\n".join(out) + "\n"


def tail(path: Path, count: int = LOG_LINES) -> list[str]:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=count)]
    except OSError as error:
        return [f"(cannot read {path}: {error.strerror})"]


def use_colour(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def status(config: Config, slug: str | None, out: TextIO) -> int:
    try:
        snapshot = collect(config)
    except SnapshotError as error:
        print(f"hlsctl: {error}", file=sys.stderr)
        return 1
    if slug is not None:
        snapshot.stations = [station for station in snapshot.stations if station.slug == slug]
        if not snapshot.stations:
            print(f"hlsctl: no station {slug!r} in {config.stations_dir}", file=sys.stderr)
            return 1
    if not snapshot.stations:
        out.write(f"no stations (none in {config.stations_dir})\n")
        return 0
    out.write(render_table(rows(snapshot, config.max_playlist_age), use_colour(out)))
    if slug is not None:
        log = config.log_dir / f"{slug}.log"
        out.write(f"\n--- last lines of {log}\n")
        out.write("".join(line + "\n" for line in tail(log)))
    return 0


def systemctl(verb: str, slug: str) -> int:
    return subprocess.run(["systemctl", verb, unit_name(slug)], check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hlsctl", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True,
                        help="the settings file the role writes (status.env; /usr/local/bin/hlsctl passes it)")
    verbs = parser.add_subparsers(dest="verb", required=True)
    status_parser = verbs.add_parser("status", help="the stations, or one station and its log")
    status_parser.add_argument("slug", nargs="?")
    for verb in ("start", "stop", "restart"):
        verbs.add_parser(verb, help=f"systemctl {verb} hls@<slug>").add_argument("slug")
    args = parser.parse_args(argv)
    if args.slug is not None:
        try:
            validate_slug(args.slug)
        except InvalidStation as error:
            parser.error(str(error))
    if args.verb == "status":
        try:
            config = Config.from_env(read_settings(args.config))
        except BadSetting as error:
            print(f"hlsctl: {error}", file=sys.stderr)
            return 1
        return status(config, args.slug, sys.stdout)
    return systemctl(args.verb, args.slug)


if __name__ == "__main__":
    sys.exit(main())

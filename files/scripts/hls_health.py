"""hls-health: is every station that should run on the air?

A station should run when its hls@ unit is enabled: hls-sync enables every station of the list (and
re-enables one an operator disabled), so an enabled station that is not running is off the air for its
listeners, whether it crashed or someone ran `systemctl stop`. For each such station: the unit is active,
the playlist exists and was written less than --max-age seconds ago, and its newest segment is not empty.

Exit status 0 when every station is healthy, 1 otherwise, with one line per unhealthy station.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from hls_snapshot import DEFAULT_CONFIG, Config, Snapshot, SnapshotError, Station, collect


@dataclass
class StationHealth:
    slug: str
    should_run: bool
    healthy: bool
    state: str
    playlist_age_seconds: float | None
    problems: list[str] = field(default_factory=list)


def problems(station: Station, max_age: float) -> list[str]:
    found = []
    if station.active_state != "active":
        found.append(f"unit is {station.state}")
    if station.playlist_age is None:
        found.append("no playlist")
    else:
        if station.playlist_age >= max_age:
            found.append(f"playlist is {station.playlist_age:.0f} s old (limit {max_age:g} s)")
        if not station.segments:
            found.append("playlist lists no segment")
        elif not station.newest_segment_bytes:
            found.append(f"newest segment {station.segments[-1]} is missing or empty")
    return found


def evaluate(snapshot: Snapshot, max_age: float) -> list[StationHealth]:
    results = []
    for station in snapshot.stations:
        found = problems(station, max_age) if station.enabled else []
        age = None if station.playlist_age is None else round(station.playlist_age, 1)
        results.append(StationHealth(station.slug, station.enabled, not found, station.state, age, found))
    return results


def report(snapshot: Snapshot, results: list[StationHealth], max_age: float) -> dict[str, Any]:
    """The JSON document of `--json` and of GET /health."""
    unhealthy = [result.slug for result in results if not result.healthy]
    return {
        "status": "unhealthy" if unhealthy else "ok",
        "generated_at": datetime.fromtimestamp(snapshot.generated_at, timezone.utc).isoformat(timespec="seconds"),
        "max_playlist_age_seconds": max_age,
        "unhealthy": unhealthy,
        "stations": [asdict(result) for result in results],
    }


def lines(results: list[StationHealth]) -> list[str]:
    """One line per unhealthy station, or one line saying all is well."""
    bad = [f"UNHEALTHY {result.slug}: {'; '.join(result.problems)}" for result in results if not result.healthy]
    if bad:
        return bad
    checked = sum(result.should_run for result in results)
    return [f"OK: {checked} station(s) healthy"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="settings file (default: %(default)s)")
    parser.add_argument("--max-age", type=float, help="playlist age limit in seconds (default: from the settings)")
    args = parser.parse_args(argv)
    config = Config.load(args.config)
    max_age = config.max_playlist_age if args.max_age is None else args.max_age
    try:
        snapshot = collect(config)
    except SnapshotError as error:
        print(f"UNKNOWN: {error}")
        return 1
    results = evaluate(snapshot, max_age)
    if args.json:
        print(json.dumps(report(snapshot, results, max_age), indent=2))
    else:
        print("\n".join(lines(results)))
    return 0 if all(result.healthy for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())

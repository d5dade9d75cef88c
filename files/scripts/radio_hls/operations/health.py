"""hls-health: does this host serve, and is every station that should run on the air?

A station should run when its hls@ unit is enabled: hls-sync enables every station of the list (and
re-enables one an operator disabled), so an enabled station that is not running is off the air for its
listeners, whether it crashed or someone ran `systemctl stop`. For each such station: the unit is active,
the playlist exists and was written less than --max-age seconds ago, and its newest segment is not empty.

The host serves unless stations should run and none of them is healthy: one station down (its upstream gone,
an odd record) must not take a host that serves hundreds of others out of a load balancer. An edge runs no
station: it serves while hls-status runs (nginx answers /health from its files).

Exit status, as monitoring plugins read it: 0 every station is healthy; 1 some station is unhealthy, the host
serves; 2 the host does not serve (no station that should run is healthy); 3 unknown (the station list cannot
be read). One line per unhealthy station.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from radio_hls.common.clock import iso
from radio_hls.common.contract import BadSetting
from radio_hls.operations.snapshot import Config, Snapshot, SnapshotError, Station, collect, read_settings


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
    """Each station's verdict; none on an edge, where its origins run the stations and report on them."""
    if snapshot.edge:
        return []
    results = []
    for station in snapshot.stations:
        found = problems(station, max_age) if station.enabled else []
        age = None if station.playlist_age is None else round(station.playlist_age, 1)
        results.append(StationHealth(station.slug, station.enabled, not found, station.state, age, found))
    return results


def on_air(result: StationHealth) -> bool:
    """What GET /health/stations/<slug> answers 200 for: the station should run and is healthy."""
    return result.should_run and result.healthy


@dataclass(frozen=True)
class HostHealth:
    """Whether this host serves: GET /health answers 200 for "ok" and "degraded", 503 otherwise."""

    status: str  # ok (every station healthy), degraded (some unhealthy), unhealthy (none healthy)
    should_run: int
    healthy: int
    unhealthy: list[str]

    @property
    def serving(self) -> bool:
        return self.status != "unhealthy"

    @property
    def reason(self) -> str:
        if self.status == "unhealthy":
            return f"none of the {self.should_run} station(s) that should run is healthy"
        if not self.should_run:
            return "no station should run on this host"
        return f"{self.healthy} of {self.should_run} station(s) that should run are healthy"


def host_health(results: list[StationHealth]) -> HostHealth:
    should_run = [result for result in results if result.should_run]
    healthy = sum(result.healthy for result in should_run)
    unhealthy = [result.slug for result in results if not result.healthy]
    # No station to run (a new host, an empty list) is not a fault of the host: it serves what there is.
    status = "ok" if not unhealthy else "unhealthy" if should_run and not healthy else "degraded"
    return HostHealth(status, len(should_run), healthy, unhealthy)


def report(snapshot: Snapshot, results: list[StationHealth], max_age: float) -> dict[str, Any]:
    """The JSON document of `--json` and of GET /health/stations: every station's health."""
    host = host_health(results)
    return {
        "status": "unhealthy" if host.unhealthy else "ok",
        "host": host.status,
        "generated_at": iso(snapshot.generated_at),
        "max_playlist_age_seconds": max_age,
        "unhealthy": host.unhealthy,
        "stations": [asdict(result) for result in results],
    }


def host_report(snapshot: Snapshot, host: HostHealth, fresh_until: float) -> dict[str, Any]:
    """The JSON document of GET /health: small, for load balancers polling every second."""
    return {
        "status": host.status,
        "reason": host.reason,
        "generated_at": iso(snapshot.generated_at),
        "fresh_until": iso(fresh_until),
        "stations_should_run": host.should_run,
        "stations_healthy": host.healthy,
        "unhealthy": host.unhealthy,
    }


def station_report(result: StationHealth) -> dict[str, Any]:
    """The JSON document of GET /health/stations/<slug>: only what changes with the verdict, so that the file
    is rewritten when the station's health changes, not on every run."""
    return {"slug": result.slug, "on_air": on_air(result), "should_run": result.should_run,
            "healthy": result.healthy, "state": result.state, "problems": result.problems}


def lines(results: list[StationHealth]) -> list[str]:
    """One line per unhealthy station (and one for the host when it does not serve), or one saying all is well."""
    host = host_health(results)
    bad = [f"UNHEALTHY {result.slug}: {'; '.join(result.problems)}" for result in results if not result.healthy]
    if not host.serving:
        bad.append(f"HOST UNHEALTHY: {host.reason}")
    return bad or [f"OK: {host.should_run} station(s) healthy"]


# Exit statuses, as monitoring plugins (Nagios, Icinga, Sensu) read them.
EXIT_OK, EXIT_DEGRADED, EXIT_HOST_UNHEALTHY, EXIT_UNKNOWN = 0, 1, 2, 3


def exit_status(results: list[StationHealth]) -> int:
    host = host_health(results)
    return {"ok": EXIT_OK, "degraded": EXIT_DEGRADED}.get(host.status, EXIT_HOST_UNHEALTHY)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--config", type=Path, required=True, help="the settings file the role writes (status.env)")
    parser.add_argument("--max-age", type=float, help="playlist age limit in seconds (default: from the settings)")
    args = parser.parse_args(argv)
    try:
        config = Config.from_env(read_settings(args.config))
        max_age = config.max_playlist_age if args.max_age is None else args.max_age
        snapshot = collect(config)
    except (BadSetting, SnapshotError) as error:
        print(f"UNKNOWN: {error}")
        return EXIT_UNKNOWN
    results = evaluate(snapshot, max_age)
    if args.json:
        print(json.dumps(report(snapshot, results, max_age), indent=2))
    else:
        print("\n".join(lines(results)))
    return exit_status(results)


if __name__ == "__main__":
    sys.exit(main())

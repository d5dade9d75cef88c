"""hls-status: refresh the files nginx serves at /health*, /metrics and /status.json, from one snapshot.

Run by hls-status.timer. Writes into --output-dir (each file atomically):
  report/host.json            GET /health: does this host serve (health.host_health)
  report/stations.json        GET /health/stations: every station's health (hls-health --json)
  report/station/<slug>.json  GET /health/stations/<slug>: one station, rewritten only when its verdict changes
  ok/                         symbolic links to the reports that answer 200: host.json while the host serves,
                              stations.json always, station/<slug>.json while that station is on the air
  fresh-<bucket> -> ok        one link per 10-second bucket of Unix time (time // 10) for which this run vouches,
                              up to --fresh-seconds ahead; nginx looks for fresh-<bucket of now>/..., so when
                              this timer stops or fails, every /health* answers 503 within --fresh-seconds
  metrics.prom                Prometheus text (also copied to --textfile-dir/hls.prom for node_exporter, if given)
  stations.json               what the status page shows: no stream URL, no secret
A 503 carries the last report of the same name as its body (see its generated_at).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from radio_hls.common.clock import iso
from radio_hls.common.contract import PLAYLIST_NAME, BadSetting
from radio_hls.common.files import write_atomically
from radio_hls.operations.health import (
    HostHealth,
    StationHealth,
    evaluate,
    host_health,
    host_report,
    on_air,
    report,
    station_report,
)
from radio_hls.operations.metrics import render
from radio_hls.operations.snapshot import Config, Snapshot, SnapshotError, collect, read_settings

PUBLIC_MODE = 0o644
BUCKET_SECONDS = 10  # nginx's $hls_status_bucket: the Unix time in $msec without its last digit
MIN_FRESH_SECONDS = 60.0
# What nginx served before /health meant "this host serves"; removed so that nothing reads them by mistake.
OLD_FILES = ("health.json", "healthy.json")


def page_data(snapshot: Snapshot, health: Sequence[StationHealth]) -> dict[str, Any]:
    """The status page's view of the stations."""
    healthy = {result.slug: result.healthy for result in health}
    return {
        "generated_at": round(snapshot.generated_at, 3),
        "listeners_updated_at": snapshot.analytics.updated_at,
        # The page of an edge: the stations listeners ask for here, each playable through the edge.
        "edge": snapshot.edge,
        "stations": [
            {
                "slug": station.slug,
                "title": station.title or station.slug,
                "state": station.state,
                "active": snapshot.edge or station.active_state == "active",
                "enabled": station.enabled,
                "healthy": healthy.get(station.slug, False),
                "uptime_seconds": None if station.uptime is None else round(station.uptime),
                "playlist_age_seconds": None if station.playlist_age is None else round(station.playlist_age, 1),
                "upstream_codec": station.upstream_codec,
                "mode": station.mode,
                "listeners": station.listeners,
                "now_playing": station.now_playing,
                "playlist": f"/hls/{station.slug}/{PLAYLIST_NAME}",
            }
            for station in snapshot.stations
        ],
    }


def as_json(document: Any) -> str:
    return json.dumps(document, indent=2) + "\n"


def link(path: Path, target: str) -> None:
    """Make `path` a symbolic link to `target`, replacing whatever is there in one rename."""
    try:
        if os.readlink(path) == target:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.link")
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary)
    os.replace(temporary, path)


def link_if(condition: bool, path: Path, target: str) -> None:
    if condition:
        link(path, target)
    else:
        path.unlink(missing_ok=True)


def write_if_changed(path: Path, content: str) -> None:
    """Hundreds of stations: rewrite a station's report only when its verdict changes."""
    try:
        if path.read_text(encoding="utf-8") == content:
            return
    except OSError:
        pass
    write_atomically(path, content, mode=PUBLIC_MODE)


def publish_station_reports(output_dir: Path, health: Sequence[StationHealth]) -> None:
    reports, ok = output_dir / "report" / "station", output_dir / "ok" / "station"
    reports.mkdir(parents=True, exist_ok=True)
    ok.mkdir(parents=True, exist_ok=True)
    for result in health:
        name = f"{result.slug}.json"
        write_if_changed(reports / name, as_json(station_report(result)))
        link_if(on_air(result), ok / name, f"../../report/station/{name}")
    # A station that left the list is unknown again: 404, not its last verdict.
    listed = {f"{result.slug}.json" for result in health}
    for directory in (ok, reports):
        for entry in directory.iterdir():
            if entry.name not in listed:
                entry.unlink(missing_ok=True)


def buckets(start: float, end: float) -> range:
    return range(int(start) // BUCKET_SECONDS, int(end) // BUCKET_SECONDS + 1)


def vouch(output_dir: Path, now: float, fresh_until: float) -> None:
    """Link fresh-<bucket> to ok/ for every bucket up to fresh_until; drop those that are over.

    The bucket just over is kept: a request that nginx stamped a moment before this run may still be opening it.
    """
    for bucket in buckets(now, fresh_until):
        link(output_dir / f"fresh-{bucket}", "ok")
    first_kept = int(now) // BUCKET_SECONDS - 1
    for entry in output_dir.glob("fresh-*"):
        number = entry.name.removeprefix("fresh-")
        if not (number.isdigit() and int(number) >= first_kept):
            entry.unlink(missing_ok=True)


def withdraw(output_dir: Path) -> None:
    """Vouch for nothing: every /health* answers 503 until a run succeeds."""
    for entry in output_dir.glob("fresh-*"):
        entry.unlink(missing_ok=True)
    (output_dir / "ok" / "host.json").unlink(missing_ok=True)


def publish(snapshot: Snapshot, max_age: float, output_dir: Path, textfile_dir: Path | None = None,
            fresh_seconds: float = MIN_FRESH_SECONDS) -> HostHealth:
    """Write every file; returns the host's health."""
    health = evaluate(snapshot, max_age)
    host = host_health(health)
    fresh_until = snapshot.generated_at + fresh_seconds
    write_atomically(output_dir / "report" / "stations.json", as_json(report(snapshot, health, max_age)),
                     mode=PUBLIC_MODE)
    write_atomically(output_dir / "report" / "host.json", as_json(host_report(snapshot, host, fresh_until)),
                     mode=PUBLIC_MODE)
    publish_station_reports(output_dir, health)
    link(output_dir / "ok" / "stations.json", "../report/stations.json")
    link_if(host.serving, output_dir / "ok" / "host.json", "../report/host.json")
    vouch(output_dir, snapshot.generated_at, fresh_until)
    for name in OLD_FILES:
        (output_dir / name).unlink(missing_ok=True)
    metrics = render(snapshot, health)
    write_atomically(output_dir / "metrics.prom", metrics, mode=PUBLIC_MODE)
    if textfile_dir is not None:
        # node_exporter reads *.prom; the temporary file write_atomically uses ends in .tmp.
        write_atomically(textfile_dir / "hls.prom", metrics, mode=PUBLIC_MODE)
    page = json.dumps(page_data(snapshot, health), ensure_ascii=False) + "\n"
    write_atomically(output_dir / "stations.json", page, mode=PUBLIC_MODE)
    return host


def publish_unknown(output_dir: Path, error: SnapshotError, now: float) -> None:
    """No snapshot: nothing is known to be healthy, and the host report says why."""
    withdraw(output_dir)
    document = {"status": "unknown", "reason": str(error), "generated_at": iso(now)}
    write_atomically(output_dir / "report" / "host.json", as_json(document), mode=PUBLIC_MODE)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the settings file the role writes (status.env)")
    parser.add_argument("--output-dir", type=Path, required=True, help="where nginx reads the files")
    parser.add_argument("--textfile-dir", type=Path, help="node_exporter's textfile collector directory")
    parser.add_argument("--fresh-seconds", type=float,
                        help="how long /health* believe this run (default: the playlist age limit, at least 60 s)")
    args = parser.parse_args(argv)
    try:
        config = Config.from_env(read_settings(args.config))
    except BadSetting as error:
        print(f"hls-status: {error}", file=sys.stderr)
        return 1
    fresh_seconds = args.fresh_seconds or max(MIN_FRESH_SECONDS, config.max_playlist_age)
    try:
        snapshot = collect(config)
    except SnapshotError as error:
        publish_unknown(args.output_dir, error, time.time())
        print(f"hls-status: {error}", file=sys.stderr)
        return 1
    publish(snapshot, config.max_playlist_age, args.output_dir, args.textfile_dir, fresh_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())

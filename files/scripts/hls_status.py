"""hls-status: refresh the files nginx serves at /health, /metrics and /status.json, from one snapshot.

Run by hls-status.timer. Writes into --output-dir (each file atomically):
  health.json    the health report (hls_health.py --json), whatever the outcome;
  healthy.json   the same, only while every station is healthy (nginx answers /health with 200 when it
                 exists, else 503 with health.json);
  metrics.prom   Prometheus text (also copied to --textfile-dir/hls.prom for node_exporter, if given);
  stations.json  what the status page shows: no stream URL, no secret.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from hls_health import StationHealth, evaluate, report
from hls_metrics import render
from hls_snapshot import DEFAULT_CONFIG, Config, Snapshot, SnapshotError, collect
from hls_station import write_atomically

PUBLIC_MODE = 0o644


def page_data(snapshot: Snapshot, health: Sequence[StationHealth]) -> dict[str, Any]:
    """The status page's view of the stations."""
    healthy = {result.slug: result.healthy for result in health}
    return {
        "generated_at": round(snapshot.generated_at, 3),
        "listeners_updated_at": snapshot.analytics.updated_at,
        "stations": [
            {
                "slug": station.slug,
                "title": station.title or station.slug,
                "state": station.state,
                "active": station.active_state == "active",
                "enabled": station.enabled,
                "healthy": healthy.get(station.slug, False),
                "uptime_seconds": None if station.uptime is None else round(station.uptime),
                "playlist_age_seconds": None if station.playlist_age is None else round(station.playlist_age, 1),
                "upstream_codec": station.upstream_codec,
                "mode": station.mode,
                "listeners": station.listeners,
                "now_playing": station.now_playing,
                "playlist": f"/hls/{station.slug}/index.m3u8",
            }
            for station in snapshot.stations
        ],
    }


def publish(snapshot: Snapshot, max_age: float, output_dir: Path, textfile_dir: Path | None = None) -> bool:
    """Write every file; True when all stations are healthy."""
    health = evaluate(snapshot, max_age)
    document = json.dumps(report(snapshot, health, max_age), indent=2) + "\n"
    all_healthy = all(result.healthy for result in health)
    write_atomically(output_dir / "health.json", document, mode=PUBLIC_MODE)
    if all_healthy:
        write_atomically(output_dir / "healthy.json", document, mode=PUBLIC_MODE)
    else:
        (output_dir / "healthy.json").unlink(missing_ok=True)
    metrics = render(snapshot, health)
    write_atomically(output_dir / "metrics.prom", metrics, mode=PUBLIC_MODE)
    if textfile_dir is not None:
        # node_exporter reads *.prom; the temporary file write_atomically uses ends in .tmp.
        write_atomically(textfile_dir / "hls.prom", metrics, mode=PUBLIC_MODE)
    page = json.dumps(page_data(snapshot, health), ensure_ascii=False) + "\n"
    write_atomically(output_dir / "stations.json", page, mode=PUBLIC_MODE)
    return all_healthy


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="settings file (default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, required=True, help="where nginx reads the files")
    parser.add_argument("--textfile-dir", type=Path, help="node_exporter's textfile collector directory")
    args = parser.parse_args(argv)
    config = Config.load(args.config)
    try:
        snapshot = collect(config)
    except SnapshotError as error:
        # Without a snapshot nothing is known to be healthy: /health answers 503 until the next good run.
        (args.output_dir / "healthy.json").unlink(missing_ok=True)
        print(f"hls-status: {error}", file=sys.stderr)
        return 1
    publish(snapshot, config.max_playlist_age, args.output_dir, args.textfile_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

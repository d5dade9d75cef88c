"""Reaction times on the benchmark host, as a listener sees them through nginx.

  flag      the backend flags a station (generate_hls_stream false -> true) -> its first playlist is served
  restarts  for several stations at once, `systemctl kill -s KILL` and `systemctl restart` of hls@<slug> in
            turns -> hls-playlists' playlist (/run/hls/_playlists/<slug>.m3u8) lists the new run's first segment;
            and the gap a listener hears there: that segment's EXT-X-PROGRAM-DATE-TIME minus the end (date-time
            plus EXTINF) of the segment listed before it
  serving  wait until every station serves a segment written after --since (the host-restart figure: the
           caller restarts the container and times this)
  list     put the stations in the test backend, then wait like `serving` (sets the benchmark up)

Times are measured with time.time() (the host and the container share the kernel clock), so a caller
outside the container can pass its own start time with --since.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from benchcommon import (
    NGINX,
    Listed,
    backend_stations,
    emit,
    http_get,
    listed_segments,
    log,
    median,
    playlist_path,
    run,
    set_backend,
    show,
    systemctl,
    wait_for,
)

TOKEN = "bench-token"
HEALTHY_S = 32  # hls_launcher.HEALTHY_RUN_SECONDS (30) and a margin


def served_segments(slug: str) -> list[Listed]:
    status, body = http_get(f"{NGINX}/hls/{slug}/index.m3u8")
    return listed_segments(body) if status == 200 else []


def time_flag(slug: str, slugs: list[str], timeout: float) -> float:
    """Seconds from the backend flagging `slug` on to its first playlist served (it starts flagged off)."""
    set_backend(stations=backend_stations(slugs, lambda s: s != slug), token=TOKEN)
    systemctl("start", "hls-sync.service", check=False)
    if not wait_for(lambda: not served_segments(slug), timeout=30):
        raise RuntimeError(f"{slug} still serves after being flagged off")
    time.sleep(2)
    started = time.time()
    set_backend(stations=backend_stations(slugs), token=TOKEN)
    if not wait_for(lambda: served_segments(slug), timeout=timeout, interval=0.1):
        raise RuntimeError(f"{slug} did not serve within {timeout:g} s of being flagged")
    return time.time() - started


def running_seconds(unit: str) -> float:
    pid = show([unit], "MainPID")[unit]["MainPID"]
    try:
        return float(run("ps", "-o", "etimes=", "-p", pid).strip() or 0)
    except RuntimeError:
        return 0.0


def listed(slug: str) -> list[Listed]:
    """The station's playlist as hls-playlists wrote it (empty while there is none)."""
    try:
        return listed_segments(playlist_path(slug).read_text())
    except OSError:
        return []


def new_run(segments: Sequence[Listed], known: set[str]) -> tuple[Listed, Listed] | None:
    """The first segment of a run begun since the names `known` were listed (it carries EXT-X-DISCONTINUITY,
    and every segment is named after its slot), and the segment listed just before it."""
    for previous, segment in zip(segments, segments[1:], strict=False):
        if segment.discontinuity and segment.name not in known:
            return previous, segment
    return None


def time_restart(slug: str, action: str, timeout: float) -> dict[str, object]:
    """kill (-9 of every process of the unit) or restart of a healthy station -> its new run's first segment listed.

    Healthy: running for longer than the launcher's HEALTHY_RUN_SECONDS, or the restart would (rightly)
    wait out a start backoff, as for a station that keeps failing.
    """
    unit = f"hls@{slug}.service"
    if not wait_for(lambda: len(listed(slug)) >= 2 and running_seconds(unit) > HEALTHY_S, timeout=120):
        raise RuntimeError(f"{slug} is not serving")
    known = {segment.name for segment in listed(slug)}
    started = time.time()
    if action == "kill":
        systemctl("kill", "--signal=SIGKILL", unit)
    else:
        systemctl("restart", unit)
    found = wait_for(lambda: new_run(listed(slug), known), timeout, interval=0.05)
    seconds = time.time() - started
    if found is None:
        raise RuntimeError(f"{slug}: no segment of a new run listed within {timeout:g} s of {action}")
    previous, first = found
    return {"action": action, "slug": slug, "listed_s": round(seconds, 3),
            "gap_s": round(first.start - previous.end, 3), "previous": previous.name, "first": first.name,
            "discontinuity": first.discontinuity}


def time_restarts(slugs: Sequence[str], runs: int, timeout: float) -> dict[str, object]:
    """Every station in parallel: `runs` kills and `runs` restarts each, in turns."""
    failures: list[str] = []

    def station(slug: str) -> list[dict[str, object]]:
        samples = []
        for index in range(2 * runs):
            action = ("kill", "restart")[index % 2]
            try:
                samples.append(time_restart(slug, action, timeout))
            except RuntimeError as error:  # one station's failure must not lose the others'
                failures.append(str(error))
                continue
            log(f"{slug} {action}: listed after {samples[-1]['listed_s']:.2f} s, gap {samples[-1]['gap_s']:.3f} s")
        return samples

    with ThreadPoolExecutor(max_workers=len(slugs)) as pool:
        samples = [sample for result in pool.map(station, slugs) for sample in result]
    return {"what": "restarts", "stations": list(slugs), "runs": runs, "samples": samples, "failures": failures}


def time_serving(slugs: Sequence[str], since: float, timeout: float) -> dict[str, float]:
    """Seconds from `since` until each station serves a segment written after `since` (to within one polling round:
    the stations still waiting are asked in turn, 16 at once, through nginx as a listener would)."""
    ready: dict[str, float] = {}
    pending = list(slugs)

    def fresh(slug: str) -> bool:
        return any(segment.start >= since for segment in served_segments(slug))

    with ThreadPoolExecutor(max_workers=16) as pool:
        while pending and time.time() - since < timeout:
            answers = list(pool.map(fresh, pending))
            now = time.time()
            ready.update((slug, now - since) for slug, done in zip(pending, answers, strict=True) if done)
            pending = [slug for slug, done in zip(pending, answers, strict=True) if not done]
            time.sleep(0.5)
    if pending:
        log(f"{len(pending)} station(s) not serving after {timeout:g} s: {sorted(pending)[:5]}")
    return ready


def distribution(seconds: Sequence[float], stations: int) -> dict[str, float]:
    """p50, p95 and max over all `stations` (nearest rank; a station that never served counts as infinitely late)."""
    ordered = sorted(seconds) + [math.inf] * (stations - len(seconds))
    return {"p50_s": ordered[math.ceil(0.50 * stations) - 1], "p95_s": ordered[math.ceil(0.95 * stations) - 1],
            "max_s": ordered[-1], "stations": stations, "serving": len(seconds)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("flag", "restarts", "serving", "list"))
    parser.add_argument("--slug", default="demo-aac-1", help="the station flagged")
    parser.add_argument("--slugs", nargs="+", default=["demo-aac-1", "demo-mp3-1"],
                        help="restarts: the stations killed and restarted, all at once")
    parser.add_argument("--stations", type=int, default=10, help="stations per codec in the backend")
    parser.add_argument("--codecs", nargs="+", default=["aac", "mp3"], help="upstream codecs (demo mounts)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--since", type=float, help="serving: the start time (Unix seconds)")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)
    slugs = [f"demo-{codec}-{i}" for codec in args.codecs for i in range(1, args.stations + 1)]
    if args.what == "list":
        args.since = time.time()
        set_backend(stations=backend_stations(slugs), token=TOKEN)
        systemctl("start", "hls-sync.service")
    if args.what == "restarts":
        emit(time_restarts(args.slugs, args.runs, args.timeout))
        return 0
    if args.what in ("serving", "list"):
        ready = time_serving(slugs, args.since or time.time(), args.timeout)
        figures = distribution(list(ready.values()), len(slugs))
        log(f"{args.what}: p50 {figures['p50_s']:.1f} s, p95 {figures['p95_s']:.1f} s, max {figures['max_s']:.1f} s")
        emit({"what": args.what, **figures, "timeout_s": args.timeout, "median_s": figures["p50_s"],
              "samples_s": [figures["max_s"]], "per_station_s": ready})
        return 0
    samples = []
    for run_index in range(args.runs):
        samples.append(time_flag(args.slug, slugs, args.timeout))
        log(f"flag {run_index + 1}: {samples[-1]:.1f} s")
    emit({"what": args.what, "median_s": median(samples), "samples_s": samples})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

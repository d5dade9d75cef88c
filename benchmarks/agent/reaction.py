"""Reaction times on the benchmark host, as a listener sees them through nginx.

  flag     the backend flags a station (generate_hls_stream false -> true) -> its first playlist is served
  kill     kill -9 of a station's FFmpeg -> the playlist lists a segment written by the new FFmpeg
  serving  wait until every station serves a segment written after --since (the host-restart figure: the
           caller restarts the container and times this)
  list     put the stations in the test backend, then wait like `serving` (sets the benchmark up)

Times are measured with time.time() (the host and the container share the kernel clock), so a caller
outside the container can pass its own start time with --since.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from benchcommon import (
    NGINX,
    backend_stations,
    emit,
    http_get,
    log,
    median,
    run,
    segments,
    set_backend,
    show,
    systemctl,
    wait_for,
)

TOKEN = "bench-token"
HEALTHY_S = 32  # hls_launcher.HEALTHY_RUN_SECONDS (30) and a margin


def served_segments(slug: str) -> list[str]:
    status, body = http_get(f"{NGINX}/hls/{slug}/index.m3u8")
    return segments(body) if status == 200 else []


def launch(segment: str) -> str:
    """The FFmpeg start (ms) that a segment name <start ms>-<sequence>.ts carries."""
    return segment.split("-")[0]


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


def time_kill(slug: str, timeout: float) -> float:
    """Seconds from kill -9 of a healthy FFmpeg to a served segment written by its successor.

    Healthy: running for longer than the launcher's HEALTHY_RUN_SECONDS, or the restart would (rightly)
    wait out a start backoff, as for a station that keeps failing.
    """
    unit = f"hls@{slug}.service"
    if not wait_for(lambda: len(served_segments(slug)) >= 2 and running_seconds(unit) > HEALTHY_S, timeout=90):
        raise RuntimeError(f"{slug} is not serving")
    before = {launch(name) for name in served_segments(slug)}
    started = time.time()
    systemctl("kill", "--signal=SIGKILL", "--kill-whom=main", unit)
    if not wait_for(lambda: any(launch(n) not in before for n in served_segments(slug)), timeout, interval=0.1):
        raise RuntimeError(f"{slug} wrote no fresh segment within {timeout:g} s of kill -9")
    return time.time() - started


def time_serving(slugs: Sequence[str], since: float, timeout: float) -> float:
    """Seconds from `since` until every station serves a segment written after `since`."""
    pending = set(slugs)

    def fresh() -> bool:
        for slug in list(pending):
            if any(int(launch(name)) / 1000 >= since for name in served_segments(slug) if launch(name).isdigit()):
                pending.discard(slug)
        return not pending

    if not wait_for(fresh, timeout=timeout, interval=0.2):
        raise RuntimeError(f"{len(pending)} station(s) not serving after {timeout:g} s: {sorted(pending)[:5]}")
    return time.time() - since


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("flag", "kill", "serving", "list"))
    parser.add_argument("--slug", default="demo-aac-1", help="the station flagged or killed")
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
    samples = []
    for run_index in range(args.runs if args.what in ("flag", "kill") else 1):
        if args.what == "flag":
            samples.append(time_flag(args.slug, slugs, args.timeout))
        elif args.what == "kill":
            samples.append(time_kill(args.slug, args.timeout))
        else:
            samples.append(time_serving(slugs, args.since or time.time(), args.timeout))
        log(f"{args.what} {run_index + 1}: {samples[-1]:.1f} s")
    emit({"what": args.what, "median_s": median(samples), "samples_s": samples})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Serving: nginx with this project's configuration vs a plain static nginx serving the same files.

Runs inside the benchmark host, where the stations write /run/hls. The project's nginx (port 80, deployed by
the role) and a plain one (a minimal static configuration on port 8081, same worker settings, Debian's usual
combined access log) serve the same files; wrk with hls_listener.lua loads one, then the other, in turns.

  headline   `rounds` runs of `duration` s at `connections` connections each: requests/s, p50, p99
  capacity   a sweep of connection counts; the highest request rate whose p99 stays under 50 ms, turned
             into listeners (a listener asks for one playlist and one segment per segment duration)
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path

from benchcommon import PLAYLISTS, emit, log, median, progress_marker, run, wait_for

PLAIN_CONF = Path("/etc/hls-bench/nginx-plain.conf")
PLAIN_PORT = 8081
LOGS = (Path("/var/log/nginx/hls-access.log"), Path("/var/log/nginx/plain-access.log"))
SCRIPT = Path(__file__).with_name("hls_listener.lua")
P99_LIMIT_US = 50_000
PLAIN_TEMPLATE = """# A plain static nginx: the same files, the same worker settings, nothing else.
user www-data;
worker_processes auto;
pid /run/hls-bench-nginx-plain.pid;
error_log /var/log/nginx/plain-error.log warn;
events {{
    worker_connections {connections};
}}
http {{
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    include /etc/nginx/mime.types;
    types {{
        application/vnd.apple.mpegurl m3u8;
        video/mp2t ts;
    }}
    access_log /var/log/nginx/plain-access.log combined;
    server {{
        listen {port};
        location /hls/ {{
            alias {root}/;
        }}
        location ~ ^/hls/([^/]+)/index\\.m3u8$ {{
            alias {root}/{playlists}/$1.m3u8;
        }}
    }}
}}
"""


def start_plain_nginx(root: str) -> None:
    project = Path("/etc/nginx/nginx.conf").read_text()
    connections = re.search(r"worker_connections\s+(\d+);", project)
    PLAIN_CONF.parent.mkdir(parents=True, exist_ok=True)
    PLAIN_CONF.write_text(PLAIN_TEMPLATE.format(connections=connections.group(1) if connections else 1024,
                                                port=PLAIN_PORT, root=root, playlists=PLAYLISTS.name))
    run("nginx", "-t", "-q", "-c", str(PLAIN_CONF))
    run("nginx", "-s", "quit", "-c", str(PLAIN_CONF), check=False)
    run("nginx", "-c", str(PLAIN_CONF))


def stop_plain_nginx() -> None:
    run("nginx", "-s", "quit", "-c", str(PLAIN_CONF), check=False)


def wrk(port: int, connections: int, duration: float, threads: int, root: str, slugs: Sequence[str]) -> dict:
    for path in LOGS:  # every run starts with empty logs: the disk does not fill, the appends cost the same
        if path.exists():
            path.write_text("")
    out = run("wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s",
              "-s", str(SCRIPT), f"http://127.0.0.1:{port}", "--", root, *slugs)
    figures = json.loads(out.strip().splitlines()[-1])
    seconds = figures["duration_us"] / 1e6
    return {
        "rps": figures["requests"] / seconds,
        "p50_ms": figures["p50_us"] / 1000,
        "p99_ms": figures["p99_us"] / 1000,
        "mib_per_s": figures["bytes"] / seconds / 2**20,
        "errors": figures["errors"] + figures["non_2xx"],
        "connections": connections,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slugs", nargs="+", required=True, help="stations whose files are served")
    parser.add_argument("--root", default="/run/hls")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (they share the host's cores)")
    parser.add_argument("--sweep", type=int, nargs="*", default=[8, 32, 128, 512, 2048])
    parser.add_argument("--sweep-duration", type=float, default=6)
    parser.add_argument("--segment-seconds", type=float, default=6)
    args = parser.parse_args(argv)
    playlists = [Path(args.root) / PLAYLISTS.name / f"{slug}.m3u8" for slug in args.slugs]
    if not wait_for(lambda: all(progress_marker(path) for path in playlists), timeout=120, interval=1):
        raise SystemExit("serving: not every station has a playlist to serve")
    start_plain_nginx(args.root)
    targets = {"project": 80, "plain": PLAIN_PORT}
    try:
        headline: dict[str, list[dict]] = {name: [] for name in targets}
        for round_index in range(args.rounds):
            order = list(targets) if round_index % 2 == 0 else list(reversed(targets))
            for name in order:
                figures = wrk(targets[name], args.connections, args.duration, args.threads, args.root, args.slugs)
                headline[name].append(figures)
                log(f"round {round_index + 1}: {name}: {figures['rps']:.0f} req/s, p50 {figures['p50_ms']:.2f} ms, "
                    f"p99 {figures['p99_ms']:.2f} ms, {figures['errors']} errors")
        sweep: dict[str, list[dict]] = {name: [] for name in targets}
        for step, connections in enumerate(args.sweep):
            order = list(targets) if step % 2 == 0 else list(reversed(targets))
            for name in order:
                figures = wrk(targets[name], connections, args.sweep_duration, args.threads, args.root, args.slugs)
                sweep[name].append(figures)
                log(f"sweep {connections} connections: {name}: {figures['rps']:.0f} req/s, "
                    f"p99 {figures['p99_ms']:.2f} ms")
    finally:
        stop_plain_nginx()
    result: dict = {"connections": args.connections, "duration_s": args.duration, "rounds": args.rounds,
                    "threads": args.threads, "stations": len(args.slugs), "targets": {}}
    for name in targets:
        runs = headline[name]
        good = [point for point in sweep[name] if point["p99_ms"] < P99_LIMIT_US / 1000 and not point["errors"]]
        best = max(good, key=lambda point: point["rps"], default=None)
        result["targets"][name] = {
            "rps": median([r["rps"] for r in runs]),
            "p50_ms": median([r["p50_ms"] for r in runs]),
            "p99_ms": median([r["p99_ms"] for r in runs]),
            "errors": sum(r["errors"] for r in runs),
            "samples": runs,
            "sweep": sweep[name],
            "capacity_rps": best["rps"] if best else 0.0,
            "listeners": int(best["rps"] * args.segment_seconds / 2) if best else 0,
        }
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

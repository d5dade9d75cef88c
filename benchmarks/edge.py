"""Benchmark (not a test): what an edge spares its origin, and what it serves next to a plain static nginx.

Everything runs on this machine, on loopback, in one run (`make bench-edge`):
- the origin: a plain static nginx serving a directory of live-ish stations (benchmarks/hls_load.py: a segment
  of --kbit kbit/s every --seconds on the clock, the playlist rewritten after it), its access log counted;
- the edge: the role hls_edge's own nginx.conf (templates/etc/nginx/edge.conf.j2, rendered by Ansible with the
  role's defaults, the origin as its only hls_origins host), run as a throwaway nginx (tests/unit/
  throwaway_nginx.py, as the unit tests run it);
- 1. origin load: N simulated listeners (each polls its station's playlist every target duration and fetches each
  new segment) go straight to the origin, then through the edge; origin requests/s in each case. Through the
  edge, the origin should see about one playlist per half target duration and one segment per target duration per
  station, whatever N;
- 2. throughput: wrk on one segment and one playlist, the edge (cache hits) and the origin (the files from disk)
  in turns, the same settings.
With --write, the tables and the machine go into docs/benchmarks.md under "## Edges" (the other sections kept).

Usage: python3 benchmarks/edge.py [--listeners 10 100 1000] [--window 12] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import pwd
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hls_load import Listeners, Stations, Window
from report import machine, machine_lines, write_section

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/unit"))
import throwaway_nginx  # noqa: E402 (from the unit tests' directory, just put on the path)

HEADING = "## Edges (issue 14): origin load and requests per second"
WRK_CONNECTIONS = 8


@dataclass(frozen=True)
class Servers:
    origin: int  # ports
    edge: int
    origin_log: Path

    def origin_requests(self) -> int:
        with self.origin_log.open("rb") as log:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: log.read(1 << 20), b""))


def origin_conf(directory: Path, root: Path, port: int) -> str:
    """A plain static nginx: the files, the edge's worker settings, Debian's usual combined access log."""
    return "\n".join([
        f"user {pwd.getpwuid(os.getuid()).pw_name};", "worker_processes auto;", f"pid {directory}/nginx.pid;",
        f"error_log {directory}/error.log warn;", "events { worker_connections 4096; }", "http {",
        "sendfile on;", "tcp_nopush on;", "keepalive_timeout 65;", "include /etc/nginx/mime.types;",
        f"access_log {directory}/access.log combined;", *throwaway_nginx.temp_paths(directory),
        f"server {{ listen 127.0.0.1:{port}; root {root}; }}", "}", ""])


def answers(port: int, path: str, status: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == status
    finally:
        connection.close()


@contextmanager
def servers(directory: Path, root: Path, slug: str, seconds: float) -> Iterator[Servers]:
    origin_port, edge_port, status_port = throwaway_nginx.free_ports(3)
    (directory / "origin").mkdir()
    (directory / "edge").mkdir()
    origin = throwaway_nginx.start(directory / "origin", origin_conf(directory / "origin", root, origin_port),
                                   lambda: answers(origin_port, f"/hls/{slug}/index.m3u8", 200))
    try:
        hosts = throwaway_nginx.inventory(directory / "edge", {"hls_origins": {"hosts": {"origin": {
            "hls_common_origin_address": f"127.0.0.1:{origin_port}", "hls_segment_seconds": round(seconds)}}}})
        config = throwaway_nginx.render(directory / "edge", "hls_edge", "edge.conf.j2", hosts, "localhost", {
            "hls_edge_port": edge_port, "hls_edge_cache_dir": str(directory / "edge/cache"),
            "hls_common_access_log": str(directory / "edge/hls-access.log"),
            "__hls_edge_cors_file": str(directory / "edge/hls-cors.conf")})
        edge = throwaway_nginx.start(
            directory / "edge", throwaway_nginx.for_a_throwaway_process(config, directory / "edge", status_port),
            lambda: answers(edge_port, "/nothing", 404))
        try:
            yield Servers(origin_port, edge_port, directory / "origin/access.log")
        finally:
            throwaway_nginx.stop(edge)
    finally:
        throwaway_nginx.stop(origin)


def wrk(port: int, path: str, seconds: float) -> float:
    """Requests/s of `path`, from wrk (1 thread, WRK_CONNECTIONS connections); non-2xx answers refused."""
    out = subprocess.run(["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds:g}s", f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk on {path} had errors:\n{out}")
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if rate is None:
        raise SystemExit(f"wrk printed no rate:\n{out}")
    return float(rate.group(1))


def per_second(count: int, window: Window) -> str:
    return f"{count / window.seconds:,.1f}"


def load_table(results: dict[tuple[int, str], Window], stations: int, seconds: float) -> list[str]:
    fresh = max(1, int(seconds) // 2)  # the edge's playlist lifetime: half a target duration, whole seconds
    flat = stations * (1 / fresh + 1 / seconds)
    out = ["| Listeners | Path | Listener requests/s | Origin requests/s | Origin requests per listener request | "
           "Listener errors |", "|---:|---|---:|---:|---:|---:|"]
    for (count, path), window in results.items():
        share = window.origin / window.listeners.requests if window.listeners.requests else float("nan")
        out.append(f"| {count:,} | {path} | {per_second(window.listeners.requests, window)} | "
                   f"{per_second(window.origin, window)} | {share:.3f} | {window.listeners.errors} |")
    out += ["", f"Through the edge the origin should see at most {stations} stations x (1 playlist per {fresh} s + 1 "
            f"segment per {seconds:g} s) = {flat:.1f} requests/s, whatever the number of listeners; straight to "
            f"the origin, N listeners make N x (1 playlist + 1 segment) per {seconds:g} s. nginx keeps cache times "
            f"in whole seconds and an entry is stale only once the clock has passed its second, so a {fresh} s "
            f"playlist stays fresh {fresh} to {fresh + 1} s: the origin may see fewer playlist fetches than that."]
    return out


def throughput_table(rates: dict[tuple[str, str], list[float]], sizes: dict[str, int]) -> list[str]:
    out = ["| Object | Edge (cache hits), requests/s | Plain static nginx, requests/s | Edge / plain |",
           "|---|---:|---:|---:|"]
    for name, size in sizes.items():
        edge, plain = statistics.median(rates[name, "edge"]), statistics.median(rates[name, "plain"])
        out.append(f"| {name} ({size:,} bytes) | {edge:,.0f} | {plain:,.0f} | {edge / plain:.2f} |")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--stations", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0, help="target duration (the molecule scenarios')")
    parser.add_argument("--kbit", type=int, default=96, help="the stations' bit rate")
    parser.add_argument("--window", type=float, default=12.0, help="seconds measured per case")
    parser.add_argument("--warm-up", type=float, default=1.0, help="seconds after the last listener started")
    parser.add_argument("--wrk-seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2, help="wrk runs per object and server, in turns")
    parser.add_argument("--write", type=Path, help="the benchmark notes to put the tables in (docs/benchmarks.md)")
    args = parser.parse_args(argv)
    before = machine()
    slugs = [f"bench-{number}" for number in range(1, args.stations + 1)]
    loads: dict[tuple[int, str], Window] = {}
    rates: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        with Stations(directory / "files", slugs, args.seconds, args.kbit) as stations, \
                servers(directory, directory / "files", slugs[0], args.seconds) as running:
            for count in args.listeners:
                for path, port in (("direct", running.origin), ("through the edge", running.edge)):
                    crowd = Listeners(port, slugs, count, args.seconds)
                    window = asyncio.run(crowd.measure(args.warm_up, args.window, running.origin_requests))
                    loads[count, path] = window
                    print(f"edge bench: {count} listeners, {path}: listeners {window.listeners.requests} requests, "
                          f"origin {window.origin} in {window.seconds:.1f} s", file=sys.stderr)
            segment = f"/hls/{slugs[0]}/{stations.slot() - 1}.ts?s=bench"
            objects = {"segment": segment, "playlist": f"/hls/{slugs[0]}/index.m3u8?s=bench"}
            for round_index in range(args.rounds):
                for name, path in objects.items():
                    targets = [("edge", running.edge), ("plain", running.origin)]
                    for target, port in targets if round_index % 2 == 0 else reversed(targets):
                        rates.setdefault((name, target), []).append(wrk(port, path, args.wrk_seconds))
                        print(f"edge bench: wrk {name} {target}: {rates[name, target][-1]:,.0f} requests/s",
                              file=sys.stderr)
            sizes = {"segment": len(stations.segment), "playlist": (directory / "files" / objects["playlist"]
                                                                     .partition("?")[0].lstrip("/")).stat().st_size}
    after = machine()
    section = "\n".join([
        HEADING, "",
        f"`make bench-edge` ({Path(__file__).relative_to(REPO)}), everything on this machine on loopback: "
        f"{args.stations} live-ish stations ({args.seconds:g} s segments of {args.kbit} kbit/s, a new one every "
        f"{args.seconds:g} s on the clock) served by a plain static nginx (the origin), and the role hls_edge's own "
        "nginx.conf in front of it. Listeners (asyncio, one keep-alive connection each) poll their station's "
        "playlist every target duration and fetch each new segment, spread over the stations, arriving over the "
        f"first target duration; each case measured for {args.window:g} s once all have arrived.",
        "", f"{machine_lines(before)[0]} Load average at the end {after['load_1_5_15']}. The machine is shared "
        "(other sessions' builds and tests run on it): the origin's request counts do not depend on its speed, the "
        "requests/s of the second table do, so read those as a ratio.", "",
        "### Origin load: listeners straight to the origin vs through one edge", "",
        *load_table(loads, args.stations, args.seconds), "",
        "### The edge's requests/s (cache hits) vs a plain static nginx serving the files from disk", "",
        f"wrk, 1 thread, {WRK_CONNECTIONS} connections, {args.wrk_seconds:g} s per run, median of {args.rounds} runs "
        "taken in turns; both nginx with `worker_processes auto`. The edge writes its session log (buffered) and "
        "puts the listener's `s=` on the playlist's lines (sub_filter); the plain one writes a combined log. Per "
        "request the edge does more: its locations' regular expressions, the cache lookup (the key in shared "
        "memory, the body in a cache file behind its header), the session maps of its log, and for a playlist the "
        "text filter (so a chunked answer).", "",
        *throughput_table(rates, sizes), ""])
    print(section)
    if args.write:
        write_section(args.write, HEADING, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

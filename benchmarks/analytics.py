"""Benchmark (not a test): session log lines parsed per second, this project's parser next to GoAccess.

Generates a session log in the exact nginx format (log_format hls_session escape=json: 16 tab-separated fields),
then times, alternating and on the same file in the same run:
- hls-analytics parse: radio_hls.analytics.logparse.Aggregator.feed over the file's bytes (split, classify,
  aggregate);
- hls-analytics run: Analytics.read without an endpoint, what a run does but spooling: LogReader (bytes from disk),
  the parser, and in 16 MiB slices sessions (joins, keyed hashes), the events sent to the backend and the state file;
  in one process and in two worker processes, one parsing a slice while the other commits one (run.Committer);
- GoAccess, given the matching --log-format, writing its JSON report (it parses and aggregates every panel).
Each is timed `--runs` times (median reported). With --write, the table and the machine go into
docs/benchmarks.md under "## Analytics: log lines parsed per second" (the other sections are kept).

--same-as REF checks instead that this checkout's code and the code at git REF (e.g. main) turn the generated log,
and the same log with hostile lines mixed in, into the same events, counters and session state, both as one
batch and as a run in small slices (what a speed-up must keep).

Usage: python3 benchmarks/analytics.py [--lines 1000000] [--runs 3] [--write docs/benchmarks.md] [--same-as REF]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from report import write_section

from radio_hls.analytics import logreader, run
from radio_hls.analytics.logparse import Aggregator, Networks
from radio_hls.analytics.logreader import LogReader
from radio_hls.analytics.sessions import Sessions

REPO = Path(__file__).resolve().parents[1]

HEADING = "## Analytics: log lines parsed per second"
GOACCESS_FORMAT = r"%dT%t+%^\t%^\t%^\t%^\t%^\t%h\t%^\t%^\t%^\t%m\t%U\t%s\t%b\t%T\t%u\t%R"
USER_AGENTS = [
    "ExoPlayer/2.19.1 (Linux; Android 14) ExoPlayerLib/2.19.1",
    "AppleCoreMedia/1.0.0.21E236 (iPhone; U; CPU OS 17_4 like Mac OS X; en_us)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "VLC/3.0.20 LibVLC/3.0.20",
    'Mozilla/5.0 (compatible; "quoted"; bot)',
]
REFS = ["radio-crestin-android", "radio-crestin-ios", "radio-crestin-web", ""]


def generate(path: Path, lines: int, seed: int = 1) -> None:
    """3,000 listeners of 20 stations, as an origin sees them: each player asks for the playlist and a segment
    every 6 s (60 % of them put s= on segments too, the others only on the playlist), plus 1 % noise
    (health checks, bots, unknown stations)."""
    rng = random.Random(seed)
    listeners = []
    for number in range(3000):
        session = f"{rng.getrandbits(128):032x}"
        listeners.append((f"{session[:8]}-{session[8:12]}-{session[12:16]}-{session[16:20]}-{session[20:]}",
                          f"station-{number % 20:02d}", f"10.{number % 250}.{number // 250}.{rng.randint(1, 254)}",
                          rng.choice(USER_AGENTS).replace('"', '\\"'), rng.choice(REFS), rng.random() < 0.6))
    noise = [("/healthz", "", "404", "0"), ("/wp-login.php", "", "404", "153"),
             ("/hls/unknown/index.m3u8", "unknown", "404", "153")]
    written, round_start = 0, 1_795_514_400_000
    with path.open("w", encoding="utf-8") as handle:
        while written < lines:
            order = rng.sample(listeners, len(listeners))
            for index, (session, slug, ip, agent, ref, tags_segments) in enumerate(order):
                clock = round_start + index * 6000 // len(order)
                iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(clock // 1000))
                msec = f"{clock // 1000}.{clock % 1000:03d}"
                if rng.random() < 0.01:
                    uri, noise_slug, status, size = rng.choice(noise)
                    handle.write(f"{iso}\t{msec}\t{noise_slug}\t\t\t{ip}\t{ip}\t\t\tGET\t{uri}\t{status}\t{size}\t"
                                 f"0.000\t{agent}\t\n")
                    written += 1
                handle.write(f"{iso}\t{msec}\t{slug}\t{session}\t{ref}\t{ip}\t{ip}\t\t\tGET\t/hls/{slug}/index.m3u8\t"
                             f"200\t{rng.randint(380, 420)}\t0.000\t{agent}\t\n")
                segment_s, segment_ref = (session, ref) if tags_segments else ("", "")
                handle.write(f"{iso}\t{msec}\t{slug}\t{segment_s}\t{segment_ref}\t{ip}\t{ip}\t\t\tGET\t"
                             f"/hls/{slug}/{round_start}-{round_start // 6000 % 100000}.ts\t200\t"
                             f"{rng.randint(90000, 100000)}\t0.{rng.randint(1, 400):03d}\t{agent}\t\n")
                written += 2
                if written >= lines:
                    break
            round_start += 6000


def parse_only(path: Path) -> int:
    data = path.read_bytes()
    started = time.perf_counter()
    aggregator = Aggregator(window_seconds=10)
    aggregator.feed(data)
    elapsed = time.perf_counter() - started
    assert aggregator.lines() > 0
    return_time.append(elapsed)
    return aggregator.lines()


def whole_run(path: Path, workers: bool) -> int:
    """Analytics.read without an endpoint: the log read, parsed and committed in slices as a run does (sessions,
    events, state file), without spooling; `workers`: run.COMMIT_IN_WORKERS (False: one process)."""
    with tempfile.TemporaryDirectory() as directory:
        analytics = run.Analytics(run.Config.from_env({
            "HLS_ANALYTICS_STATE_DIR": directory, "HLS_ACCESS_LOG": str(path),
            "HLS_LISTENERS_FILE": str(Path(directory) / "listeners.json")}))
        run.COMMIT_IN_WORKERS = workers
        run.spare_core = lambda: True  # workers even on a busy machine: what they cost is what is measured
        started = time.perf_counter()
        analytics.read()
        return_time.append(time.perf_counter() - started)
    assert analytics.summary["unsent_events"] > 0
    return analytics.lines_read


def goaccess(path: Path) -> int:
    with tempfile.TemporaryDirectory() as directory:
        report = Path(directory) / "report.json"
        started = time.perf_counter()
        subprocess.run(["goaccess", str(path), "--log-format", GOACCESS_FORMAT, "--date-format", "%Y-%m-%d",
                        "--time-format", "%H:%M:%S", "--no-progress", "-o", str(report)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        return_time.append(time.perf_counter() - started)
        general = json.loads(report.read_text())["general"]
    if general["failed_requests"]:
        raise SystemExit(f"GoAccess could not parse {general['failed_requests']} lines: the format does not match")
    return int(general["valid_requests"])


return_time: list[float] = []


def measure(tools: dict[str, Callable[[Path], int]], path: Path, runs: int) -> dict[str, tuple[int, list[float]]]:
    results: dict[str, tuple[int, list[float]]] = {name: (0, []) for name in tools}
    for _ in range(runs):
        for name, tool in tools.items():  # alternating, so a busy moment hits every tool alike
            lines = tool(path)
            results[name] = (lines, results[name][1] + [return_time.pop()])
    return results


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    version = subprocess.run(["goaccess", "--version"], capture_output=True, text=True, check=False).stdout
    goaccess_version = version.splitlines()[0].strip().rstrip(".") if version else "GoAccess (version unknown)"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}; {goaccess_version}; load average {os.getloadavg()[0]:.1f} "
            "when the run started (the machine is shared)")


def table(results: dict[str, tuple[int, list[float]]], lines: int, size: int, runs: int, conditions: str) -> str:
    goaccess_rate = None
    rows = []
    for name, (parsed, times) in results.items():
        rate = parsed / statistics.median(times)
        if name.startswith("GoAccess"):
            goaccess_rate = rate
        rows.append((name, parsed, statistics.median(times), rate))
    out = [f"{HEADING}", "",
           f"`make bench-analytics` ({Path(__file__).relative_to(REPO)}): a generated session log of {lines:,} lines "
           f"({size / 2**20:.0f} MiB, the exact nginx format), each tool run {runs} times alternately on the same "
           "file, median shown. Measured on: " + conditions + ".", "",
           "| Tool | Lines | Median seconds | Lines per second | vs GoAccess |", "|---|---:|---:|---:|---:|"]
    for name, parsed, seconds, rate in rows:
        ratio = f"{rate / goaccess_rate:.1f}x" if goaccess_rate else "-"
        out.append(f"| {name} | {parsed:,} | {seconds:.2f} | {rate:,.0f} | {ratio} |")
    out += ["", "- hls-analytics parse: `Aggregator.feed` on the file's bytes already in memory (split on tabs, "
            "classify, aggregate per session, station, type and 10 s window).",
            "- hls-analytics run: `Analytics.read` without an endpoint, what one run does but spooling: reading the "
            "file (`LogReader`), parsing, and per 16 MiB slice sessions (joins and keyed hashes), the events and "
            "the state file. One process: `COMMIT_IN_WORKERS = False`; workers: the default, two worker processes "
            "taking turns, one parsing a slice while the other commits the slice before (both cores; the run's "
            "own process only reads).",
            "- GoAccess: `goaccess <log> --log-format ... -o report.json`, every panel of its report (one thread: "
            "Debian 12's GoAccess 1.7 has no `--jobs`, which came with 1.8).",
            "- Where a run's time goes (reading, parsing, sessions, events), before and after issue 15's work, and "
            "what stands between it and 3x GoAccess: [analytics.md](analytics.md#speed).", ""]
    return "\n".join(out)


# Lines no nginx writes, or that only a hostile client makes it write: every one is counted, refused or cleaned
# the same way by the code compared (--same-as). A function of the line's fields (bytes), by field name.
ARABIC_DIGITS = str.maketrans("0123456789", "".join(map(chr, range(0x660, 0x66A))))
HOSTILE: list[Callable[[dict[str, bytes]], bytes]] = [
    lambda f: b"only\tthree\tfields",
    lambda f: b"\t".join(f.values()) + b"\textra",
    lambda f: b"",
    lambda f: b"\t".join({**f, "http_user_agent": f["http_user_agent"] + b"\xff\xfe\xe2\x82"}.values()),
    lambda f: b"\t".join({**f, "hls_slug": f["hls_slug"] + b"\xe9"}.values()),
    lambda f: b"\t".join({**f, "arg_s": f["arg_s"][:8] + b"\xc3"}.values()),
    lambda f: b"\t".join({**f, "arg_ref": b"%00%01x%7f%C2%85%0A\xe9",
                          "http_referer": b"http://x/\\u0002\\u001B[31m\x7f\xc2\x85"}.values()),
    lambda f: b"\t".join({**f, "msec": f["msec"].decode().translate(ARABIC_DIGITS).encode()}.values()),
    lambda f: b"\t".join({**f, "body_bytes_sent": "\u0663\u0664".encode(),
                          "request_time": "\u0660.\u0665".encode()}.values()),
    lambda f: b"\t".join({**f, "status": "2\u0660\u0660".encode()}.values()),
    lambda f: b"\t".join({**f, "arg_s": b"A" * 500}.values()),
    lambda f: b"\t".join({**f, "arg_s": b"abc%2Ddef"}.values()),
    lambda f: b"\t".join({**f, "arg_s": b'x\\"evil'}.values()),
    lambda f: b"\t".join({**f, "request_method": b"HEAD"}.values()),
    lambda f: b"\t".join({**f, "status": b"404"}.values()),
    lambda f: b"\t".join({**f, "uri": b"/hls/x/"}.values()),
    lambda f: b"\t".join({**f, "http_cf_connecting_ip": b"203.0.113.9"}.values()),
    lambda f: b"\t".join({**f, "http_cf_connecting_ip": b"garbage", "arg_s": b""}.values()),
    lambda f: b"\t".join({**f, "arg_s": b"", "http_user_agent": b"a\\u0001b\x7fc\xc2\x85d\xe9 \xc3\xbc"}.values()),
    lambda f: b"\t".join({**f, "msec": b"not-a-time"}.values()),
    lambda f: b"\t".join({**f, "body_bytes_sent": b"99999999999"}.values()),
    lambda f: b"\t".join({**f, "arg_s": b"", "hls_slug": "st\u00e4tion".encode()}.values()),
    lambda f: b"\t".join({**f, "arg_s": b"other-" + f["arg_s"][:8]}.values()),  # a second session of a client
    lambda f: b"\t".join(f.values()) + b"\r",
]


def hostile(path: Path, out: Path, lines: int) -> None:
    """The first `lines` lines of a generated log with a hostile line after every 37th."""
    from radio_hls.common.contract import SESSION_LOG_FIELDS

    written = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle):
            if number >= lines:
                break
            written.append(line)
            if number % 37 == 0:
                fields = dict(zip(SESSION_LOG_FIELDS, line.rstrip(b"\n").split(b"\t"), strict=True))
                written.append(HOSTILE[number // 37 % len(HOSTILE)](fields) + b"\n")
    out.write_bytes(b"".join(written))


def outcome(path: Path, cloudflare: str) -> str:
    """A hash of everything this checkout's code makes of a log: one batch (as whole_run) and a run in small
    slices (run.Analytics.read, its spooled batches and state file); keys of the day fixed, so hashes repeat."""
    keys = {str(day): f"{day:064x}" for day in range(20_000, 21_000)}  # (a day without one gets a random key)
    aggregator = Aggregator(window_seconds=10)
    sessions = Sessions({"keys": dict(keys)}, timeout_minutes=5)
    for block in LogReader(path, None):
        aggregator.feed(block)
    counts = dict(aggregator.counts)
    result: dict[str, object] = {"counts": counts, "events": sessions.assign(aggregator, Networks.parse(cloudflare)),
                                 "state": sessions.state(), "ambiguous": sessions.ambiguous}
    logreader.BLOCK_BYTES, run.SLICE_BYTES = 64 << 10, 1 << 20
    run.spare_core = lambda: True  # (the workers, if this code has them, however busy the machine)
    with tempfile.TemporaryDirectory() as directory:
        state_dir = Path(directory)
        (state_dir / "state.json").write_text(json.dumps({"files": None, "spool_seq": 0, "sessions": {"keys": keys}}))
        analytics = run.Analytics(run.Config.from_env({
            "HLS_ANALYTICS_STATE_DIR": directory, "HLS_ACCESS_LOG": str(path), "BATCH_SIZE": "50000",
            "HLS_LISTENERS_FILE": str(state_dir / "listeners.json"), "GRAPHQL_ENDPOINT": "http://127.0.0.1:9/graphql",
            "CLOUDFLARE_NETWORKS": cloudflare}))
        analytics.read()
        result["run"] = {"counts": analytics.counts, "lines": analytics.lines_read,
                         "ambiguous": analytics.sessions.ambiguous,
                         "batches": [json.loads(gzip.decompress(batch.read_bytes()))
                                     for batch in analytics.spool.paths()],
                         "state": json.loads((state_dir / "state.json").read_text())}
    return hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()


def same_as(ref: str, lines: int) -> int:
    """0 when the code at `ref` and this checkout's make the same of the generated and the hostile log."""
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "files/scripts"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", directory], input=archive, check=True)
        generate(folder / "generated.log", lines)
        hostile(folder / "generated.log", folder / "hostile.log", lines // 3)
        differ = 0
        # The hostile log with Cloudflare's ranges set to the generated addresses: CF-Connecting-IP is read.
        for log, cloudflare in ((folder / "generated.log", ""), (folder / "hostile.log", "10.0.0.0/8")):
            hashes = []
            for scripts in (REPO / "files" / "scripts", folder / "files" / "scripts"):
                hashes.append(subprocess.run(
                    [sys.executable, __file__, "--outcome", str(log), "--cloudflare", cloudflare], check=True,
                    capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(scripts)}).stdout.strip())
            same = hashes[0] == hashes[1]
            differ += not same
            print(f"{log.name}: {'same' if same else 'DIFFERENT'} "
                  f"(this checkout {hashes[0][:16]}, {ref} {hashes[1][:16]})")
    return 1 if differ else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", type=Path, help="the benchmark notes to put the table in (docs/benchmarks.md)")
    parser.add_argument("--same-as", metavar="REF", help="check the outcome against the code at this git ref")
    parser.add_argument("--outcome", type=Path, help=argparse.SUPPRESS)  # (one side of --same-as)
    parser.add_argument("--cloudflare", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.outcome:
        print(outcome(args.outcome, args.cloudflare))
        return 0
    if args.same_as:
        return same_as(args.same_as, args.lines)
    if shutil.which("goaccess") is None:
        print("goaccess is not installed: apt-get install goaccess", file=sys.stderr)
        return 2
    conditions = machine()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "hls-access.log"
        generate(path, args.lines)
        tools: dict[str, Callable[[Path], int]] = {
            "hls-analytics parse": parse_only,
            "hls-analytics run, one process": lambda log: whole_run(log, False),
            "hls-analytics run, two workers": lambda log: whole_run(log, True),
            "GoAccess": goaccess}
        results = measure(tools, path, args.runs)
        section = table(results, args.lines, path.stat().st_size, args.runs, conditions)
    print(section)
    if args.write:
        write_section(args.write, HEADING, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

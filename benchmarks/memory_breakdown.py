"""Benchmark (not a test): where one AAC-copy station's memory goes, per process and per kind of page.

Serves a looping AAC (ADTS) stream at its bit rate from a local HTTP server (after a 64 KiB burst, as Icecast
sends), starts stations against it side by side, waits `--seconds`, then reads /proc/<pid>/smaps of each
station's FFmpeg and of the log filter that redacts its standard error (mawk, before it GNU sed). The row "product"
is hls-launcher itself with the unit's Environment= (it probes, execs FFmpeg and forks the filter, as hls@.service
runs it); every other row is the launcher's own command and input document (build_command, input_document) with one
change from "the launcher's command, no Environment=", so the rows differ by that change only.

What a station costs on a host with many of them is its private dirty pages: file-backed pages are shared between
the stations' processes and vanish from PSS as their number grows. They fall into:
- relocations: the pages of shared libraries that ld.so wrote when it relocated them, one copy per process; split
  by which of FFmpeg's libraries pulls the library in (ldd of each): libavformat/libavcodec/libavutil/
  libswresample ("core"), or only libavfilter/libavdevice/libswscale/libpostproc ("filter/device");
- heap (brk), thread stacks (the mappings that hold a thread's stack pointer), other anonymous memory (mmap'd
  allocations and malloc arenas), the rest (the executables' own data, the main stack).

Usage: python3 benchmarks/memory_breakdown.py [--seconds 20] [--libraries 12] [--only product --only floor ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from radio_hls.stations import launcher

BITRATE = 128_000
BURST_BYTES = 65536
FFMPEG_LIBRARIES = ("libavformat", "libavcodec", "libavutil", "libswresample",
                    "libavfilter", "libavdevice", "libswscale", "libpostproc")
CORE = FFMPEG_LIBRARIES[:4]
# The filter of FFmpeg's standard error before mawk (launcher.REDACT_AWK): the same redaction with GNU sed.
GNU_SED = ("sed", "-u", "-E", "-e", r"/^\[mpegts @ 0x[0-9a-f]+\] frame size not set$/d",
           "-e", r"/^\[segment @ 0x[0-9a-f]+\] NOTE: the option initial_offset is deprecated/d",
           "-e", r"s|(://)[^/@[:space:]]*@|\1***@|g",
           "-e", r"s|(://[^?#[:space:]]*)([?#])[^[:space:]]*|\1\2***|g")
KB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class Variant:
    """One station: through hls-launcher, or the launcher's command with extra options and environment."""

    name: str
    through_launcher: bool = False
    document_options: Mapping[str, object] = field(default_factory=dict)
    global_options: tuple[str, ...] = ()
    output_options: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    log_filter: tuple[str, ...] = launcher.REDACT_AWK
    filter_environment: Mapping[str, str] = field(default_factory=dict)
    # A floor instead of a station: "ffmpeg" (Debian's FFmpeg loaded, waiting for its input document) or "core" (a
    # program that links only CORE, as any frontend of Debian's libavformat would: needs gcc).
    floor: str = ""


UNIT = Path(__file__).resolve().parent.parent / "templates/etc/systemd/system/hls@.service.j2"
# The environment hls@.service gives the station (its Environment= lines).
UNIT_ENVIRONMENT = dict(line.removeprefix("Environment=").split("=", 1)
                        for line in UNIT.read_text(encoding="utf-8").splitlines() if line.startswith("Environment="))
VARIANTS = (
    Variant("product: hls-launcher, the unit's Environment=", through_launcher=True, environment=UNIT_ENVIRONMENT),
    Variant("before: the launcher's command, GNU sed, no Environment=", log_filter=GNU_SED),
    Variant("the launcher's command, no Environment="),
    Variant("probesize 32k, analyzeduration 0", document_options={"probesize": 32768, "analyzeduration": 0}),
    Variant("muxdelay 0", output_options=("-muxdelay", "0")),
    Variant("threads 1", global_options=("-filter_threads", "1"), output_options=("-threads", "1")),
    Variant("MALLOC_ARENA_MAX=1", environment={"MALLOC_ARENA_MAX": "1"}),
    Variant("malloc: no tcache", environment={"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}),
    Variant("malloc: mmap 128k (the unit's)", environment={"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}),
    Variant("malloc: trim 128k", environment={"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}),
    Variant("malloc: top_pad 0", environment={"GLIBC_TUNABLES": "glibc.malloc.top_pad=0"}),
    Variant("malloc: trim 0, mmap 64k", environment={
        "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0:glibc.malloc.mmap_threshold=65536"}),
    Variant("GNU sed, LC_ALL=C", log_filter=GNU_SED, filter_environment={"LC_ALL": "C"}),
    Variant("floor: Debian's FFmpeg loaded, no work yet", floor="ffmpeg", environment=UNIT_ENVIRONMENT),
    Variant("floor: a program linking only " + "/".join(CORE), floor="core"),
)


class Stream(BaseHTTPRequestHandler):
    """The upstream: the AAC file in a loop, a burst first, then at its bit rate."""

    data = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "audio/aac")
        self.end_headers()
        try:
            self.wfile.write(self.data[:BURST_BYTES])
            position, started, sent = BURST_BYTES, time.monotonic(), 0
            while True:
                chunk = self.data[position:position + 4096] or self.data[:4096]
                position = (position + len(chunk)) % len(self.data)
                self.wfile.write(chunk)
                sent += len(chunk)
                time.sleep(max(0.0, started + sent * 8 / BITRATE - time.monotonic()))
        except OSError:
            pass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
        pass


def make_audio(directory: Path) -> bytes:
    path = directory / "tone.aac"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=60",
                    "-ac", "2", "-c:a", "aac", "-b:a", "128k", "-f", "adts", str(path)], check=True)
    return path.read_bytes()


Process = subprocess.Popen[bytes]


def start(variant: Variant, url: str, directory: Path) -> tuple[Process, Process | None]:
    """The station's FFmpeg (for the launcher: the launcher, which becomes FFmpeg) and our log filter, if any."""
    directory.mkdir()
    env_file = directory / "station.env"
    env_file.write_text(f"HLS_STATION_SLUG=memory\nHLS_STREAM_URL={url}\nHLS_CODEC=copy\n", encoding="utf-8")
    environment = {**os.environ, **variant.environment}
    log = (directory / "log").open("wb")
    if variant.floor:
        # Its standard input stays open and empty: FFmpeg waits to read its input document, the program to be ended.
        return subprocess.Popen(floor_command(variant.floor, directory), stdin=subprocess.PIPE, stdout=log,
                                stderr=log, env=environment), None
    if variant.through_launcher:
        return subprocess.Popen([sys.executable, "-m", "radio_hls.stations.launcher", str(env_file),
                                 "--output-dir", str(directory)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=environment), None
    settings = launcher.StationSettings.from_env({"HLS_STATION_SLUG": "memory", "HLS_STREAM_URL": url,
                                                  "HLS_CODEC": "copy"})
    upstream = launcher.Upstream(url)
    run = launcher.begin_run(None, settings, "copy", "aac", time.time())
    command = launcher.build_command(settings, directory, run)
    at = 1 + len(launcher.GLOBAL_OPTIONS)
    command = [*command[:at], *variant.global_options, *command[at:-1], *variant.output_options, command[-1]]
    document = directory / "input.ffconcat"
    document.write_text(launcher.input_document(upstream, {**launcher.upstream_options(settings, upstream),
                                                           **variant.document_options}), encoding="utf-8")
    log_filter = subprocess.Popen(variant.log_filter, stdin=subprocess.PIPE, stdout=log, stderr=log,
                                  env={**os.environ, **variant.filter_environment},
                                  preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
    assert log_filter.stdin is not None
    with document.open("rb") as stdin:
        ffmpeg = subprocess.Popen(command, stdin=stdin, stdout=subprocess.DEVNULL, stderr=log_filter.stdin,
                                  env=environment)
    log_filter.stdin.close()
    return ffmpeg, log_filter


CORE_PROGRAM = "".join(f"unsigned {name.removeprefix('lib')}_version(void);\n" for name in CORE) + (
    "#include <unistd.h>\nint main(void) { volatile unsigned v = "
    + " + ".join(f"{name.removeprefix('lib')}_version()" for name in CORE) + "; (void)v; pause(); return 0; }\n")


def floor_command(floor: str, directory: Path) -> list[str]:
    if floor == "ffmpeg":
        return ["ffmpeg", *launcher.GLOBAL_OPTIONS, "-f", "concat", "-safe", "0", "-i", launcher.STDIN_INPUT,
                "-f", "null", "-"]
    libraries = [line.split("=>")[1].split()[0] for line in subprocess.run(
        ["ldd", "/usr/bin/ffmpeg"], capture_output=True, text=True, check=True).stdout.splitlines()
        if "=>" in line and line.strip().startswith(CORE)]
    subprocess.run(["gcc", "-O2", "-o", str(directory / "core"), "-x", "c", "-", "-x", "none", *libraries],
                   input=CORE_PROGRAM.encode(), check=True)
    return [str(directory / "core")]


def cpu_seconds(pid: int) -> float:
    """User and system time of the process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def smaps(pid: int) -> Iterator[tuple[str, int, int, dict[str, int]]]:
    """(name, start, end, {field: bytes}) of each mapping."""
    header = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$")
    current: tuple[str, int, int, dict[str, int]] | None = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        match = header.match(line)
        if match:
            if current:
                yield current
            current = (match[3], int(match[1], 16), int(match[2], 16), {})
        elif current and line.endswith(" kB"):
            key, value = line.split(":", 1)
            current[3][key] = int(value.split()[0]) * KB
    if current:
        yield current


def stack_pointers(pid: int) -> list[int]:
    """Each thread's stack pointer (/proc/<pid>/task/<tid>/syscall: its next-to-last field)."""
    pointers = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "syscall").read_text().split()
        if len(fields) >= 3:
            pointers.append(int(fields[-2], 16))
    return pointers


def library_groups() -> dict[str, str]:
    """Library file name -> which of FFmpeg's libraries pull it in: 'core' when any of CORE does."""
    needed: dict[str, set[str]] = defaultdict(set)
    linked = subprocess.run(["ldd", "/usr/bin/ffmpeg"], capture_output=True, text=True, check=True).stdout
    for line in linked.splitlines():
        if "=>" in line and any(line.strip().startswith(name) for name in FFMPEG_LIBRARIES):
            path = line.split("=>")[1].split()[0]
            owner = Path(path).name.split(".so")[0]
            needed[Path(path).resolve().name].add(owner)
            for dependency in subprocess.run(["ldd", path], capture_output=True, text=True,
                                             check=True).stdout.splitlines():
                if "=>" in dependency:
                    needed[Path(dependency.split("=>")[1].split()[0]).resolve().name].add(owner)
    return {name: "core" if owners & set(CORE) else "filter/device" for name, owners in needed.items()}


@dataclass
class Breakdown:
    """Private dirty bytes of one process by kind, and its PSS / USS / RSS."""

    kinds: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    libraries: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    threads: int = 0
    pss: int = 0
    uss: int = 0
    rss: int = 0


def breakdown(pid: int, groups: Mapping[str, str]) -> Breakdown:
    result = Breakdown()
    pointers = stack_pointers(pid)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            result.threads = int(line.split()[1])
    previous_end, previous_library = -1, ""
    for name, low, high, values in smaps(pid):
        dirty = values.get("Private_Dirty", 0)
        result.pss += values.get("Pss", 0)
        result.uss += dirty + values.get("Private_Clean", 0)
        result.rss += values.get("Rss", 0)
        base = Path(name).name
        if ".so" in base:
            kind = f"relocations: {groups.get(base, 'ld.so')}"
            result.libraries[base] += dirty
        elif not name and low == previous_end and previous_library:
            # A library's .bss: the anonymous mapping right after its file-backed ones.
            kind = "libraries' .bss"
            result.libraries[previous_library] += dirty
        elif name == "[heap]":
            kind = "heap"
        elif not name and any(low <= pointer < high for pointer in pointers):
            kind = "thread stacks"
        elif not name:
            kind = "other anonymous"
        else:
            kind = "rest (executable, main stack)"
        result.kinds[kind] += dirty
        previous_end, previous_library = high, base if ".so" in base else ""
    return result


KINDS = ("relocations: core", "relocations: filter/device", "relocations: ld.so", "libraries' .bss", "heap",
         "thread stacks",
         "other anonymous", "rest (executable, main stack)")


def megabytes(value: int) -> str:
    return f"{value / MIB:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the stations run before the reading")
    parser.add_argument("--libraries", type=int, default=12, help="how many libraries to list by their relocations")
    parser.add_argument("--only", action="append", help="rows whose name starts with this (repeatable; default: all)")
    args = parser.parse_args()
    variants = [v for v in VARIANTS if not args.only or v.name.startswith(tuple(args.only))]
    groups = library_groups()
    with tempfile.TemporaryDirectory(prefix="memory-breakdown-") as temporary:
        root = Path(temporary)
        Stream.data = make_audio(root)
        server = ThreadingHTTPServer(("127.0.0.1", 0), Stream)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/stream.aac"
        started = [(variant, *start(variant, url, root / str(index))) for index, variant in enumerate(variants)]
        time.sleep(5)
        cpu_from = {ffmpeg.pid: cpu_seconds(ffmpeg.pid) for _, ffmpeg, _ in started}
        time.sleep(args.seconds - 5)
        rows = []
        for index, (variant, ffmpeg, log_filter) in enumerate(started):
            if ffmpeg.poll() is not None:
                raise SystemExit(f"{variant.name}: FFmpeg ended: {(root / str(index) / 'log').read_text()}")
            filter_pid = log_filter.pid if log_filter else next(iter(children(ffmpeg.pid)), None)
            segments = len(list((root / str(index)).glob("*.ts")))
            cpu = (cpu_seconds(ffmpeg.pid) - cpu_from[ffmpeg.pid]) / (args.seconds - 5)
            rows.append((variant, breakdown(ffmpeg.pid, groups),
                         breakdown(filter_pid, groups) if filter_pid else Breakdown(), segments, cpu))
        for variant, ffmpeg, log_filter in started:
            # SIGTERM would not end an FFmpeg blocked reading its input document: its handler only sets a flag.
            if variant.floor:
                ffmpeg.kill()
            ffmpeg.terminate()
            ffmpeg.wait()
            if log_filter:
                log_filter.wait()
        server.shutdown()
        socketserver.BaseServer.server_close(server)
    load = os.getloadavg()
    print(f"{platform.node()}, {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; stations read after {args.seconds:.0f} s\n")
    print("Private_Dirty per process, MiB (what each station pays once many share the file-backed pages)\n")
    print("| Variant | " + " | ".join(KINDS) + " | FFmpeg total | Threads | log filter | station | FFmpeg PSS "
          "| segments | FFmpeg CPU % |")
    print("|---|" + "---|" * (len(KINDS) + 7))
    for variant, ffmpeg_b, filter_b, segments, cpu in rows:
        ffmpeg_total = sum(ffmpeg_b.kinds.values())
        filter_total = sum(filter_b.kinds.values())
        print(f"| {variant.name} | " + " | ".join(megabytes(ffmpeg_b.kinds[kind]) for kind in KINDS)
              + f" | {megabytes(ffmpeg_total)} | {ffmpeg_b.threads} | {megabytes(filter_total)} | "
              f"{megabytes(ffmpeg_total + filter_total)} | {megabytes(ffmpeg_b.pss)} | {segments} | {cpu * 100:.3f} |")
    variant, ffmpeg_b, filter_b, _, _ = rows[0]
    print(f"\nRelocated pages by library ({variant.name}, the top {args.libraries}), MiB\n")
    print("| Library | pulled in by | Private_Dirty (relocations and .bss) |")
    print("|---|---|---|")
    ranked = sorted(ffmpeg_b.libraries.items(), key=lambda item: -item[1])
    for name, dirty in ranked[:args.libraries]:
        print(f"| {name} | {groups.get(name, 'ld.so')} | {megabytes(dirty)} |")
    rest = ranked[args.libraries:]
    print(f"| {len(rest)} others | | {megabytes(sum(dirty for _, dirty in rest))} |")
    print(f"\nThe log filter ({variant.name}), MiB: "
          + ", ".join(f"{kind} {megabytes(filter_b.kinds[kind])}" for kind in KINDS))
    return 0


if __name__ == "__main__":
    sys.exit(main())

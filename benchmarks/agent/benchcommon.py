"""Helpers shared by the benchmark agents that run inside the benchmark host (Python 3 standard library only).

Every figure comes from the measured processes themselves: a unit's cgroup CPU time (systemd's CPUUsageNSec)
and the memory of the processes in its cgroup (/proc/<pid>/smaps_rollup), never from the whole machine.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

CGROUP_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/systemd"))
NGINX = "http://127.0.0.1"
BACKEND = "http://127.0.0.1:8001"
# hls-playlists writes every station's media playlist here; nginx serves it as /hls/<slug>/index.m3u8.
PLAYLISTS = Path("/run/hls/_playlists")
T = TypeVar("T")


def run(*argv: str, check: bool = True) -> str:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} ... failed: {result.stderr.strip()[-500:]}")
    return result.stdout


def systemctl(*args: str, check: bool = True) -> str:
    return run("systemctl", *args, check=check)


def show(units: Sequence[str], *props: str) -> dict[str, dict[str, str]]:
    """systemctl show of many units at once: {unit: {property: value}}."""
    answer: dict[str, dict[str, str]] = {}
    for index in range(0, len(units), 200):
        chunk = units[index : index + 200]
        out = systemctl("show", *(f"--property={p}" for p in ("Id", *props)), *chunk)
        for block in out.strip().split("\n\n"):
            values = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            answer[values["Id"]] = values
    return answer


def station_ffmpeg() -> str:
    """The FFmpeg the stations run: the first in hls@.service's PATH (hls_ffmpeg_build's own build, else Debian's)."""
    environment = systemctl("show", "--property=Environment", "--value", "hls@any.service").split()
    path = next((item.split("=", 1)[1] for item in environment if item.startswith("PATH=")), None)
    return shutil.which("ffmpeg", path=path) or "ffmpeg"


def cgroup_dir(control_group: str, filename: str) -> Path | None:
    """The cgroup directory that holds `filename` (cgroup v2, v1's unified hierarchy, or v1's named one)."""
    for root in CGROUP_ROOTS:
        directory = root / control_group.lstrip("/")
        if (directory / filename).exists():
            return directory
    return None


def cpu_ns(units: Sequence[str]) -> dict[str, int]:
    """Each unit's cgroup CPU time so far, in nanoseconds.

    From the cgroup's cpu.stat (cgroup v2 keeps usage_usec for every cgroup, with or without CPUAccounting;
    on a cgroup v1 hybrid host the unified hierarchy has it), else systemd's CPUUsageNSec.
    """
    values = show(units, "ControlGroup", "CPUUsageNSec")
    result = {}
    for unit in units:
        directory = cgroup_dir(values[unit]["ControlGroup"], "cpu.stat")
        if directory is not None:
            stat = dict(line.split() for line in (directory / "cpu.stat").read_text().splitlines())
            result[unit] = int(stat["usage_usec"]) * 1000
        elif values[unit]["CPUUsageNSec"].isdigit():
            result[unit] = int(values[unit]["CPUUsageNSec"])
        else:
            raise RuntimeError(f"{unit}: no CPU accounting (not running, or no cgroup cpu.stat)")
    return result


def cgroup_pids(control_group: str) -> list[int]:
    directory = cgroup_dir(control_group, "cgroup.procs")
    return [int(pid) for pid in (directory / "cgroup.procs").read_text().split()] if directory else []


@dataclass
class Memory:
    rss_kib: int = 0
    pss_kib: int = 0
    uss_kib: int = 0
    processes: int = 0

    def add(self, other: Memory) -> None:
        self.rss_kib += other.rss_kib
        self.pss_kib += other.pss_kib
        self.uss_kib += other.uss_kib
        self.processes += other.processes


def process_memory(pid: int) -> Memory:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return Memory()
    fields = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields[name.strip()] = int(rest.split()[0])
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return Memory(fields.get("Rss", 0), fields.get("Pss", 0), uss, 1)


def unit_memory(units: Sequence[str]) -> dict[str, Memory]:
    groups = show(units, "ControlGroup")
    result = {}
    for unit in units:
        total = Memory()
        for pid in cgroup_pids(groups[unit]["ControlGroup"]):
            total.add(process_memory(pid))
        result[unit] = total
    return result


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, ""
    except (urllib.error.URLError, OSError):
        return 0, ""


def segments(playlist_text: str) -> list[str]:
    return [line for line in playlist_text.splitlines() if line and not line.startswith("#")]


def playlist_path(slug: str) -> Path:
    return PLAYLISTS / f"{slug}.m3u8"


@dataclass(frozen=True)
class Listed:
    """A segment as a media playlist lists it."""

    name: str
    start: float  # Unix seconds: its EXT-X-PROGRAM-DATE-TIME
    duration: float  # its EXTINF
    discontinuity: bool

    @property
    def end(self) -> float:
        return self.start + self.duration


def listed_segments(playlist_text: str) -> list[Listed]:
    """The segments of a media playlist that carry both EXT-X-PROGRAM-DATE-TIME and EXTINF, in order."""
    listed, start, duration, discontinuity = [], None, None, False
    for line in playlist_text.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            start = datetime.fromisoformat(line.partition(":")[2]).timestamp()
        elif line.startswith("#EXTINF:"):
            duration = float(line.partition(":")[2].split(",")[0])
        elif line == "#EXT-X-DISCONTINUITY":
            discontinuity = True
        elif line and not line.startswith("#"):
            if start is not None and duration is not None:
                listed.append(Listed(line, start, duration, discontinuity))
            start, duration, discontinuity = None, None, False
    return listed


def older_segments(before: float, seconds: float, target: int) -> str:
    """Playlist lines of `seconds` of `target`-second segments of an earlier run that ends at `before`: what makes
    a young playlist as long as a full window (playlist_cost.py), so its cost is the steady state's."""
    count = math.ceil(seconds / target)
    first = before - count * target
    lines = []
    for index in range(count):
        start = datetime.fromtimestamp(first + index * target, UTC).isoformat(timespec="milliseconds")
        slot = math.floor((first + index * target) / target)  # hls-playlists names a segment after its slot
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{start.replace('+00:00', 'Z')}\n#EXTINF:{target:.3f},\n"
                     f"{slot}.ts\n")
    return "".join(lines)


def progress_marker(path: Path) -> str:
    """What shows that an output moves on: a playlist's newest segment, a segment list's last line, or a plain
    file's size."""
    try:
        if path.suffix == ".m3u8":
            listed = segments(path.read_text())
            return listed[-1] if listed else ""
        if path.suffix == ".csv":
            lines = path.read_text().split()
            return lines[-1] if lines else ""
        return str(path.stat().st_size)
    except OSError:
        return ""


def wait_for(probe: Callable[[], T], timeout: float, interval: float = 0.2) -> T | None:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def set_backend(**state: Any) -> None:
    request = urllib.request.Request(f"{BACKEND}/admin/state", data=json.dumps(state).encode(), method="PUT",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def backend_stations(slugs: Iterable[str], enabled: Callable[[str], bool] = lambda slug: True) -> list[dict]:
    """Test-backend records for stations pulled from the demo Icecast2's aliases (slug = mount name)."""
    return [{"id": index, "slug": slug, "title": slug, "stream_url": f"http://127.0.0.1:8000/{slug}",
             "generate_hls_stream": enabled(slug), "disabled": False}
            for index, slug in enumerate(slugs, start=1)]


def rotations(items: Sequence[T], rounds: int) -> Iterator[tuple[int, T]]:
    """(round, item): every item once a round, in an order that rotates from round to round, so that a noisy
    neighbour favours none of them."""
    for round_index in range(rounds):
        shift = round_index % len(items)
        for item in [*items[shift:], *items[:shift]]:
            yield round_index, item


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def emit(result: dict[str, Any]) -> None:
    json.dump(result, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

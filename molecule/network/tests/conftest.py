"""The network scenario's hosts (molecule.yml): two origins and an edge, each reached with `docker exec`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import testinfra

ID = os.environ.get("HLS_MOLECULE_ID", "default")
ORIGINS = [f"hls-net-origin{number}-{ID}" for number in (1, 2)]
EDGE = f"hls-net-edge-{ID}"
SLUGS = ["demo-aac", "demo-mp3"]
SEGMENT_SECONDS = 2  # hls_segment_seconds in molecule.yml
REPO = Path(__file__).resolve().parents[3]
T = TypeVar("T")

# The placement module itself (which origin a station's requests go to first), and what the tests share (tests/).
sys.path[:0] = [str(REPO / "files" / "scripts"), str(REPO / "tests")]


def wait_for(probe: Callable[[], T], timeout: float = 120, what: str = "it") -> T:
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(1)
    return result


def http(host, path: str) -> tuple[int, str]:
    """Status and body of a GET of the host's own nginx."""
    out = host.run(f"curl -sS -w '\\n%{{http_code}}' 'http://127.0.0.1{path}'").stdout
    body, _, status = out.rpartition("\n")
    return int(status or 0), body


@pytest.fixture(scope="session")
def origins() -> list:
    return [testinfra.get_host(f"docker://{name}") for name in ORIGINS]


@pytest.fixture(scope="session")
def edge():
    return testinfra.get_host(f"docker://{EDGE}")


def edge_port() -> int:
    """The edge's nginx on the controller: the port Docker published for it on 127.0.0.1."""
    published = subprocess.run(["docker", "port", EDGE, "80/tcp"], capture_output=True, text=True, check=True)
    return int(published.stdout.split()[0].rpartition(":")[2])


def counted(host) -> dict[str, int]:
    """Listener sessions of the last 60 s per station, as the host's analytics counted them."""
    listeners = host.file("/run/hls-analytics/listeners.json")
    return json.loads(listeners.content_string).get("stations", {}) if listeners.exists else {}


def serving(host, slug: str) -> bool:
    """The host's nginx serves the station: its playlist, and the newest segment that lists."""
    status, text = http(host, f"/hls/{slug}/index.m3u8")
    uris = [line for line in text.splitlines() if line and not line.startswith("#")] if status == 200 else []
    return bool(uris) and host.run(f"curl -sS -o /dev/null -w '%{{http_code}}' "
                                   f"'http://127.0.0.1/hls/{slug}/{uris[-1]}'").stdout == "200"

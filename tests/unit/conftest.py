"""Shared set-up of the host-side unit tests.

- The programs are the package radio_hls, installed (editable) into the dev venv; the fake backend is imported as
  `fake_backend` from molecule/resources/backend, which pytest.ini puts on pytest's pythonpath.
- `backend`: the fake GraphQL backend (fake_backend.py), in a thread on 127.0.0.1 with a free port.
- `url`: that backend's base URL (what test_fake_backend.py uses).
- `held_hang`: the backend's "hang" failure held until the test ends, for tests about a client's timeout.
- `tree`: a host's station files (env files, output directories) and a fake `systemctl show` (StatusTree).
- `metrics_text`: the metrics of such a host with every family (test_metrics.py, test_monitoring.py).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fake_backend
import pytest
import requests
from patience import GENEROUS_TIMEOUT, PATIENCE

from radio_hls.operations import snapshot
from radio_hls.operations.health import evaluate
from radio_hls.operations.metrics import render
from radio_hls.stations.station import Station as EnvStation
from radio_hls.stations.station import station_env


@dataclass(frozen=True)
class FakeBackend:
    """A running fake backend: its base URL and a few admin helpers."""

    url: str
    server: Any

    @property
    def graphql(self) -> str:
        """The GraphQL endpoint, as GRAPHQL_ENDPOINT would name it."""
        return f"{self.url}/graphql"

    def set_state(self, **state: Any) -> dict[str, Any]:
        """PUT /admin/state (shallow merge) and return the new state."""
        response = requests.put(f"{self.url}/admin/state", json=state, timeout=GENEROUS_TIMEOUT)
        response.raise_for_status()
        return response.json()

    def recorded_requests(self) -> list[dict[str, Any]]:
        """GET /admin/requests: the /graphql requests seen so far."""
        response = requests.get(f"{self.url}/admin/requests", timeout=GENEROUS_TIMEOUT)
        response.raise_for_status()
        return response.json()


def serving_fake_backend() -> Iterator[Any]:
    """A fresh in-process fake backend server on a free loopback port, serving until the test ends."""
    server = fake_backend.make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def backend() -> Iterator[FakeBackend]:
    """A fresh in-process fake backend on a free loopback port."""
    for server in serving_fake_backend():
        yield FakeBackend(url=f"http://127.0.0.1:{server.server_port}", server=server)


@pytest.fixture
def url(backend: FakeBackend) -> str:
    """The base URL of a fresh fake backend."""
    return backend.url


class HeldHang:
    """The fake backend's "hang" failure held until the test releases it, instead of for hang_seconds.

    Against a hang of a few seconds, "the client's timeout ended the call" can only be told from "the backend
    answered" by timing the call, which a busy machine defeats. A held request is not answered before the test
    releases it, so while `answered` is 0 a call that came back was ended by the client itself. PATIENCE bounds
    the hold: a client that ignores its timeout gets its answer late and fails the test instead of hanging it.
    """

    def __init__(self) -> None:
        self._released = threading.Event()
        self._lock = threading.Lock()
        self.held = 0  # requests that reached the hang
        self.answered = 0  # of those, the ones let go on to be answered

    def sleep(self, _seconds: float) -> None:
        with self._lock:
            self.held += 1
        self._released.wait(PATIENCE)
        with self._lock:
            self.answered += 1

    def release(self) -> None:
        """Let every held request, and every later one, go on to be answered."""
        self._released.set()


@pytest.fixture
def held_hang(backend: FakeBackend, monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldHang]:
    """Hold the backend's "hang" failure (`fail="hang"`) until the test calls release() or ends."""
    hang = HeldHang()
    # fake_backend sleeps only in its "hang" failure; the rest of its `time` module stays the real one.
    monkeypatch.setattr(fake_backend, "time", SimpleNamespace(**{**vars(time), "sleep": hang.sleep}))
    yield hang
    hang.release()


# --- a host's station files, for snapshot, health, metrics, status and hlsctl --------------------------------

NOW = 1_700_000_000.0
MONOTONIC = 50_000.0


class StatusTree:
    """Real station files in a temporary directory, and a fake `systemctl show` answering from `units`."""

    def __init__(self, root: Path) -> None:
        self.config = snapshot.Config(
            stations_dir=root / "etc" / "stations", output_root=root / "run", log_dir=root / "log",
            listeners_file=root / "analytics" / "listeners.json", sync_status_file=root / "state" / "sync.json",
            max_playlist_age=60.0)
        for directory in (self.config.stations_dir, self.config.output_root, self.config.log_dir):
            directory.mkdir(parents=True)
        self.units: dict[str, dict[str, str]] = {}
        self.calls: list[list[str]] = []

    def station(self, slug: str, *, title: str = "", station_id: int | None = 1, enabled: bool = True,
                active: bool = True, restarts: int = 0, uptime: float = 120.0, playlist_age: float | None = 2.0,
                segments: int = 3, newest_bytes: int = 1000, launch: dict[str, Any] | None = None,
                now_playing: dict[str, Any] | None = None,
                url: str = "http://user:s3cret@upstream.example/live") -> Path:
        """One station as the sync, systemd, the launcher and FFmpeg leave it; returns its output directory."""
        env = station_env(EnvStation(slug, url, title or slug.title(), station_id), {"HLS_CODEC": "auto"})
        (self.config.stations_dir / f"{slug}.env").write_text(env)
        self.units[f"hls@{slug}.service"] = {
            "Id": f"hls@{slug}.service", "UnitFileState": "enabled" if enabled else "disabled",
            "ActiveState": "active" if active else "inactive", "SubState": "running" if active else "dead",
            "NRestarts": str(restarts),
            "ActiveEnterTimestampMonotonic": str(int((MONOTONIC - uptime) * 1e6)) if active else "0"}
        directory = self.config.output_root / slug
        if not active:
            return directory
        directory.mkdir()
        if playlist_age is not None:
            names = [f"1699999000000-{n}.ts" for n in range(100, 100 + segments)]
            lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2", "#EXT-X-MEDIA-SEQUENCE:100"]
            for name in names:
                lines += ["#EXTINF:2.000000,", name]
                (directory / name).write_bytes(b"\x47" * (newest_bytes if name == names[-1] else 500))
            playlist = snapshot.playlist_path(self.config.output_root, slug)
            playlist.parent.mkdir(exist_ok=True)
            playlist.write_text("\n".join(lines) + "\n")
            os.utime(playlist, (NOW - playlist_age, NOW - playlist_age))
        info = {"upstream_codec": "mp3", "mode": "transcode", "started_at": NOW - uptime} if launch is None else launch
        (directory / ".launch.json").write_text(json.dumps(info))
        if now_playing is not None:
            (directory / "now-playing.json").write_text(json.dumps(now_playing))
        return directory

    def settings_file(self, max_playlist_age: float = 60.0) -> Path:
        """This tree's status.env, as the role writes it (every path set)."""
        config = self.config
        path = config.stations_dir.parent / "status.env"
        path.write_text(f"HLS_STATIONS_DIR={config.stations_dir}\nHLS_OUTPUT_ROOT={config.output_root}\n"
                        f"HLS_LOG_DIR={config.log_dir}\nHLS_LISTENERS_FILE={config.listeners_file}\n"
                        f"HLS_SYNC_STATUS_FILE={config.sync_status_file}\n"
                        f"HLS_HEALTH_MAX_PLAYLIST_AGE={max_playlist_age:g}\n")
        return path

    def systemctl(self, args: Sequence[str]) -> str:
        self.calls.append(list(args))
        assert args[0] == "show", args
        return "\n".join("\n".join(f"{k}={v}" for k, v in self.units.get(unit, {"Id": unit}).items()) + "\n"
                         for unit in args[2:])

    def snapshot(self) -> Any:
        return snapshot.collect(self.config, self.systemctl, now=NOW, monotonic_now=MONOTONIC)

    def write_json(self, path: Path, document: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document))


@pytest.fixture
def tree(tmp_path: Path) -> StatusTree:
    return StatusTree(tmp_path)


@pytest.fixture
def metrics_text(tree: StatusTree) -> str:
    """An origin's metrics with every family and sample kind: what metrics.py renders from real files."""
    tree.station("joy", restarts=2, uptime=300, playlist_age=3, segments=4, newest_bytes=4096,
                 now_playing={"title": "A - B", "updated_at": "2023-11-14T22:12:00Z", "changed_at": 1_699_999_920.5})
    tree.station("aac", launch={"upstream_codec": "aac", "mode": "copy", "started_at": 0}, playlist_age=90)
    tree.station("down", active=False, restarts=5)
    tree.station("forced", launch={"upstream_codec": None, "mode": "copy", "started_at": 0})
    tree.write_json(tree.config.listeners_file, {"updated_at": "2023-11-14T22:13:10Z", "stations": {"joy": 42},
                                                 "spool": {"batches": 2, "bytes": 250}, "dropped_events_total": 9,
                                                 "dead_letter": {"batches": 1, "bytes": 120},
                                                 "dead_letter_events_total": 37, "resent_batches_total": 4})
    tree.write_json(tree.config.sync_status_file, {"last_success_at": "2023-11-14T22:13:00+00:00",
                                                   "failures_total": 3})
    tree.units["hls-sync.service"] = {"Id": "hls-sync.service", "LoadState": "loaded", "Result": "success"}
    tree.units["hls-analytics.service"] = {"Id": "hls-analytics.service", "LoadState": "loaded", "Result": "exit-code"}
    taken = tree.snapshot()
    return render(taken, evaluate(taken, 60))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An output root for hls-playlists, with its playlists directory."""
    (tmp_path / "_playlists").mkdir()
    return tmp_path

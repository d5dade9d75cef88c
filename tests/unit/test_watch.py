"""Tests of radio_hls/stations/watch.py: when the fast path starts hls-sync, and when it leaves things alone.

The watcher runs against the fake backend; "starting hls-sync" runs the real sync with a FakeSystemctl, as
hls-sync.service would, so every test sees the files a real sync leaves behind.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from patience import GENEROUS_TIMEOUT
from test_sync import FakeSystemctl, record

from radio_hls.stations import watch as hls_watch
from radio_hls.stations.placement import Placement
from radio_hls.stations.sync import Config, sync
from radio_hls.stations.watch import Watcher, differs

if TYPE_CHECKING:
    from conftest import FakeBackend


@pytest.fixture
def config(backend: FakeBackend, tmp_path: Path) -> Config:
    return Config.from_env({
        "GRAPHQL_ENDPOINT": backend.graphql,
        "GRAPHQL_TOKEN": "s3cret",
        "GRAPHQL_TIMEOUT_SECONDS": str(GENEROUS_TIMEOUT),
        "HLS_STATIONS_FILE": str(tmp_path / "stations.json"),
        "HLS_STATIONS_DIR": str(tmp_path / "stations"),
        "HLS_SEGMENT_SECONDS": "6",
    })


class Syncs:
    """Stands for `systemctl start hls-sync.service`: counts the starts and runs the real sync."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.systemctl = FakeSystemctl()
        self.count = 0
        self.fail: str | None = None

    def __call__(self) -> None:
        self.count += 1
        if self.fail:
            raise RuntimeError(self.fail)
        sync(self.config, self.systemctl)


@pytest.fixture
def syncs(config: Config) -> Syncs:
    return Syncs(config)


@pytest.fixture
def watcher(config: Config, syncs: Syncs) -> Watcher:
    return Watcher(config, syncs)


def test_differs() -> None:
    assert not differs({}, set(), {})
    assert not differs({"a": "x"}, set(), {"a": "x"})
    assert differs({"a": "x"}, set(), {"a": "y"})
    assert differs({"a": "x"}, set(), {})
    assert differs({}, set(), {"a": "x"})
    # a refused record keeps its deployed file: that is not a change
    assert not differs({"a": "x"}, {"b"}, {"a": "x", "b": "old"})


def test_a_new_station_starts_a_sync_once(backend: FakeBackend, watcher: Watcher, syncs: Syncs,
                                          config: Config) -> None:
    backend.set_state(token="s3cret", stations=[record("one")])
    assert watcher.poll() is True
    assert syncs.count == 1
    assert (config.stations_dir / "one.env").exists()
    # in step now: polling again costs one request and nothing else
    assert watcher.poll() is False
    assert watcher.poll() is False
    assert syncs.count == 1
    assert [call[0] for call in syncs.systemctl.calls[-2:]] == ["enable", "start"]


def test_flagging_a_station_on_and_off(backend: FakeBackend, watcher: Watcher, syncs: Syncs, config: Config) -> None:
    backend.set_state(token="s3cret", stations=[record("one"), record("two", generate_hls_stream=False)])
    watcher.poll()
    backend.set_state(stations=[record("one"), record("two")])
    assert watcher.poll() is True
    assert (config.stations_dir / "two.env").exists()
    backend.set_state(stations=[record("one"), record("two", generate_hls_stream=False)])
    assert watcher.poll() is True
    assert not (config.stations_dir / "two.env").exists()
    assert syncs.count == 3


def test_a_changed_setting_starts_a_sync(backend: FakeBackend, watcher: Watcher, syncs: Syncs) -> None:
    backend.set_state(token="s3cret", stations=[record("one")])
    watcher.poll()
    backend.set_state(stations=[record("one", "http://one.example/v2.mp3")])
    assert watcher.poll() is True
    assert syncs.count == 2


def test_a_refused_record_is_not_a_change(backend: FakeBackend, watcher: Watcher, syncs: Syncs) -> None:
    backend.set_state(token="s3cret", stations=[record("one")])
    watcher.poll()
    backend.set_state(stations=[record("one"), record("evil", "file:///etc/passwd")])
    assert watcher.poll() is False
    assert syncs.count == 1


def test_a_station_placed_on_other_origins_is_not_a_change(backend: FakeBackend, config: Config) -> None:
    origins = ("origin-a.example:80", "origin-b.example:80")
    placed = replace(config, placement=Placement(origins, origins[0], 1, {"here": origins[:1], "there": origins[1:]}))
    syncs = Syncs(placed)
    watcher = Watcher(placed, syncs)
    backend.set_state(token="s3cret", stations=[record("here")])
    assert watcher.poll() is True
    backend.set_state(stations=[record("here"), record("there")])
    assert watcher.poll() is False  # what this origin runs is in step: nothing to sync, however often it looks
    assert watcher.poll() is False
    assert syncs.count == 1
    assert [path.name for path in config.stations_dir.iterdir()] == ["here.env"]


def test_a_change_the_sync_does_not_make_is_asked_for_once(backend: FakeBackend, watcher: Watcher, syncs: Syncs,
                                                           config: Config) -> None:
    backend.set_state(token="s3cret", stations=[record("one")])
    watcher.poll()
    backend.set_state(stations=[])  # the sync refuses to stop every station
    assert watcher.poll() is True
    assert watcher.poll() is False
    assert syncs.count == 2
    assert (config.stations_dir / "one.env").exists()
    # a different list is a new request
    backend.set_state(stations=[record("two")])
    assert watcher.poll() is True
    assert syncs.count == 3


def test_a_failed_sync_start_is_logged_and_survived(backend: FakeBackend, watcher: Watcher, syncs: Syncs,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hls-sync-watch")
    backend.set_state(token="s3cret", stations=[record("one")])
    syncs.fail = "systemctl start ... failed: Job for hls-sync.service failed"
    assert watcher.poll() is True
    assert "Job for hls-sync.service failed" in caplog.text


@pytest.mark.parametrize("failure", [{"fail": "500"}, {"fail": "malformed"}, {"fail": "errors"},
                                     {"token": "another"}])
def test_backend_failures_change_nothing_and_are_logged_once(backend: FakeBackend, watcher: Watcher,
                                                             syncs: Syncs, config: Config, failure: dict,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hls-sync-watch")
    backend.set_state(token="s3cret", stations=[record("one")])
    watcher.poll()
    before = (config.stations_dir / "one.env").read_text()
    backend.set_state(**failure)
    for _ in range(3):
        assert watcher.poll() is False
    assert syncs.count == 1
    assert (config.stations_dir / "one.env").read_text() == before
    assert caplog.text.count("cannot check the station list") == 1
    backend.set_state(fail=None, token="s3cret")
    assert watcher.poll() is False
    assert "answers again" in caplog.text


def test_in_step_a_check_is_one_request_and_no_systemctl(backend: FakeBackend, watcher: Watcher,
                                                          syncs: Syncs) -> None:
    backend.set_state(token="s3cret", stations=[record("one")])
    watcher.poll()  # the watcher's request, then the sync's own
    assert len(backend.recorded_requests()) == 2
    syncs.systemctl.reset_calls()
    for _ in range(3):
        watcher.poll()
    assert len(backend.recorded_requests()) == 5
    assert syncs.systemctl.calls == []


def test_main_refuses_a_zero_interval(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        hls_watch.main(["--interval", "0", "--request-file", "/run/hls-sync-watch/request"])
    assert "--interval must be positive" in capsys.readouterr().err


def test_request_sync_writes_and_closes_the_watched_file(tmp_path: Path) -> None:
    request = tmp_path / "request"
    hls_watch.request_sync(request)
    first = request.read_text()
    assert first.endswith("\n") and float(first)  # closed after a write: what PathChanged= reacts to
    hls_watch.request_sync(request)
    assert request.exists()


def test_request_sync_failure_is_a_runtime_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"cannot write .*/gone/request, which hls-sync\.path watches: "
                                           r"No such file or directory"):
        hls_watch.request_sync(tmp_path / "gone" / "request")


def test_main_refuses_a_bad_allow_list_without_a_restart_loop(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("HLS_STATIONS_FILE", "/etc/hls/stations.json")
    monkeypatch.setenv("HLS_STATIONS_DIR", "/etc/hls/stations")
    monkeypatch.setenv("HLS_UPSTREAM_ALLOWED_NETWORKS", "10.0.0.0/33")
    assert hls_watch.main(["--interval", "5", "--request-file", "/run/hls-sync-watch/request"]) == \
        hls_watch.EXIT_BAD_CONFIG == 2
    assert "cannot start: HLS_UPSTREAM_ALLOWED_NETWORKS: '10.0.0.0/33' is not an IP network" in caplog.text


def watch_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "hls-sync-watch" and r.levelno == level]


def test_a_refused_record_is_logged_once_per_change(backend: FakeBackend, watcher: Watcher,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hls-sync-watch")
    backend.set_state(token="s3cret", stations=[record("one"), record("x" * 300)])
    for _ in range(5):
        watcher.poll()
    errors = watch_lines(caplog, logging.ERROR)
    assert len(errors) == 1
    assert errors[0].startswith("skipping station: slug 'xxx") and "(300 characters)" in errors[0]
    assert len(errors[0]) < 200

    backend.set_state(stations=[record("one"), record("x" * 300), record("evil\nERROR forged")])
    for _ in range(3):
        watcher.poll()
    errors = watch_lines(caplog, logging.ERROR)
    assert len(errors) == 2  # only the new one
    assert errors[1] == "skipping station: slug 'evil\\nERROR forged' does not match ^[a-z0-9][a-z0-9-]{0,62}$"

    backend.set_state(stations=[record("one")])
    watcher.poll()
    watcher.poll()
    assert watch_lines(caplog, logging.INFO).count("no station record is refused any more") == 1

    backend.set_state(stations=[record("one"), record("x" * 300)])
    watcher.poll()
    assert len(watch_lines(caplog, logging.ERROR)) == 3  # it came back: said again


def test_a_change_writes_the_request_file(backend: FakeBackend, config: Config, tmp_path: Path) -> None:
    request = tmp_path / "request"
    watcher = Watcher(config, lambda: hls_watch.request_sync(request))
    backend.set_state(token="s3cret", stations=[record("one")])
    assert watcher.poll() is True
    assert request.exists()
    request.unlink()
    assert watcher.poll() is False  # the same change is asked for once (hls-sync.path did not run the sync here)
    assert not request.exists()

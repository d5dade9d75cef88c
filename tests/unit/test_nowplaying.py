"""Tests of icy.py and service.py: ICY parsing on real byte streams from a local server,
now-playing.json, and trigger_metadata_fetch against the fake backend."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from patience import GENEROUS_TIMEOUT, PATIENCE, SHORT_TIMEOUT, wait_for

from radio_hls.nowplaying import service as hls_nowplaying
from radio_hls.nowplaying.icy import (
    WAKE_BYTES,
    IcyError,
    NowPlaying,
    metadata_blocks,
    open_stream,
    parse_fields,
    split_title,
    stream_titles,
)
from radio_hls.nowplaying.service import (
    Config,
    Source,
    Supervisor,
    TriggerLimiter,
    Watcher,
    backend_trigger,
    running_sources,
)
from radio_hls.stations.station import Station, station_env

if TYPE_CHECKING:
    from conftest import FakeBackend, HeldHang

METAINT = 64


def metadata(text: str) -> bytes:
    """One ICY metadata block: a length byte (in 16-byte units) and the NUL-padded text."""
    raw = text.encode("utf-8")
    blocks = -(-len(raw) // 16)
    return bytes([blocks]) + raw.ljust(blocks * 16, b"\0")


def icy_bytes(*titles: str | None) -> bytes:
    """An ICY stream: METAINT bytes of audio, then a block per entry (None: an empty "unchanged" block)."""
    out = b""
    for title in titles:
        out += b"\xff" * METAINT + (b"\0" if title is None else metadata(f"StreamTitle='{title}';StreamUrl='';"))
    return out


# --- parsing -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("block", "fields"), [
    (b"StreamTitle='Artist - Song';StreamUrl='';\0\0\0", {"StreamTitle": "Artist - Song", "StreamUrl": ""}),
    (b"StreamTitle='Guns N' Roses - Sweet Child';", {"StreamTitle": "Guns N' Roses - Sweet Child"}),
    (b"StreamTitle='A;B - C';StreamUrl='http://x/';", {"StreamTitle": "A;B - C", "StreamUrl": "http://x/"}),
    (b"StreamTitle='';", {"StreamTitle": ""}),
    ("StreamTitle='Sigur Rós - Hoppípolla';".encode(), {"StreamTitle": "Sigur Rós - Hoppípolla"}),
    ("StreamTitle='Café - Crème';".encode("latin-1"), {"StreamTitle": "Café - Crème"}),
    (b"garbage without fields", {}),
])
def test_parse_fields(block: bytes, fields: dict[str, str]) -> None:
    assert parse_fields(block) == fields


@pytest.mark.parametrize(("title", "expected"), [
    ("Artist - Song", NowPlaying("Artist - Song", "Artist", "Song")),
    ("  The  Band -  A - B ", NowPlaying("The Band - A - B", "The Band", "A - B")),
    ("Station jingle", NowPlaying("Station jingle", None, None)),
    (" - Song", NowPlaying("- Song", None, None)),
    ("Artist - ", NowPlaying("Artist -", None, None)),
    ("", NowPlaying("", None, None)),
])
def test_split_title(title: str, expected: NowPlaying) -> None:
    assert split_title(title) == expected


def test_metadata_blocks_skip_audio_and_keep_the_empty_blocks() -> None:
    stream = io.BytesIO(icy_bytes("One - A", None, None, "Two - B"))
    blocks = metadata_blocks(stream, METAINT)
    assert parse_fields(next(blocks))["StreamTitle"] == "One - A"
    assert next(blocks) == b"" and next(blocks) == b""
    assert parse_fields(next(blocks))["StreamTitle"] == "Two - B"
    with pytest.raises(EOFError):
        next(blocks)


def test_stream_titles_tick_on_blocks_without_a_title() -> None:
    stream = io.BytesIO(icy_bytes("One - A", None) + b"\xff" * METAINT + metadata("StreamUrl='x';"))
    titles = stream_titles(stream, METAINT)
    assert [next(titles), next(titles), next(titles)] == ["One - A", None, None]


def test_a_truncated_stream_ends_with_eof() -> None:
    with pytest.raises(EOFError):
        list(stream_titles(io.BytesIO(icy_bytes("One - A")[:-5]), METAINT))


# --- a real ICY server on loopback --------------------------------------------------------------------------

class IcyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), IcyHandler)
        self.title = "First Artist - First Song"
        self.send_metaint = True
        self.connections = 0
        self.authorization: str | None = None
        self.redirects: dict[str, str] = {}  # path: Location
        # Streams end only when the test does: a stream of a fixed length would end mid-test on a slow machine.
        self.closing = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/live"


class IcyHandler(BaseHTTPRequestHandler):
    server: IcyServer

    def do_GET(self) -> None:
        self.server.connections += 1
        self.server.authorization = self.headers.get("Authorization")
        if self.path in self.server.redirects:
            self.send_response(302)
            self.send_header("Location", self.server.redirects[self.path])
            self.end_headers()
            return
        wants_metadata = self.headers.get("Icy-MetaData") == "1"
        self.send_response(200)
        self.send_header("Content-Type", "audio/mpeg")
        if wants_metadata and self.server.send_metaint:
            self.send_header("icy-metaint", str(METAINT))
        self.end_headers()
        sent = None
        try:
            while not self.server.closing.is_set():
                if not wants_metadata:
                    self.wfile.write(b"\xff" * METAINT)
                else:  # like Icecast: a title block only when the title changed, empty blocks otherwise
                    title = self.server.title
                    self.wfile.write(icy_bytes(None if title == sent else title))
                    sent = title
                self.wfile.flush()
                time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def serving_icy() -> Iterator[IcyServer]:
    """An ICY server on a port of its own, serving until the test ends."""
    server = IcyServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.closing.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def icy() -> Iterator[IcyServer]:
    yield from serving_icy()


def test_open_stream_asks_for_metadata_and_reads_titles(icy: IcyServer) -> None:
    response, metaint = open_stream(icy.url, timeout=GENEROUS_TIMEOUT)
    with response:
        titles = stream_titles(response, metaint)
        assert metaint == METAINT
        assert next(titles) == "First Artist - First Song"
        icy.title = "Second - Song"
        assert wait_for(lambda: next(titles) == "Second - Song", what="the new title")


def test_open_stream_wakes_the_reader_only_for_full_reads(icy: IcyServer) -> None:
    """A thousand watchers woken for every packet took half a core: the kernel holds the bytes until a full read."""
    response, metaint = open_stream(icy.url, timeout=GENEROUS_TIMEOUT)
    with response:
        with socket.socket(fileno=os.dup(response.fileno())) as connection:
            assert connection.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == WAKE_BYTES
        assert next(stream_titles(response, metaint)) == "First Artist - First Song"


def test_open_stream_sends_credentials_in_a_header_never_in_the_url(icy: IcyServer) -> None:
    # urllib itself takes "user:pa ss@host" for a host with a bad port, and its error would show the password.
    response, _ = open_stream(icy.url.replace("http://", "http://dj%40radio:pa%20ss@"),
                              timeout=GENEROUS_TIMEOUT)
    response.close()
    assert icy.authorization == "Basic " + base64.b64encode(b"dj@radio:pa ss").decode()


@pytest.fixture
def other_origin() -> Iterator[IcyServer]:
    """A second ICY server: another port, so another origin."""
    yield from serving_icy()


def with_credentials(url: str) -> str:
    return url.replace("http://", "http://dj:s3cret@")


DJ_AUTHORIZATION = "Basic " + base64.b64encode(b"dj:s3cret").decode()


def test_credentials_follow_a_redirect_on_their_origin(icy: IcyServer) -> None:
    icy.redirects["/old"] = "/live"
    response, _ = open_stream(with_credentials(icy.url.replace("/live", "/old")), timeout=GENEROUS_TIMEOUT)
    response.close()
    assert icy.connections == 2 and icy.authorization == DJ_AUTHORIZATION


def test_credentials_never_follow_a_redirect_to_another_origin(icy: IcyServer, other_origin: IcyServer) -> None:
    # urllib sent the Authorization header again to wherever a redirect pointed.
    icy.redirects["/moved"] = other_origin.url
    response, metaint = open_stream(with_credentials(icy.url.replace("/live", "/moved")), timeout=GENEROUS_TIMEOUT)
    with response:
        assert next(stream_titles(response, metaint)) == "First Artist - First Song"
    assert icy.authorization == DJ_AUTHORIZATION
    assert other_origin.connections == 1 and other_origin.authorization is None


def test_a_redirect_to_another_scheme_is_refused(icy: IcyServer) -> None:
    icy.redirects["/ftp"] = "ftp://127.0.0.1/x"
    with pytest.raises(OSError, match="scheme other than http or https"):
        open_stream(icy.url.replace("/live", "/ftp"), timeout=GENEROUS_TIMEOUT)


def test_a_watcher_logs_its_upstream_without_secrets(tmp_path: Path, icy: IcyServer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    icy.send_metaint = False
    config = make_config(tmp_path, retry_seconds=0.01)
    url = with_credentials(icy.url) + "?token=t0ken"
    watcher = Watcher(Source("joy", url, 1), config.output_root / "joy", config, None)
    original = watcher.follow_once

    def once() -> None:
        watcher.stop.set()
        original()

    watcher.follow_once = once  # type: ignore[method-assign]
    watcher.run()
    assert "no icy-metaint" in caplog.text
    assert f"{icy.url.replace('http://', 'http://***@')}?***" in caplog.text
    assert "s3cret" not in caplog.text and "t0ken" not in caplog.text


def test_open_stream_without_metadata_is_an_error(icy: IcyServer) -> None:
    icy.send_metaint = False
    with pytest.raises(IcyError, match="no icy-metaint"):
        open_stream(icy.url, timeout=GENEROUS_TIMEOUT)


# --- the watcher --------------------------------------------------------------------------------------------

def make_config(tmp_path: Path, **overrides: Any) -> Config:
    values: dict[str, Any] = {"stations_dir": tmp_path / "stations", "output_root": tmp_path / "run",
                              "trigger_interval": 0.0, "read_timeout": GENEROUS_TIMEOUT, "retry_seconds": 0.1,
                              "scan_seconds": 0.05}
    return Config(**{**values, **overrides})


def write_station(config: Config, slug: str, url: str, station_id: int | None = 7, running: bool = True) -> None:
    config.stations_dir.mkdir(parents=True, exist_ok=True)
    (config.stations_dir / f"{slug}.env").write_text(station_env(Station(slug, url, slug.title(), station_id), {}))
    if running:
        (config.output_root / slug).mkdir(parents=True, exist_ok=True)


def now_playing(config: Config, slug: str) -> dict[str, Any] | None:
    try:
        return json.loads((config.output_root / slug / "now-playing.json").read_text())
    except (OSError, ValueError):
        return None


def test_running_sources_follows_the_output_directories(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    write_station(config, "one", "http://one.example/live", 1)
    write_station(config, "stopped", "http://two.example/live", running=False)
    write_station(config, "no-id", "http://three.example/live", None)
    (config.output_root / "no-env-file").mkdir()
    (config.stations_dir / "bad.env").write_text('HLS_STATION_SLUG="bad"\nHLS_STREAM_URL="file:///etc/passwd"\n')
    (config.output_root / "bad").mkdir()
    assert running_sources(config) == {"one": Source("one", "http://one.example/live", 1),
                                       "no-id": Source("no-id", "http://three.example/live", None)}
    assert running_sources(make_config(tmp_path / "nothing")) == {}


class CountingClock:
    """time.time that counts its readings. A watcher reads its clock once per metadata block it handles, so a test
    waits for blocks to have been handled instead of sleeping for as long as they might take."""

    def __init__(self) -> None:
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        return time.time()


def test_watcher_publishes_each_change_and_triggers_once_per_change(tmp_path: Path, icy: IcyServer) -> None:
    config = make_config(tmp_path)
    write_station(config, "joy", icy.url)
    calls: list[int] = []
    clock = CountingClock()
    watcher = Watcher(Source("joy", icy.url, 7), config.output_root / "joy", config, calls.append, clock=clock)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        first = wait_for(lambda: now_playing(config, "joy"), what="now-playing.json")
        assert first["station"] == "joy"
        assert (first["title"], first["artist"], first["song"]) == (
            "First Artist - First Song", "First Artist", "First Song")
        assert first["updated_at"].endswith("+00:00")
        changed_at = first["changed_at"]
        assert abs(changed_at - time.time()) < PATIENCE and changed_at == round(changed_at, 3)
        wait_for(lambda: calls == [7], what="one trigger")
        icy.title = "Solo title"
        wait_for(lambda: (now_playing(config, "joy") or {}).get("title") == "Solo title", what="the new title")
        wait_for(lambda: len(calls) == 2, what="the second trigger")
        # Blocks without a new title keep coming on the same connection: each is handled and calls nothing.
        connections, handled = icy.connections, clock.readings
        wait_for(lambda: clock.readings >= handled + 20, what="20 more metadata blocks")
        assert calls == [7, 7] and icy.connections == connections
        assert now_playing(config, "joy")["artist"] is None
        assert (config.output_root / "joy" / "now-playing.json").stat().st_mode & 0o777 == 0o644
    finally:
        watcher.stop.set()
        thread.join(PATIENCE)
    assert not thread.is_alive()


def test_a_deferred_call_fires_on_the_ticks_without_another_change(tmp_path: Path, icy: IcyServer) -> None:
    config = make_config(tmp_path, trigger_interval=0.5)
    write_station(config, "joy", icy.url)
    calls: list[float] = []
    # Each call records the time its rate limit decided on (the watcher's own clock).
    watcher = Watcher(Source("joy", icy.url, 7), config.output_root / "joy", config,
                      lambda station_id: calls.append(watcher.limiter.last_call or 0.0), clock=time.monotonic)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(calls) == 1, what="the first call")
        icy.title = "Changed - Quickly"  # within the interval: deferred, then sent on a later "unchanged" block
        wait_for(lambda: (now_playing(config, "joy") or {}).get("title") == "Changed - Quickly", what="the title")
        wait_for(lambda: len(calls) == 2, what="the deferred call")
        assert calls[1] - calls[0] >= 0.5
    finally:
        watcher.stop.set()
        thread.join(PATIENCE)


def test_a_restarted_watcher_does_not_trigger_for_the_published_title(tmp_path: Path, icy: IcyServer) -> None:
    config = make_config(tmp_path)
    write_station(config, "joy", icy.url)
    (config.output_root / "joy" / "now-playing.json").write_text(json.dumps({"title": icy.title}))
    calls: list[int] = []
    watcher = Watcher(Source("joy", icy.url, 7), config.output_root / "joy", config, calls.append)
    for title in (icy.title, icy.title):
        watcher.seen(title)
    assert calls == []
    watcher.seen("Next - Song")
    assert calls == [7]


def test_trigger_limiter_folds_changes_within_the_interval() -> None:
    limiter = TriggerLimiter(interval=30)
    assert not limiter.due(0)
    limiter.changed()
    assert limiter.due(100)
    assert not limiter.due(101)  # nothing changed since
    limiter.changed()
    limiter.changed()
    assert not limiter.due(110)  # too soon: waits
    assert not limiter.due(129.9)
    assert limiter.due(130)  # one call for both changes
    assert not limiter.due(500)


def test_changes_within_the_interval_give_one_deferred_call(tmp_path: Path) -> None:
    config = make_config(tmp_path, trigger_interval=30)
    write_station(config, "joy", "http://joy.example/live")
    clock = iter([0.0, 1.0, 2.0, 3.0, 31.0, 32.0])
    calls: list[int] = []
    watcher = Watcher(Source("joy", "http://joy.example/live", 7), config.output_root / "joy", config, calls.append,
                      clock=lambda: next(clock))
    for title in ("A - 1", "A - 2", "A - 3", "A - 3"):
        watcher.seen(title)
    assert calls == [7]
    watcher.maybe_trigger(31.0)
    assert calls == [7, 7]
    assert now_playing(config, "joy")["title"] == "A - 3"


def test_no_station_id_or_no_backend_means_no_call(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    write_station(config, "joy", "http://joy.example/live", None)
    calls: list[int] = []
    Watcher(Source("joy", "http://joy.example/live", None), config.output_root / "joy", config,
            calls.append).seen("A - 1")
    Watcher(Source("joy", "http://joy.example/live", 3), config.output_root / "joy", config, None).seen("A - 2")
    assert calls == []
    assert now_playing(config, "joy")["title"] == "A - 2"


def test_a_stopped_station_is_not_published(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hls-nowplaying")
    config = make_config(tmp_path)
    calls: list[int] = []
    watcher = Watcher(Source("gone", "http://x.example/", 1), config.output_root / "gone", config, calls.append)
    watcher.seen("A - 1")
    assert not (config.output_root / "gone").exists()
    assert calls == []
    assert "cannot publish" in caplog.text


# --- the backend ---------------------------------------------------------------------------------------------

def fetches(backend: FakeBackend) -> list[dict[str, Any]]:
    return requests.get(f"{backend.url}/admin/state", timeout=GENEROUS_TIMEOUT).json()["metadata_fetches"]


def test_backend_trigger_calls_the_mutation_with_the_token(tmp_path: Path, backend: FakeBackend) -> None:
    backend.set_state(token="s3cret")
    trigger = backend_trigger(make_config(tmp_path, endpoint=backend.graphql, token="s3cret"))
    trigger(42)
    assert [entry["station_id"] for entry in fetches(backend)] == [42]
    assert backend.recorded_requests()[-1]["headers"]["Authorization"] == "Bearer s3cret"


@pytest.mark.parametrize("state", [{"fail": "500"}, {"fail": "malformed"}, {"fail": "errors"}, {"fail": "close"},
                                   {"token": "another"}])
def test_backend_failures_are_logged_never_raised(tmp_path: Path, backend: FakeBackend, state: dict[str, Any],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    backend.set_state(**{"token": "s3cret", **state})
    trigger = backend_trigger(make_config(tmp_path, endpoint=backend.graphql, token="s3cret"))
    trigger(42)
    assert "trigger_metadata_fetch(42) failed" in caplog.text
    assert fetches(backend) == []


def test_a_hanging_backend_costs_at_most_the_timeout(tmp_path: Path, backend: FakeBackend, held_hang: HeldHang,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    backend.set_state(fail="hang")
    trigger = backend_trigger(make_config(tmp_path, endpoint=backend.graphql, read_timeout=SHORT_TIMEOUT))
    trigger(1)
    assert held_hang.answered == 0  # the backend still held the request: the trigger's own timeout ended it
    assert f"trigger_metadata_fetch(1) failed: no answer from {backend.graphql} within {SHORT_TIMEOUT:g} s" \
        in caplog.text


# --- the supervisor ---------------------------------------------------------------------------------------------

def test_supervisor_follows_stations_as_they_start_stop_and_change(tmp_path: Path, icy: IcyServer,
                                                                   backend: FakeBackend) -> None:
    config = make_config(tmp_path, endpoint=backend.graphql)
    write_station(config, "joy", icy.url, station_id=5)
    supervisor = Supervisor(config, backend_trigger(config))
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: now_playing(config, "joy"), what="joy's now-playing.json")
        wait_for(lambda: [entry["station_id"] for entry in fetches(backend)] == [5], what="one fetch for joy")
        # The sync changed the station (a new id): its watcher is replaced.
        write_station(config, "joy", icy.url, station_id=6)
        wait_for(lambda: supervisor.watchers.get("joy") and supervisor.watchers["joy"][0].source.station_id == 6,
                 what="the new watcher")
        # The station stops: systemd removes its directory, the watcher goes.
        for path in (config.output_root / "joy").iterdir():
            path.unlink()
        (config.output_root / "joy").rmdir()
        wait_for(lambda: "joy" not in supervisor.watchers, what="the watcher to stop")
    finally:
        stop.set()
        thread.join(PATIENCE)
    assert not thread.is_alive()
    assert supervisor.watchers == {}


def test_supervisor_only(tmp_path: Path) -> None:
    config = make_config(tmp_path, retry_seconds=30)
    write_station(config, "one", "http://127.0.0.1:9/")
    write_station(config, "two", "http://127.0.0.1:9/")
    assert set(Supervisor(config, None).wanted()) == {"one", "two"}
    supervisor = Supervisor(config, None, only="two")
    assert set(supervisor.wanted()) == {"two"}
    supervisor.reconcile(supervisor.wanted())
    assert set(supervisor.watchers) == {"two"}
    _, thread = supervisor.watchers["two"]
    supervisor.reconcile({})
    assert supervisor.watchers == {}
    thread.join(PATIENCE)  # its failed connection is logged here, not in a later test's caplog
    assert not thread.is_alive()


def test_read_token_from_an_env_document_on_stdin() -> None:
    sync_env = '# managed\nGRAPHQL_TOKEN=other\nHLS_NOW_PLAYING_GRAPHQL_TOKEN= s3cret \nLOG_LEVEL=INFO\n'
    assert hls_nowplaying.read_token(io.StringIO(sync_env)) == "s3cret"
    assert hls_nowplaying.read_token(io.StringIO("GRAPHQL_TOKEN=other\n")) == ""
    assert hls_nowplaying.read_token(io.StringIO("")) == ""


def test_a_watcher_survives_any_error_from_its_upstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    import http.client

    config = make_config(tmp_path, retry_seconds=0.01)
    watcher = Watcher(Source("joy", "http://joy.example/", 1), config.output_root / "joy", config, None)
    attempts: list[int] = []

    def failing() -> None:
        attempts.append(1)
        if len(attempts) == 3:
            watcher.stop.set()
        raise http.client.IncompleteRead(b"")  # not an OSError

    monkeypatch.setattr(watcher, "follow_once", failing)
    watcher.run()
    assert len(attempts) == 3
    # one line per new problem, not one per retry (other tests' threads may log too: count this watcher's)
    assert len([record for record in caplog.records if record.args and record.args[0] == "joy"]) == 1


def test_the_supervisor_replaces_a_dead_watcher(tmp_path: Path) -> None:
    config = make_config(tmp_path, retry_seconds=30)
    write_station(config, "joy", "http://127.0.0.1:9/")
    supervisor = Supervisor(config, None)
    supervisor.reconcile(supervisor.wanted())
    first, thread = supervisor.watchers["joy"]
    first.stop.set()
    thread.join(PATIENCE)
    supervisor.reconcile(supervisor.wanted())
    second, thread = supervisor.watchers["joy"]
    assert second is not first and thread.is_alive()
    supervisor.reconcile({})
    thread.join(PATIENCE)

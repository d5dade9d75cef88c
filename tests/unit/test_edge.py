"""The edge's nginx configuration (templates/etc/nginx/edge.conf.j2, role hls_edge), run for real on this host.

The template is rendered by ansible-playbook with the role's defaults, for an inventory of two origins, which are
tiny HTTP servers in this process (each counts what it is asked and can hold an answer until the test lets it go).
Only what belongs to the process changes for the throwaway nginx (its pid, logs and temporary files in a
temporary directory, loopback only), and a stub_status server is added to see requests waiting inside nginx.
Cache lifetimes are read from the cache files nginx writes (the header's valid_sec minus its date: exactly the
lifetime it chose), not from the clock, so nothing depends on the speed of the machine.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import throwaway_nginx
from patience import GENEROUS_TIMEOUT, PATIENCE, wait_for
from throwaway_nginx import REPO, for_a_throwaway_process, free_ports, inventory, render, stop

from radio_hls.operations import status as hls_status
from radio_hls.operations.snapshot import Config, collect, read_settings

SEGMENT_SECONDS = 2  # the molecule scenarios' target duration: playlists fresh for 1 s
PLAYLIST = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.0,\n7.ts\n#EXTINF:2.0,\n8.ts\n"
MASTER = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\nindex.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=50000\nlow/index.m3u8\n"
TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t", ".json": "application/json"}
CACHE_CONTROL = {".m3u8": "no-cache", ".ts": "public, max-age=31536000, immutable", ".json": "no-cache"}
DAY = 86400


@dataclass
class Origin:
    """An origin's files (path -> bytes), the paths it was asked for (query string included), and answers held
    until their event is set."""

    files: dict[str, bytes] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    held: dict[str, threading.Event] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)  # answered 503
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    def count(self, path: str) -> int:
        with self.lock:
            return sum(asked.partition("?")[0] == path for asked in self.asked)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def serve(origin: Origin) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            with origin.lock:
                origin.asked.append(self.path)
                held = origin.held.get(self.path)
                body = origin.files.get(self.path)
            if held is not None:
                held.wait(PATIENCE)
            if self.path in origin.failing:
                self.send_error(503)
                return
            suffix = Path(self.path).suffix
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", TYPES.get(suffix, "text/plain"))
            self.send_header("Cache-Control", CACHE_CONTROL.get(suffix, "") if body is not None else "no-store")
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    origin.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_nginx(directory: Path, config: str, status_port: int, port: int) -> subprocess.Popen[bytes]:
    """A throwaway nginx running `config` (as for_a_throwaway_process changes it), answering on `port`."""
    def up() -> bool:
        return requests.get(f"http://127.0.0.1:{port}/nothing", timeout=GENEROUS_TIMEOUT).status_code == 404

    return throwaway_nginx.start(directory, for_a_throwaway_process(config, directory, status_port), up)


@dataclass
class Edge:
    port: int
    status_port: int
    cache_dir: Path
    origins: list[Origin]
    session: requests.Session
    directory: Path  # the session log, hls-status's files (status/) and the status page (page/)

    def get(self, path: str) -> requests.Response:
        return self.session.get(f"http://127.0.0.1:{self.port}{path}", timeout=GENEROUS_TIMEOUT)

    def in_progress(self) -> int:
        """Requests nginx is working on (stub_status "Writing", less the status request itself)."""
        text = requests.get(f"http://127.0.0.1:{self.status_port}/", timeout=GENEROUS_TIMEOUT).text
        match = re.search(r"Writing: (\d+)", text)
        assert match, text
        return int(match.group(1)) - 1

    def lifetime(self, path: str) -> int:
        """Seconds the cached answer for `path` is fresh for: the cache file header's valid_sec minus its date
        (ngx_http_file_cache_header_t: version, valid_sec, updating_sec, error_sec, last_modified, date)."""
        key = hashlib.md5(path.encode(), usedforsecurity=False).hexdigest()
        data = (self.cache_dir / key[-1] / key[-3:-1] / key).read_bytes()
        _, valid_sec, _, _, _, date = struct.unpack_from("=Qqqqqq", data)
        return valid_sec - date


@contextmanager
def running_edge(directory: Path) -> Iterator[Edge]:
    """An edge in front of two fresh origins, with the role's defaults but for its port, files and lock timeout."""
    origins = [Origin(), Origin()]
    servers = [serve(origin) for origin in origins]
    port, status_port = free_ports(2)
    cache_dir = directory / "cache"
    for name in ("status", "page"):
        (directory / name).mkdir()
    hosts = inventory(directory, {"hls_origins": {"hosts": {
        f"origin-{index}": {"hls_common_origin_address": origin.address, "hls_segment_seconds": SEGMENT_SECONDS}
        for index, origin in enumerate(origins)}}})
    # hls_edge_segment_seconds as its default has it: the origins' hls_segment_seconds.
    config = render(directory, "hls_edge", "edge.conf.j2", hosts, "localhost", {
        "hls_edge_port": port, "hls_edge_cache_dir": str(cache_dir),
        "hls_common_access_log": str(directory / "hls-access.log"),
        "__hls_edge_cors_file": str(directory / "hls-cors.conf"),
        "__hls_common_status_dir": str(directory / "status"), "hls_nginx_page_dir": str(directory / "page"),
        # Requests waiting for one fetch wait for as long as the test holds it, however slow the machine.
        "hls_edge_cache_lock_timeout": f"{int(PATIENCE)}s"})
    process = start_nginx(directory, config, status_port, port)
    try:
        with requests.Session() as session:
            yield Edge(port, status_port, cache_dir, origins, session, directory)
    finally:
        stop(process)
        for server in servers:
            server.shutdown()


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    with running_edge(tmp_path_factory.mktemp("edge")) as running:
        yield running


@pytest.fixture
def own_edge(tmp_path: Path) -> Iterator[Edge]:
    """An edge of the test's own, for one that leaves the origins marked failed (hls_edge_fail_timeout)."""
    with running_edge(tmp_path) as running:
        yield running


def first_origin(edge: Edge, slug: str) -> Origin:
    """The origin the edge asks first for this station (both hold a probe segment; the one asked answers)."""
    path = f"/hls/{slug}/0.ts"
    for origin in edge.origins:
        origin.files[path] = b"probe"
    assert edge.get(path).status_code == 200
    (asked,) = [origin for origin in edge.origins if origin.count(path)]
    return asked


def put(edge: Edge, path: str, body: bytes) -> None:
    for origin in edge.origins:
        origin.files[path] = body


def test_many_listeners_asking_for_one_segment_make_one_fetch(edge: Edge) -> None:
    path = "/hls/many/1.ts"
    put(edge, path, b"G" * 1000)
    origin = first_origin(edge, "many")
    origin.held[path] = release = threading.Event()
    listeners = 20
    answers: list[requests.Response] = []

    def listen(number: int) -> None:
        response = requests.get(f"http://127.0.0.1:{edge.port}{path}?s=listener-{number}", timeout=PATIENCE)
        answers.append(response)

    threads = [threading.Thread(target=listen, args=(number,)) for number in range(listeners)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: origin.count(path) >= 1 and edge.in_progress() >= listeners, "every listener inside nginx")
    finally:
        release.set()
        for thread in threads:
            thread.join(PATIENCE)
    assert [answer.status_code for answer in answers] == [200] * listeners
    assert {answer.content for answer in answers} == {b"G" * 1000}
    assert sum(origin.count(path) for origin in edge.origins) == 1
    assert all("?" not in asked for origin in edge.origins for asked in origin.asked)  # never the listener's s=


def test_a_playlist_is_fresh_for_half_a_target_duration_and_then_fetched_again(edge: Edge) -> None:
    path = "/hls/fresh/index.m3u8"
    put(edge, path, PLAYLIST.encode())
    assert edge.get(path).text == PLAYLIST
    # Half a target duration less the second nginx adds (it keeps an entry fresh through its valid_sec), at least 1.
    assert edge.lifetime(path) == max(SEGMENT_SECONDS // 2 - 1, 1)
    newer = PLAYLIST.replace("MEDIA-SEQUENCE:7", "MEDIA-SEQUENCE:8")
    put(edge, path, newer.encode())
    wait_for(lambda: edge.get(path).text == newer, "the edge to fetch the playlist again")


def test_the_first_listener_after_a_quiet_while_gets_the_current_playlist(edge: Edge) -> None:
    # Not the one cached when the station last had a listener (minutes or hours old, its segments gone): the
    # request that finds it expired waits for the origin's; only listeners meanwhile get the last one.
    path = "/hls/quiet/index.m3u8"
    put(edge, path, PLAYLIST.encode())
    assert edge.get(path).text == PLAYLIST
    newer = PLAYLIST.replace("MEDIA-SEQUENCE:7", "MEDIA-SEQUENCE:9")
    put(edge, path, newer.encode())
    time.sleep(max(SEGMENT_SECONDS // 2 - 1, 1) + 1.5)  # expired, and nobody asked meanwhile
    assert edge.get(path).text == newer


@pytest.mark.parametrize(("segment_seconds", "fresh"), [(2, 1), (4, 1), (6, 2), (10, 4)])
def test_playlists_are_fresh_for_at_most_half_a_target_duration(tmp_path: Path, segment_seconds: int,
                                                                 fresh: int) -> None:
    # nginx keeps an entry fresh through the second of its valid_sec: up to one second past proxy_cache_valid.
    hosts = inventory(tmp_path, {"hls_origins": {"hosts": {"origin-0": {"hls_segment_seconds": segment_seconds}}}})
    config = render(tmp_path, "hls_edge", "edge.conf.j2", hosts, "localhost", {})
    lifetimes = {int(seconds) for seconds in re.findall(r"proxy_cache_valid 200 (\d+)s;", config)}
    assert lifetimes == {fresh}, config  # the playlists' and now-playing's (segments: days)


def test_a_segment_is_kept_for_good(edge: Edge) -> None:
    path = "/hls/kept/1.ts"
    put(edge, path, b"S" * 100)
    assert edge.get(path).content == b"S" * 100
    assert edge.lifetime(path) == 365 * DAY
    for origin in edge.origins:
        del origin.files[path]
    answer = edge.get(path)
    assert answer.content == b"S" * 100  # from the cache: the origins no longer have it
    assert answer.headers["Cache-Control"] == CACHE_CONTROL[".ts"]  # the origin's, once
    assert sum(origin.count(path) for origin in edge.origins) == 1


def test_an_error_is_cached_for_a_second_at_most(edge: Edge) -> None:
    path = "/hls/missing/1.ts"
    answer = edge.get(path)
    assert answer.status_code == 404
    assert answer.headers["Cache-Control"] == "no-store"
    assert edge.lifetime(path) <= 1


def test_a_404_from_the_stations_first_origin_goes_to_its_second(edge: Edge) -> None:
    first = first_origin(edge, "moved")
    (second,) = [origin for origin in edge.origins if origin is not first]
    path = "/hls/moved/2.ts"
    second.files[path] = b"second"
    answer = edge.get(path)
    assert (answer.status_code, answer.content) == (200, b"second")
    assert (first.count(path), second.count(path)) == (1, 1)


def test_the_listeners_session_goes_onto_every_line_of_the_playlists(edge: Edge) -> None:
    put(edge, "/hls/session/index.m3u8", PLAYLIST.encode())
    put(edge, "/hls/session/master.m3u8", MASTER.encode())
    media = edge.get("/hls/session/index.m3u8?s=abc-1").text
    assert [line for line in media.splitlines() if not line.startswith("#")] == ["7.ts?s=abc-1", "8.ts?s=abc-1"]
    master = edge.get("/hls/session/master.m3u8?s=abc-1").text
    assert [line for line in master.splitlines() if not line.startswith("#")] == \
        ["index.m3u8?s=abc-1", "low/index.m3u8?s=abc-1"]
    # The cached copy is the origin's, and a listener without a session gets it as it is.
    assert edge.get("/hls/session/index.m3u8").text == PLAYLIST
    answer = edge.get("/hls/session/index.m3u8?s=abc-1")
    assert answer.headers["Access-Control-Allow-Origin"] == "*"  # the edge's CORS, the origin's hidden: once
    assert answer.headers["Cache-Control"] == "no-cache"


def test_when_every_origin_fails_listeners_keep_the_last_playlist(own_edge: Edge) -> None:
    path = "/hls/stale/index.m3u8"
    put(own_edge, path, PLAYLIST.encode())
    assert own_edge.get(path).text == PLAYLIST
    for origin in own_edge.origins:
        origin.failing.add(path)

    def stale_after_both_failed() -> bool:
        answer = own_edge.get(path)
        assert (answer.status_code, answer.text) == (200, PLAYLIST)
        return sum(origin.count(path) for origin in own_edge.origins) >= 3  # the first fetch, then a 503 from each

    wait_for(stale_after_both_failed, "the edge to ask both origins again")
    answer = own_edge.get(path)
    assert (answer.status_code, answer.text) == (200, PLAYLIST)


def test_an_edge_serves_its_listeners_counts_health_and_status_page(edge: Edge) -> None:
    """What hls-status writes in edge mode (status.env with HLS_EDGE=true, as role hls writes it on an edge), served
    by the edge's nginx at the origin's paths, outside the session log."""
    (edge.directory / "listeners.json").write_text(json.dumps({"updated_at": "2026-01-01T00:00:00Z",
                                                                "stations": {"joy": 2}}))
    settings = edge.directory / "status.env"
    settings.write_text("".join(f"{name}={edge.directory / name.lower()}\n" for name in (
        "HLS_STATIONS_DIR", "HLS_OUTPUT_ROOT", "HLS_LOG_DIR", "HLS_SYNC_STATUS_FILE")) +
        f"HLS_LISTENERS_FILE={edge.directory / 'listeners.json'}\nHLS_EDGE=true\n")
    snapshot = collect(Config.from_env(read_settings(settings)), systemctl=lambda args: "")
    hls_status.publish(snapshot, 60, edge.directory / "status")
    (edge.directory / "page" / "index.html").write_text("<!doctype html>the page")
    (edge.directory / "page" / "status.js").write_text("// the page's script")

    health = edge.get("/health")
    assert (health.status_code, health.json()["status"]) == (200, "ok")
    metrics = edge.get("/metrics")
    assert metrics.status_code == 200
    assert 'hls_station_listeners{station="joy"} 2' in metrics.text.splitlines()
    assert "hls_station_up" not in metrics.text
    page = edge.get("/status.json").json()
    assert (page["edge"], [station["slug"] for station in page["stations"]]) == (True, ["joy"])
    index = edge.get("/")
    assert (index.status_code, index.text) == (200, "<!doctype html>the page")
    assert "default-src 'none'" in index.headers["Content-Security-Policy"]
    assert edge.get("/status.js").status_code == 200
    # The operators' requests stay out of the listeners' session log.
    log = edge.directory / "hls-access.log"
    edge.get("/hls/joy/index.m3u8?s=after-the-status-requests")
    wait_for(lambda: log.exists() and "after-the-status-requests" in log.read_text(), "the listener's line in the log")
    assert not re.search(r"\t/(health|metrics|status\.json|status\.js)?\t", log.read_text())


def ask_from(source: str, port: int, path: str, forwarded_for: str) -> int:
    """GET `path` from the local address `source` (any of 127.0.0.0/8), with this X-Forwarded-For."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=GENEROUS_TIMEOUT, source_address=(source, 0))
    try:
        connection.request("GET", path, headers={"X-Forwarded-For": forwarded_for})
        return connection.getresponse().status
    finally:
        connection.close()


def test_an_origin_does_not_count_an_edges_fetches_even_when_it_trusts_the_edge_as_a_proxy(
        tmp_path: Path) -> None:
    port, status_port = free_ports(2)
    hosts = inventory(tmp_path, {"hls_edges": {"hosts": {"edge-1": {"hls_edge_address": "127.0.0.2"}, "edge-2": {}}}})
    config = render(tmp_path, "hls_nginx", "nginx.conf.j2", hosts, "localhost", {
        "hls_nginx_port": port, "hls_nginx_trusted_proxies": ["127.0.0.0/8"],
        "hls_common_access_log": str(tmp_path / "hls-access.log"),
        "__hls_nginx_cors_file": str(tmp_path / "hls-cors.conf")})
    process = start_nginx(tmp_path, config, status_port, port)
    try:
        # The edge first: once the listener's line is in the log, the edge's would be there before it.
        statuses = [ask_from("127.0.0.2", port, "/hls/demo/1.ts", "192.0.2.1") for _ in range(200)]
        assert ask_from("127.0.0.1", port, "/hls/demo/1.ts?s=listener", "192.0.2.2") == 404
        log = tmp_path / "hls-access.log"
        wait_for(lambda: log.exists() and "192.0.2.2" in log.read_text(), "the listener's request in the log")
    finally:
        stop(process)
    assert statuses == [404] * 200  # as many as it asks: no per-client limit (50 r/s, burst 100) for an edge
    assert "192.0.2.1" not in log.read_text()


def test_the_example_inventorys_edges_get_a_configuration_nginx_accepts(tmp_path: Path) -> None:
    config = render(tmp_path, "hls_edge", "edge.conf.j2", REPO / "inventories/example", "edge-1.example.org", {
        "hls_edge_cache_dir": str(tmp_path / "cache"), "hls_common_access_log": str(tmp_path / "hls-access.log"),
        "__hls_edge_cors_file": str(tmp_path / "hls-cors.conf")})
    servers = re.findall(r"^ *server (\S+) max_fails=1 fail_timeout=10s;$", config, flags=re.MULTILINE)
    assert servers == ["10.0.0.11:80", "10.0.0.12:80", "10.0.0.13:80"]  # hls_origins, in inventory order
    assert "set_real_ip_from 173.245.48.0/20;" in config  # the inventory's group_vars win over the defaults
    throwaway_nginx.check(tmp_path, for_a_throwaway_process(config, tmp_path, free_ports(1)[0]))

"""Station URLs are outside input: their credentials reach only their origin, no command line or log shows them or
their tokens, and no unit that opens them can connect to the host itself or an internal network unless
hls_upstream_allowed_networks says so (molecule allows 127.0.0.1 only)."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shlex
from collections.abc import Iterator

import pytest
from conftest import STATIONS, main_pid, now, run_sync, station_ready, wait_for

PASSWORD = "canary-upstream-password-5b2e"
TOKEN = "canary-query-token"
AUTHORIZATION = "Basic " + base64.b64encode(f"dj:{PASSWORD}".encode()).decode()
REQUESTS_LOG = "/run/hls-test-upstreams.log"
UNIT = "hls-test-upstreams"
HOME, OTHER, DENIED = "127.0.0.1:8021", "127.0.0.1:8022", "127.0.0.2:8023"

# Three origins, run as a transient unit (no firewall of its own): HOME, where the station URLs point, redirects;
# OTHER is another origin (another port); DENIED listens on 127.0.0.2, which molecule does not allow. Each records
# every connection and request; /live relays the demo Icecast's AAC stream.
UPSTREAMS = r"""
import http.server, json, threading, urllib.request
HOME, OTHER, DENIED = ("127.0.0.1", 8021), ("127.0.0.1", 8022), ("127.0.0.2", 8023)
REDIRECTS = {"/to-other": "http://127.0.0.1:8022/live", "/to-self": "/live", "/to-denied": "http://127.0.0.2:8023/live"}
lock = threading.Lock()

def record(**entry):
    with lock, open("/run/hls-test-upstreams.log", "a") as log:
        log.write(json.dumps(entry) + "\n")

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        record(at="%s:%d" % self.server.server_address, path=self.path, agent=self.headers.get("User-Agent"),
               authorization=self.headers.get("Authorization"), icy=self.headers.get("Icy-MetaData"))
        path = self.path.split("?")[0]
        if path in REDIRECTS:
            self.send_response(302)
            self.send_header("Location", REDIRECTS[path])
            self.end_headers()
        elif path == "/live":
            source = urllib.request.urlopen("http://127.0.0.1:8000/demo-aac", timeout=30)
            self.send_response(200)
            self.send_header("Content-Type", "audio/aac")
            self.end_headers()
            try:
                while chunk := source.read(4096):
                    self.wfile.write(chunk)
            except OSError:
                pass
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def process_request(self, request, client):
        record(at="%s:%d" % self.server_address, connection_from=client[0])
        super().process_request(request, client)

servers = [Server(address, Handler) for address in (DENIED, OTHER, HOME)]  # HOME answers once all listen
for server in servers:
    threading.Thread(target=server.serve_forever, daemon=True).start()
threading.Event().wait()
"""


def requests(host) -> list[dict]:
    return [json.loads(line) for line in host.file(REQUESTS_LOG).content_string.splitlines() if line]


@pytest.fixture
def upstreams(host) -> Iterator[None]:
    host.run(f"systemctl stop {UNIT}; rm -f {REQUESTS_LOG}")
    host.check_output(f"systemd-run --unit {UNIT} python3 -c {shlex.quote(UPSTREAMS)}")
    try:
        wait_for(lambda: host.run(f"curl -s -o /dev/null http://{HOME}/ready").rc == 0, what="the test upstreams")
        yield
    finally:
        host.run(f"systemctl stop {UNIT}; rm -f {REQUESTS_LOG}")


@contextlib.contextmanager
def stations(host, backend, **urls: str) -> Iterator[None]:
    """While inside, the backend lists these stations (slug: URL) next to the demo ones, synced."""
    listed = [{"id": 60 + number, "slug": slug, "title": slug, "stream_url": url, "generate_hls_stream": True,
               "disabled": False} for number, (slug, url) in enumerate(urls.items())]
    backend(stations=[*STATIONS, *listed])
    assert run_sync(host).rc == 0
    yield  # the backend fixture puts the demo stations back and syncs


def station_log(host, slug: str, since: int = 0) -> str:
    """The station's log, from byte `since` on (a log outlives its station: an earlier run's lines stay)."""
    return host.run(f"tail -c +{since + 1} /var/log/hls/{slug}.log").stdout


def log_sizes(host, *slugs: str) -> dict[str, int]:
    return {slug: int(host.run(f"stat -c %s /var/log/hls/{slug}.log").stdout or 0) for slug in slugs}


def what_local_users_see(host, slug: str) -> dict[str, str]:
    """Where any local user can read what a station runs with."""
    pid = main_pid(host, slug)
    return {
        "systemctl status": host.run(f"systemctl status --no-pager --lines 0 hls@{slug}").stdout,
        "FFmpeg's command line": host.run(f"tr '\\0' ' ' < /proc/{pid}/cmdline").stdout if pid else "",
        "ps": host.check_output("ps -eo args"),
    }


@pytest.mark.parametrize(("slug", "path", "final", "credentials_at_the_end"), [
    pytest.param("trust-same-origin", "/to-self", HOME, True, id="same-origin"),
    pytest.param("trust-other-origin", "/to-other", OTHER, False, id="other-origin"),
])
def test_credentials_reach_only_their_origin_across_a_redirect(host, backend, upstreams, slug, path, final,
                                                               credentials_at_the_end):
    since = log_sizes(host, slug)[slug]
    with stations(host, backend, **{slug: f"http://dj:{PASSWORD}@{HOME}{path}?token={TOKEN}"}):

        def at_the_end() -> list[dict]:
            return [entry for entry in requests(host) if entry.get("at") == final and entry.get("path") == "/live"
                    and entry["agent"] == "radio-hls/1.0"]

        # The launcher's own look, ffprobe and FFmpeg (now playing's ICY reader too, sooner or later).
        wait_for(lambda: len(at_the_end()) >= 3, what=f"{slug}'s launcher, ffprobe and FFmpeg at the final URL")
        station_ready(host, slug, min_segments=1)
        at_home = [entry for entry in requests(host)
                   if entry.get("at") == HOME and entry.get("path", "").startswith(path)]
        assert at_home and all(entry["authorization"] == AUTHORIZATION for entry in at_home), at_home
        expected = AUTHORIZATION if credentials_at_the_end else None
        assert all(entry["authorization"] == expected for entry in at_the_end()), at_the_end()
        for place, text in what_local_users_see(host, slug).items():
            assert PASSWORD not in text and TOKEN not in text and AUTHORIZATION.split()[1] not in text, place
            assert HOME not in text, f"the station URL shows in {place}"
        assert PASSWORD not in station_log(host, slug, since) and TOKEN not in station_log(host, slug, since)


def stuck_in(host, address: str) -> set[str]:
    """The units with a connection to `address` that waits in SYN-SENT: their firewall drops its packets (ss names
    each socket's cgroup: the unit's, whichever of its processes opened it)."""
    out = host.check_output(f"ss -Htn --cgroup state syn-sent dst {address}")
    return set(re.findall(r"cgroup:\S*/([^/\s]+\.service)", out))


def test_a_redirect_to_a_refused_address_cannot_connect(host, backend, upstreams):
    # The address itself answers anyone outside the units: what keeps the units out is their firewall.
    reached = host.run(f"curl -s -m 2 -o /dev/null -w '%{{http_code}}' -A control http://{DENIED}/live")
    assert reached.stdout == "200", reached
    before = [entry for entry in requests(host) if entry["at"] == DENIED]
    assert before, "the control request was not recorded"
    slug, started = "trust-denied", now(host)
    with stations(host, backend, **{slug: f"http://{HOME}/to-denied"}):
        # The sync accepts the URL (127.0.0.1 is allowed); its redirect leads to 127.0.0.2. ffprobe (the URL has no
        # credentials: FFmpeg follows redirects itself) sends its SYN, which never gets out of the unit.
        # (The log says "cannot probe ... Connection timed out" only after every retry, which takes longer than
        # molecule's hls_stall_seconds: the watchdog restarts the station first.)
        wait_for(lambda: f"hls@{slug}.service" in stuck_in(host, DENIED), what=f"hls@{slug} trying to reach {DENIED}")
        # hls-nowplaying follows the same URL, with the same firewall.
        wait_for(lambda: "hls-nowplaying.service" in stuck_in(host, DENIED), what=f"now playing trying {DENIED}")
        journal = f"journalctl -u hls-nowplaying --no-pager -o cat --since {shlex.quote(started)}"
        noted = wait_for(lambda: [line for line in host.check_output(journal).splitlines()
                                  if line.startswith(f"WARNING {slug}: http://{HOME}/to-denied: ")],
                         what="now playing's failed connection")
        assert "timed out" in noted[0], noted
        # Nothing from either unit ever reached the refused address: not one more connection than the control's.
        assert [entry for entry in requests(host) if entry["at"] == DENIED] == before
        # systemd 252 warns once when it cannot (no unified cgroup hierarchy): then the units would connect anywhere.
        assert host.run("journalctl -b --no-pager -o cat | grep -qE 'configures an IP firewall|BPF firewalling not "
                        "supported'").rc == 1


def test_tokens_in_station_urls_never_reach_logs_or_command_lines(host, backend):
    playing, missing = "trust-token", "trust-token-gone"
    urls = {playing: f"http://127.0.0.1:8000/demo-aac?token={TOKEN}", missing: f"http://127.0.0.1:8000/gone?token={TOKEN}"}
    since, started = log_sizes(host, playing, missing), now(host)
    with stations(host, backend, **urls):
        station_ready(host, playing, min_segments=1)
        wait_for(lambda: "cannot probe http://127.0.0.1:8000/gone?***: Server returned 404 Not Found"
                 in station_log(host, missing, since[missing]), what=f"{missing}'s failed probe")
        # A source restart ends the listeners' streams: FFmpeg stops on a read error and starts again.
        old_pid = main_pid(host, playing)
        host.check_output("systemctl restart hls-demo-feed@demo-aac")
        wait_for(lambda: main_pid(host, playing) not in (0, old_pid), what=f"{playing} to restart")
        station_ready(host, playing, min_segments=1)
        wait_for(lambda: f"{missing}: http://127.0.0.1:8000/gone?***" in host.check_output(
            f"journalctl -u hls-nowplaying --no-pager -o cat --since {shlex.quote(started)}"),
                 what="now playing's refused connection")
        places = {
            "station logs": station_log(host, playing, since[playing]) + station_log(host, missing, since[missing]),
            "the journal of the stations and now playing": host.check_output(
                f"journalctl -u 'hls@*' -u hls-nowplaying --no-pager -o cat --since {shlex.quote(started)}"),
            **what_local_users_see(host, playing),
        }
        for place, text in places.items():
            assert TOKEN not in text, f"the token shows in {place}"


def test_the_units_that_open_station_urls_have_the_firewall(host):
    for unit in ("hls@demo-aac.service", "hls-nowplaying.service"):
        deny = host.check_output(f"systemctl show -p IPAddressDeny --value {unit}").split()
        allow = host.check_output(f"systemctl show -p IPAddressAllow --value {unit}").split()
        for network in ("127.0.0.0/8", "::1/128", "169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                        "100.64.0.0/10", "fc00::/7", "fe80::/10"):
            assert network in deny, (unit, network, deny)
        assert "127.0.0.1/32" in allow, (unit, allow)

"""Listener analytics that no input can stop or misattribute (issue 10), on the real host: nginx's own escapes of
control characters, its realip result, the playlist it serves, the analytics unit, the test backend, /metrics."""

from __future__ import annotations

import json
import shlex
import uuid
from collections import Counter

import pytest
from conftest import BACKEND, NGINX, station_ready, wait_for
from test_analytics import LISTENERS, SLUG, SPOOL, Listener, run_analytics

DEAD_LETTERS = "/var/lib/hls-analytics/dead-letter"
STATE = "/var/lib/hls-analytics/state.json"


@pytest.fixture(scope="module", autouse=True)
def station(host):
    station_ready(host, SLUG)


@pytest.fixture
def no_timer(host):
    """The analytics run only when the test starts them (the timer's own runs would race the test's steps)."""
    host.check_output("systemctl stop hls-analytics.timer")
    wait_for(lambda: host.check_output("systemctl show -p ActiveState --value hls-analytics.service")
             not in ("activating", "deactivating"), what="the running analytics to end")
    yield
    host.check_output("systemctl start hls-analytics.timer")


def all_events(host) -> list[dict]:
    return json.loads(host.check_output(f"curl -fsS {BACKEND}/admin/events"))


def events_of(host, session: str) -> list[dict]:
    return [event for event in all_events(host) if event["anonymous_session_id"] == session]


def delivered(host, session: str, requests: int) -> list[dict]:
    """The events of `session` once the backend counts `requests` requests for it (each probe runs the
    analytics once more)."""
    return wait_for(lambda: run_analytics(host) and (events := events_of(host, session))
                    and sum(event["request_count"] for event in events) >= requests and events,
                    interval=1, what=f"the backend to count {requests} requests of {session}")


def metric(host, name: str) -> float | None:
    """One unlabelled sample of /metrics (hls-status refreshes it every hls_status_interval)."""
    for line in host.check_output(f"curl -fsS {NGINX}/metrics").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def listeners_file(host) -> dict:
    return json.loads(host.file(LISTENERS).content_string)


def journal(host) -> str:
    return host.check_output("journalctl -u hls-analytics.service --no-pager -o cat")


def test_control_characters_never_reach_the_backend(host, backend):
    """`?ref=%00` made the backend refuse the batch (PostgreSQL refuses NUL) and stopped delivery for good. nginx
    writes C0 as \\u00NN and DEL and C1 raw; the analytics remove all of them."""
    session = str(uuid.uuid4())
    agent = f"trust-{session[:8]}"
    dead_before = host.run(f"ls {DEAD_LETTERS}").stdout.split()
    # dash's printf knows octal escapes: SOH, DEL, U+0085 (C2 85) in the agent, ESC in the referer.
    headers = f"/tmp/{agent}.headers"
    host.check_output(f"printf 'User-Agent: {agent} a\\001b\\177c\\302\\205d\\nReferer: http://x/\\033[31m\\n' "
                      f"> {headers}")
    url = f"{NGINX}/hls/{SLUG}/index.m3u8?s={session}&ref=radio%00%01x%7F%C2%85%0A"
    assert host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' -H @{headers} {shlex.quote(url)}") == "200"
    plain = f"{NGINX}/hls/{SLUG}/index.m3u8?s={session}&ref=%00"
    assert host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' -H @{headers} {shlex.quote(plain)}") == "200"
    events = delivered(host, session, 2)
    assert {event["user_agent"] for event in events} == {f"{agent} abcd"}
    # The last request of the window gives the referer: ref=%00 is empty, so the Referer header without ESC.
    assert {event["referer"] for event in events} <= {"radiox", "http://x/[31m"}
    assert run_analytics(host).rc == 0
    assert host.run(f"ls {DEAD_LETTERS}").stdout.split() == dead_before


PLANT = """
import gzip, json, os, sys
state = json.load(open(sys.argv[1]))
seq = state["spool_seq"]  # a sequence number already committed: what an older version left in the spool
events = [{"anonymous_session_id": sys.argv[3], "station_slug": "demo-aac", "ip_address": "127.0.0.1",
           "user_agent": "older version", "timestamp": "2026-01-01T00:00:00.000+00:00",
           "event_type": "playlist_request", "bytes_transferred": 1, "request_duration": 0.0, "status_code": 200,
           "request_count": 1, "referer": "radio\\u0000" + str(n)} for n in range(3)]
path = os.path.join(sys.argv[2], "%016d.json.gz" % seq)
with open(path, "wb") as handle:
    handle.write(gzip.compress(json.dumps({"seq": seq, "events": events, "cursor": None}).encode()))
print(os.path.basename(path))
"""


def test_a_batch_refused_for_good_goes_to_the_dead_letters_and_the_rest_flows(host, backend, no_timer):
    """A batch with NUL, as the version before the fix spooled it for `?ref=%00`: the backend refuses it on every
    attempt. It leaves the spool for the dead letters with one journal line, /metrics counts it, and a listener's
    requests behind it arrive."""
    assert run_analytics(host).rc == 0
    assert host.run(f"ls {SPOOL}").stdout.split() == []
    before = listeners_file(host)
    poisoned = f"poisoned-{uuid.uuid4()}"
    name = host.check_output(f"runuser -u hls-analytics -- python3 -c {shlex.quote(PLANT)} {STATE} {SPOOL} "
                             f"{poisoned}")

    listener = Listener(host)
    listener.play()
    listener.delivered()  # before the fix: the refused batch went first on every run, and this never arrived
    assert events_of(host, poisoned) == []
    assert host.run(f"ls {DEAD_LETTERS}").stdout.split()[-1:] == [name]
    assert host.run(f"ls {SPOOL}").stdout.split() == []
    lines = [line for line in journal(host).splitlines() if name in line]  # a name is never used twice
    assert len(lines) == 1, lines
    assert "refused spool batch" in lines[0] and "for good" in lines[0] and "NUL (0x00)" in lines[0]

    after = listeners_file(host)
    assert after["dead_letter_events_total"] == before["dead_letter_events_total"] + 3
    wait_for(lambda: metric(host, "hls_analytics_dead_letter_events_total") == after["dead_letter_events_total"],
             what="/metrics to count the refused events")
    assert metric(host, "hls_analytics_dead_letter_batches") == after["dead_letter"]["batches"] >= 1


def test_a_backend_that_refuses_everything_keeps_the_batches(host, backend, no_timer):
    """A wrong key or missing rights refuse every batch, an empty one too: not the batch's fault, so nothing goes
    to the dead letters and everything arrives once the key is right."""
    dead_before = host.run(f"ls {DEAD_LETTERS}").stdout.split()
    backend(api_key="another-key")
    listener = Listener(host)
    listener.play()
    wait_for(lambda: run_analytics(host).rc != 0 and host.run(f"ls {SPOOL}").stdout.split(),
             interval=1, what="the analytics to keep the refused batches in the spool")
    assert host.run(f"ls {DEAD_LETTERS}").stdout.split() == dead_before
    backend(api_key="molecule-analytics-key")
    listener.delivered()


def test_forwarding_headers_a_client_wrote_are_not_believed(host, backend):
    """127.0.0.1 is a trusted proxy here (hls_nginx_trusted_proxies). A client behind it wrote its own
    X-Forwarded-For and CF-Connecting-IP; the proxy appended the address it saw. nginx's realip takes that one
    (the right-most address no trusted proxy added); CF-Connecting-IP from a peer outside
    hls_analytics_cloudflare_networks (empty here) is not believed. Before: CF-Connecting-IP, 203.0.113.66."""
    session = str(uuid.uuid4())
    url = f"{NGINX}/hls/{SLUG}/index.m3u8?s={session}"
    status = host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' -H 'X-Forwarded-For: 203.0.113.65, "
                               f"198.51.100.7' -H 'CF-Connecting-IP: 203.0.113.66' {shlex.quote(url)}")
    assert status == "200"
    [event] = delivered(host, session, 1)
    assert event["ip_address"] == "198.51.100.7"


PLAYERS = """
import sys, urllib.parse, urllib.request
base, agent, rounds, sessions = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
made = {session: {"playlist_request": 0, "segment_request": 0} for session in sessions}
for _ in range(rounds):
    for session in sessions:  # interleaved, as players behind one address are
        url = f"{base}?s={session}&ref=nat"
        with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": agent})) as answer:
            lines = answer.read().decode().splitlines()
        made[session]["playlist_request"] += 1
        for line in lines:
            if line and not line.startswith("#"):
                # What a player does: the segment URI resolved against the playlist URL, whose query string goes.
                segment = urllib.parse.urljoin(url, line)
                with urllib.request.urlopen(urllib.request.Request(segment, headers={"User-Agent": agent})) as answer:
                    answer.read()
                made[session]["segment_request"] += 1
import json
print(json.dumps(made))
"""


def test_five_listeners_behind_one_address_each_get_their_own_requests(host, backend):
    """Carrier NAT, one app: five listeners with one address and one user agent. The playlist nginx serves for s=
    carries it on every segment URI, so each session gets exactly the requests it made (before: 105 segment
    requests went to 2 of the 5 sessions)."""
    agent = f"nat-app-{uuid.uuid4().hex[:8]}"
    sessions = [str(uuid.uuid4()) for _ in range(5)]
    made = json.loads(host.check_output(f"python3 -c {shlex.quote(PLAYERS)} {NGINX}/hls/{SLUG}/index.m3u8 "
                                        f"{agent} 3 {' '.join(sessions)}"))
    for session in sessions:
        expected = Counter(made[session])
        events = delivered(host, session, sum(expected.values()))
        received = Counter()
        for event in events:
            received[event["event_type"]] += event["request_count"]
        assert received == expected, session
    strays = [event for event in all_events(host) if event["user_agent"] == agent
              and event["anonymous_session_id"] not in sessions]
    assert strays == []


def test_a_lost_answer_is_counted_as_a_re_send(host, backend, no_timer):
    """The backend closes the connection after the batch was sent: the batch may have been processed, and is sent
    again. That re-send is counted in /metrics (the contract has no idempotency key to drop the copy)."""
    assert run_analytics(host).rc == 0
    assert host.run(f"ls {SPOOL}").stdout.split() == []
    before = listeners_file(host)["resent_batches_total"]
    listener = Listener(host)
    listener.play()
    backend(fail="close")
    wait_for(lambda: run_analytics(host).rc != 0 and host.run(f"ls {SPOOL}").stdout.split(),
             interval=1, what="a run whose answer was lost")
    backend(fail=None)
    listener.delivered()
    assert listeners_file(host)["resent_batches_total"] == before + 1
    wait_for(lambda: metric(host, "hls_analytics_resent_batches_total") == before + 1,
             what="/metrics to count the re-sent batch")

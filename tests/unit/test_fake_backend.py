"""Tests of the fake GraphQL backend (molecule/resources/backend/fake_backend.py) that other tests rely on.

The `url` fixture (a fresh in-process server) lives in conftest.py.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import fake_backend  # on sys.path through conftest.py
import pytest
import requests
from patience import GENEROUS_TIMEOUT, PATIENCE, wait_for

SERVER_SCRIPT = Path(__file__).resolve().parents[2] / "molecule" / "resources" / "backend" / "fake_backend.py"

# Verbatim from the example documents in backend.graphql.
STATIONS_QUERY = "query GetHLSStations { stations { id title slug stream_url generate_hls_stream disabled } }"
SUBMIT_MUTATION = """mutation SubmitListeningEvents($events: [ListeningEventInput!]!) {
  submit_listening_events(events: $events) {
    ... on SubmitListeningEventsResponse { success processed_count message }
    ... on OperationInfo { messages { kind message field code } }
  }
}"""
TRIGGER_MUTATION = "mutation Trigger($id: Int!) { trigger_metadata_fetch(station_id: $id) { success message } }"

HOSTILE_SLUG = "../../etc/passwd; rm -rf / #"
HOSTILE_URL = "http://evil.example/$(reboot)\n`id`"
STATIONS = [
    {"id": 1, "title": "Radio Joy", "slug": "radio-joy", "stream_url": "http://joy.example/stream.mp3",
     "generate_hls_stream": True, "disabled": False},
    {"id": 2, "title": "Hostile", "slug": HOSTILE_SLUG, "stream_url": HOSTILE_URL},
    {"id": 3, "title": "Off", "slug": "off", "stream_url": "http://off.example/s", "disabled": True},
    {"id": 4, "title": "No HLS", "slug": "no-hls", "stream_url": "http://nohls.example/s",
     "generate_hls_stream": False},
]
EVENT = {"anonymous_session_id": "5b0c3f9e-1111-4222-8333-944455556666", "station_slug": "radio-joy",
         "ip_address": "203.0.113.7", "user_agent": "ExoPlayer", "timestamp": "2026-11-24T10:00:00+00:00",
         "event_type": "segment_request", "bytes_transferred": 48000, "request_duration": 0.12,
         "status_code": 200, "request_count": 1, "referer": "radio-crestin-android"}


def set_state(url: str, **state: Any) -> dict[str, Any]:
    response = requests.put(f"{url}/admin/state", json=state, timeout=GENEROUS_TIMEOUT)
    response.raise_for_status()
    return response.json()


def gql(url: str, query: str, variables: dict | None = None, headers: dict | None = None,
        **kwargs: Any) -> requests.Response:
    kwargs.setdefault("timeout", GENEROUS_TIMEOUT)
    body = {"query": query, "variables": variables}
    return requests.post(f"{url}/graphql", json=body, headers=headers or {}, **kwargs)


def bearer(key: str, word: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{word} {key}"}


# --- stations ----------------------------------------------------------------------------------------------

def test_hls_stations_query_returns_stations_as_given_and_hides_disabled(url: str) -> None:
    set_state(url, stations=STATIONS)
    response = gql(url, STATIONS_QUERY)
    assert response.status_code == 200
    assert response.json() == {"data": {"stations": [
        {"id": 1, "title": "Radio Joy", "slug": "radio-joy", "stream_url": "http://joy.example/stream.mp3",
         "generate_hls_stream": True, "disabled": False},
        {"id": 2, "title": "Hostile", "slug": HOSTILE_SLUG, "stream_url": HOSTILE_URL,
         "generate_hls_stream": True, "disabled": False},
        {"id": 4, "title": "No HLS", "slug": "no-hls", "stream_url": "http://nohls.example/s",
         "generate_hls_stream": False, "disabled": False},
    ]}}


def test_an_answer_kept_for_a_query_follows_every_change_of_the_state(url: str) -> None:
    set_state(url, stations=STATIONS)
    assert len(gql(url, STATIONS_QUERY).json()["data"]["stations"]) == 3
    set_state(url, stations=STATIONS[:1])
    assert gql(url, STATIONS_QUERY).json()["data"]["stations"][0]["slug"] == "radio-joy"
    assert len(gql(url, STATIONS_QUERY).json()["data"]["stations"]) == 1
    set_state(url, token="s3cret")  # the same query, now refused
    assert "errors" in gql(url, STATIONS_QUERY).json()


def test_station_defaults_for_optional_fields(url: str) -> None:
    set_state(url, stations=STATIONS[:1])
    query = ("{ stations { order website thumbnail_url hls_stream_url"
             " station_streams { type } now_playing { id } } }")
    assert gql(url, query).json() == {"data": {"stations": [
        {"order": None, "website": None, "thumbnail_url": None, "hls_stream_url": None,
         "station_streams": [], "now_playing": None}]}}


@pytest.mark.parametrize(("arguments", "expected_ids"), [
    ("limit: 1", [1]),
    ("offset: 1", [2, 4]),
    ("offset: 1, limit: 1", [2]),
    ('station_slugs: ["no-hls", "off"]', [4]),
    ('exclude_station_slugs: ["radio-joy"]', [2, 4]),
    ('order_by: {title: "ASC"}', [1, 2, 4]),
])
def test_stations_arguments(url: str, arguments: str, expected_ids: list[int]) -> None:
    set_state(url, stations=STATIONS)
    data = gql(url, f"{{ stations({arguments}) {{ id }} }}").json()["data"]
    assert [station["id"] for station in data["stations"]] == expected_ids


def test_document_invalid_against_schema_gives_graphql_errors(url: str) -> None:
    response = gql(url, "query { stations { id no_such_field } }")
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    assert "no_such_field" in body["errors"][0]["message"]


def test_get_graphql_with_variables(url: str) -> None:
    set_state(url, stations=STATIONS)
    params = {"query": "query Q($n: Int) { stations(limit: $n) { slug } }", "operationName": "Q",
              "variables": json.dumps({"n": 1})}
    response = requests.get(f"{url}/graphql", params=params, timeout=GENEROUS_TIMEOUT)
    assert response.json() == {"data": {"stations": [{"slug": "radio-joy"}]}}


def test_request_body_that_is_not_json_is_a_bad_request(url: str) -> None:
    response = requests.post(f"{url}/graphql", data=b"{nope", timeout=GENEROUS_TIMEOUT)
    assert response.status_code == 400
    assert response.json()["errors"]


# --- auth --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("headers", "allowed"), [
    ({}, False),
    (bearer("wrong"), False),
    ({"Authorization": "s3cret"}, False),
    (bearer("s3cret"), True),
    (bearer("s3cret", word="Token"), True),
])
def test_stations_require_token(url: str, headers: dict[str, str], allowed: bool) -> None:
    set_state(url, stations=STATIONS[:1], token="s3cret")
    response = gql(url, STATIONS_QUERY, headers=headers)
    assert response.status_code == 200
    body = response.json()
    if allowed:
        assert body == {"data": {"stations": [STATIONS[0]]}}
    else:
        assert body["data"] is None
        assert [error["message"] for error in body["errors"]] == ["Unauthorized"]


@pytest.mark.parametrize(("headers", "allowed"), [
    ({}, False),
    ({"X-Streaming-Api-Key": "wrong"}, False),
    ({"X-Streaming-Api-Key": "k3y"}, True),
    (bearer("k3y"), True),
    (bearer("s3cret"), False),
])
def test_submit_requires_api_key(url: str, headers: dict[str, str], allowed: bool) -> None:
    set_state(url, token="s3cret", api_key="k3y")
    body = gql(url, SUBMIT_MUTATION, {"events": [EVENT]}, headers=headers).json()
    events = requests.get(f"{url}/admin/events", timeout=GENEROUS_TIMEOUT).json()
    if allowed:
        assert body["data"]["submit_listening_events"]["success"] is True
        assert len(events) == 1
    else:
        assert body["data"] is None
        assert [error["message"] for error in body["errors"]] == ["Unauthorized"]
        assert events == []


# --- mutations ---------------------------------------------------------------------------------------------

def test_submit_listening_events_records_batches(url: str) -> None:
    minimal = {key: EVENT[key] for key in ("anonymous_session_id", "station_slug", "timestamp", "event_type")}
    first = gql(url, SUBMIT_MUTATION, {"events": [EVENT, minimal]}).json()
    assert first == {"data": {"submit_listening_events": {
        "success": True, "processed_count": 2, "message": "Processed 2 events"}}}
    gql(url, SUBMIT_MUTATION, {"events": [EVENT]})

    events = requests.get(f"{url}/admin/events", timeout=GENEROUS_TIMEOUT).json()
    assert [event["batch"] for event in events] == [1, 1, 2]
    assert all(event["received_at"] for event in events)
    assert {key: events[0][key] for key in EVENT} == EVENT
    assert events[1]["station_slug"] == "radio-joy" and "referer" not in events[1]


def test_submit_operation_info_member_records_nothing(url: str) -> None:
    set_state(url, submit_result="operation_info")
    body = gql(url, SUBMIT_MUTATION, {"events": [EVENT]}).json()
    assert body == {"data": {"submit_listening_events": {"messages": [
        {"kind": "ERROR", "message": "Injected OperationInfo", "field": None, "code": "TEST"}]}}}
    assert requests.get(f"{url}/admin/events", timeout=GENEROUS_TIMEOUT).json() == []


def test_submit_unsuccessful_records_nothing(url: str) -> None:
    set_state(url, submit_result="unsuccessful")
    result = gql(url, SUBMIT_MUTATION, {"events": [EVENT]}).json()["data"]["submit_listening_events"]
    assert result["success"] is False
    assert requests.get(f"{url}/admin/events", timeout=GENEROUS_TIMEOUT).json() == []


def test_trigger_metadata_fetch(url: str) -> None:
    set_state(url, token="s3cret")
    denied = gql(url, TRIGGER_MUTATION, {"id": 7}).json()
    assert denied["data"] is None and denied["errors"][0]["message"] == "Unauthorized"

    body = gql(url, TRIGGER_MUTATION, {"id": 7}, headers=bearer("s3cret")).json()
    assert body["data"]["trigger_metadata_fetch"]["success"] is True
    fetches = requests.get(f"{url}/admin/state", timeout=GENEROUS_TIMEOUT).json()["metadata_fetches"]
    assert [fetch["station_id"] for fetch in fetches] == [7]
    assert fetches[0]["received_at"]


# --- redirect and request log ------------------------------------------------------------------------------

def test_posted_query_is_redirected_to_get(url: str) -> None:
    set_state(url, stations=STATIONS[:1], token="s3cret", redirect_queries=True)
    headers = bearer("s3cret")

    response = gql(url, STATIONS_QUERY, headers=headers, allow_redirects=False)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/graphql"
    assert parse_qs(location.query)["query"] == [STATIONS_QUERY]

    followed = gql(url, STATIONS_QUERY, headers=headers)
    assert followed.status_code == 200
    assert followed.json() == {"data": {"stations": [STATIONS[0]]}}

    logged = requests.get(f"{url}/admin/requests", timeout=GENEROUS_TIMEOUT).json()
    assert [entry["method"] for entry in logged] == ["POST", "POST", "GET"]
    assert all(entry["operationName"] is None for entry in logged[:2])
    assert logged[2]["headers"]["Authorization"] == "Bearer s3cret"
    assert logged[0]["headers"]["Content-Type"] == "application/json"
    assert logged[0]["time"]


def test_posted_mutation_is_not_redirected(url: str) -> None:
    set_state(url, redirect_queries=True, api_key="k3y")
    response = gql(url, SUBMIT_MUTATION, {"events": [EVENT]}, headers={"X-Streaming-Api-Key": "k3y"},
                   allow_redirects=False)
    assert response.status_code == 200
    assert response.json()["data"]["submit_listening_events"]["processed_count"] == 1
    logged = requests.get(f"{url}/admin/requests", timeout=GENEROUS_TIMEOUT).json()
    assert logged[0]["headers"]["X-Streaming-Api-Key"] == "k3y"


def test_request_log_keeps_operation_name(url: str) -> None:
    requests.post(f"{url}/graphql", json={"query": STATIONS_QUERY, "operationName": "GetHLSStations"},
                  timeout=GENEROUS_TIMEOUT)
    logged = requests.get(f"{url}/admin/requests", timeout=GENEROUS_TIMEOUT).json()
    assert logged[0]["operationName"] == "GetHLSStations"


# --- failure injection -------------------------------------------------------------------------------------

def test_fail_500_answers_html_and_spares_admin(url: str) -> None:
    set_state(url, fail="500")
    response = gql(url, STATIONS_QUERY)
    assert response.status_code == 500
    assert response.headers["Content-Type"].startswith("text/html")
    assert requests.get(f"{url}/healthz", timeout=GENEROUS_TIMEOUT).text == "ok"
    assert requests.get(f"{url}/admin/state", timeout=GENEROUS_TIMEOUT).json()["fail"] == "500"


def test_fail_malformed_answers_truncated_json(url: str) -> None:
    set_state(url, fail="malformed")
    response = gql(url, STATIONS_QUERY)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        response.json()


def test_fail_errors_answers_graphql_error(url: str) -> None:
    set_state(url, fail="errors")
    response = gql(url, STATIONS_QUERY)
    assert response.status_code == 200
    assert response.json() == {"data": None, "errors": [{"message": "Injected failure"}]}


def test_fail_close_drops_the_connection(url: str) -> None:
    set_state(url, fail="close")
    with pytest.raises(requests.ConnectionError):
        gql(url, STATIONS_QUERY)


def test_fail_hang_delays_then_answers(url: str) -> None:
    set_state(url, stations=STATIONS[:1], fail="hang", hang_seconds=0.5)
    started = time.monotonic()
    response = gql(url, STATIONS_QUERY)
    assert time.monotonic() - started >= 0.5  # a lower bound the sleep guarantees, however busy the machine
    assert response.json() == {"data": {"stations": [STATIONS[0]]}}


def test_fail_count_limits_failures(url: str) -> None:
    set_state(url, fail="500", fail_count=2)
    assert [gql(url, STATIONS_QUERY).status_code for _ in range(3)] == [500, 500, 200]
    state = requests.get(f"{url}/admin/state", timeout=GENEROUS_TIMEOUT).json()
    assert state["fail"] is None and state["fail_count"] is None


# --- admin -------------------------------------------------------------------------------------------------

def test_admin_rejects_unknown_modes_and_resets(url: str) -> None:
    assert requests.put(f"{url}/admin/state", json={"fail": "boom"}, timeout=GENEROUS_TIMEOUT).status_code == 400
    assert requests.put(f"{url}/admin/state", json=["not", "an", "object"], timeout=GENEROUS_TIMEOUT).status_code == 400
    set_state(url, token="s3cret", stations=STATIONS)
    gql(url, STATIONS_QUERY)
    assert requests.post(f"{url}/admin/reset", timeout=GENEROUS_TIMEOUT).json() == fake_backend.DEFAULT_STATE
    assert requests.get(f"{url}/admin/requests", timeout=GENEROUS_TIMEOUT).json() == []


# --- the command line: persistence across a restart and SIGTERM ---------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_process(port: int, state_file: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, str(SERVER_SCRIPT), "--port", str(port),
                                "--state-file", str(state_file)], stderr=subprocess.PIPE)

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"server exited: {process.communicate()[1].decode()}")
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=GENEROUS_TIMEOUT).ok
        except requests.ConnectionError:  # not listening yet
            return False

    try:
        wait_for(answers, "the server to answer /healthz")
    except BaseException:
        process.kill()
        raise
    return process


def stop_process(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=PATIENCE)
    assert process.returncode == 0
    return stderr.decode()


def test_state_file_survives_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    process = start_process(port, state_file)
    try:
        set_state(url, stations=STATIONS[:1], token="s3cret")
        gql(url, SUBMIT_MUTATION, {"events": [EVENT]})
    finally:
        stderr = stop_process(process)
    assert "POST /graphql" in stderr
    assert json.loads(state_file.read_text())["events"][0]["station_slug"] == "radio-joy"

    process = start_process(port, state_file)
    try:
        state = requests.get(f"{url}/admin/state", timeout=GENEROUS_TIMEOUT).json()
        gql(url, SUBMIT_MUTATION, {"events": [EVENT]})
        events = requests.get(f"{url}/admin/events", timeout=GENEROUS_TIMEOUT).json()
    finally:
        stop_process(process)
    assert state["token"] == "s3cret" and state["stations"] == STATIONS[:1]
    assert [event["batch"] for event in events] == [1, 2]

"""Tests of files/scripts/hls_graphql.py against the fake backend over loopback: every failure is a BackendError."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import pytest
import requests
from patience import SHORT_TIMEOUT

from hls_graphql import USER_AGENT, BackendError, execute

STATIONS_QUERY = "query GetHLSStations { stations { id title slug stream_url generate_hls_stream disabled } }"
STATION = {"id": 1, "title": "Radio Joy", "slug": "radio-joy", "stream_url": "http://joy.example/s.mp3",
           "generate_hls_stream": True, "disabled": False}
AUTH = {"Authorization": "Bearer s3cret"}

if TYPE_CHECKING:
    from conftest import FakeBackend, HeldHang


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_success_returns_data(backend: FakeBackend) -> None:
    backend.set_state(stations=[STATION])
    assert execute(backend.graphql, STATIONS_QUERY) == {"stations": [STATION]}


def test_variables_are_sent(backend: FakeBackend) -> None:
    backend.set_state(stations=[STATION, {**STATION, "id": 2, "slug": "two"}])
    data = execute(backend.graphql, "query Q($n: Int) { stations(limit: $n) { slug } }", variables={"n": 1})
    assert data == {"stations": [{"slug": "radio-joy"}]}


def test_authorization_and_user_agent_are_sent(backend: FakeBackend) -> None:
    backend.set_state(stations=[STATION], token="s3cret")
    assert execute(backend.graphql, STATIONS_QUERY, headers=AUTH) == {"stations": [STATION]}
    logged = backend.recorded_requests()
    assert [(entry["method"], entry["headers"].get("Authorization")) for entry in logged] == [
        ("POST", "Bearer s3cret")]
    assert logged[0]["headers"]["Content-Type"] == "application/json"


def test_user_agent_header(backend: FakeBackend) -> None:
    session = requests.Session()
    sent: list[dict[str, str]] = []
    session.hooks["response"].append(lambda response, **_: sent.append(dict(response.request.headers)))
    execute(backend.graphql, "{ stations { id } }", session=session)
    assert sent[0]["User-Agent"] == USER_AGENT
    assert sent[0]["Accept"] == "application/json"


def test_missing_token_is_a_graphql_error(backend: FakeBackend) -> None:
    backend.set_state(stations=[STATION], token="s3cret")
    with pytest.raises(BackendError, match=r"^GraphQL errors from .*/graphql: Unauthorized$"):
        execute(backend.graphql, STATIONS_QUERY)


def test_redirect_is_followed_and_still_authorized(backend: FakeBackend) -> None:
    backend.set_state(stations=[STATION], token="s3cret", redirect_queries=True)
    assert execute(backend.graphql, STATIONS_QUERY, headers=AUTH) == {"stations": [STATION]}
    logged = backend.recorded_requests()
    assert [entry["method"] for entry in logged] == ["POST", "GET"]
    assert logged[1]["path"].startswith("/graphql?query=")
    assert logged[1]["headers"]["Authorization"] == "Bearer s3cret"


def test_http_500(backend: FakeBackend) -> None:
    backend.set_state(fail="500")
    with pytest.raises(BackendError, match=r"^http://127\.0\.0\.1:\d+/graphql answered HTTP 500$"):
        execute(backend.graphql, STATIONS_QUERY)


def test_unknown_path_is_http_404(backend: FakeBackend) -> None:
    with pytest.raises(BackendError, match=r"answered HTTP 404$"):
        execute(f"{backend.url}/nope", STATIONS_QUERY)


def test_malformed_json(backend: FakeBackend) -> None:
    backend.set_state(fail="malformed")
    with pytest.raises(BackendError, match=r"answered with malformed JSON: '\{\"data\": \{\"stations\": \['$"):
        execute(backend.graphql, STATIONS_QUERY)


def test_graphql_errors(backend: FakeBackend) -> None:
    backend.set_state(fail="errors")
    with pytest.raises(BackendError, match=r"^GraphQL errors from http://127\.0\.0\.1:\d+/graphql: Injected failure$"):
        execute(backend.graphql, STATIONS_QUERY)


def test_document_the_schema_rejects(backend: FakeBackend) -> None:
    with pytest.raises(BackendError, match=r"GraphQL errors from .*no_such_field"):
        execute(backend.graphql, "{ stations { no_such_field } }")


def test_connection_refused() -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}/graphql"
    with pytest.raises(BackendError) as caught:
        execute(endpoint, STATIONS_QUERY)
    message = str(caught.value)
    assert message.startswith(f"cannot reach {endpoint}: ConnectionError: ")
    assert "refused" in message.lower()


class TimeoutRecordingSession(requests.Session):
    """A real session that notes the timeout of each request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[Any] = []

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        self.timeouts.append(kwargs.get("timeout"))
        return super().request(*args, **kwargs)


def read_timeout(timeout: Any) -> Any:
    """The read part of a requests timeout, (connect, read) or one number for both."""
    return timeout[1] if isinstance(timeout, tuple) else timeout


def test_hang_longer_than_timeout(backend: FakeBackend, held_hang: HeldHang) -> None:
    backend.set_state(stations=[STATION], fail="hang")
    session = TimeoutRecordingSession()
    with pytest.raises(BackendError, match=r"^no answer from http://127\.0\.0\.1:\d+/graphql within 0\.5 s$"):
        execute(backend.graphql, STATIONS_QUERY, timeout=SHORT_TIMEOUT, session=session)
    assert held_hang.answered == 0  # the backend still held the request: the client's timeout ended the call
    assert [read_timeout(timeout) for timeout in session.timeouts] == [SHORT_TIMEOUT]  # the one it was given


def test_connection_closed_without_answer(backend: FakeBackend) -> None:
    backend.set_state(fail="close")
    with pytest.raises(BackendError, match=r"^cannot reach http://127\.0\.0\.1:\d+/graphql: ConnectionError: "):
        execute(backend.graphql, STATIONS_QUERY)


def test_fail_count_only_fails_once(backend: FakeBackend) -> None:
    backend.set_state(stations=[STATION], fail="500", fail_count=1)
    with pytest.raises(BackendError, match="HTTP 500"):
        execute(backend.graphql, STATIONS_QUERY)
    assert execute(backend.graphql, STATIONS_QUERY) == {"stations": [STATION]}


class FakeResponse:
    """For answers the fake backend cannot give: valid JSON of the wrong shape."""

    def __init__(self, payload: object, status_code: int = 200) -> None:
        self.payload = payload
        self.status_code = status_code
        self.text = repr(payload)

    def json(self) -> object:
        return self.payload


class FakeSession:
    def __init__(self, response: FakeResponse) -> None:
        self.response = response

    def post(self, *_args: object, **_kwargs: object) -> FakeResponse:
        return self.response


@pytest.mark.parametrize(("payload", "message"), [
    ([1, 2], "answered with a JSON list, not an object"),
    ("text", "answered with a JSON str, not an object"),
    ({"data": None}, "answered without data"),
    ({}, "answered without data"),
    ({"data": [1]}, "answered without data"),
    ({"errors": [{"message": "a"}, "b", {"no": "message"}]},
     "GraphQL errors from http://x/graphql: a; b; {'no': 'message'}"),
])
def test_unusable_json_shapes(payload: object, message: str) -> None:
    session = FakeSession(FakeResponse(payload))
    with pytest.raises(BackendError) as caught:
        execute("http://x/graphql", "{ stations { id } }", session=session)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_empty_errors_list_with_data_is_success() -> None:
    session = FakeSession(FakeResponse({"errors": [], "data": {"stations": []}}))
    data = execute("http://x/graphql", "{ stations { id } }", session=session)  # type: ignore[arg-type]
    assert data == {"stations": []}

"""Tests of radio_hls/common/graphql.py against the fake backend over loopback: every failure is a BackendError."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import requests
from conftest import serving_fake_backend
from patience import SHORT_TIMEOUT

from radio_hls.common.graphql import USER_AGENT, BackendError, execute, is_query, same_origin

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

    def __init__(self, payload: object, status_code: int = 200, headers: dict[str, str] | None = None) -> None:
        self.payload = payload
        self.status_code = status_code
        self.text = repr(payload)
        self.headers = headers or {}

    def json(self) -> object:
        return self.payload


class FakeSession:
    def __init__(self, response: FakeResponse) -> None:
        self.response = response
        self.calls: list[str] = []

    def post(self, url: str, **_kwargs: object) -> FakeResponse:
        self.calls.append(f"POST {url}")
        return self.response

    def get(self, url: str, **_kwargs: object) -> FakeResponse:
        self.calls.append(f"GET {url}")
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


# --- redirects: credentials stay with their origin, mutations are never redirected --------------------------

SUBMIT = """mutation SubmitListeningEvents($events: [ListeningEventInput!]!) {
  submit_listening_events(events: $events) { ... on SubmitListeningEventsResponse { success processed_count } }
}"""
EVENT = {"anonymous_session_id": "5b0c3f9e-1111-4222-8333-944455556666", "station_slug": "radio-joy",
         "ip_address": "203.0.113.7", "user_agent": "ExoPlayer", "timestamp": "2026-11-24T10:00:00+00:00",
         "event_type": "segment_request", "bytes_transferred": 48000, "request_duration": 0.12,
         "status_code": 200, "request_count": 1, "referer": "radio-crestin-android"}
TRIGGER = "mutation T($station_id: Int!) { trigger_metadata_fetch(station_id: $station_id) { success } }"
KEYS = {"Authorization": "Bearer s3cret", "X-Streaming-Api-Key": "k3y"}


@pytest.fixture
def elsewhere() -> Iterator[Any]:
    """A second fake backend, another origin, that records whatever reaches it."""
    yield from serving_fake_backend()


def origin_of(server: Any) -> str:
    return f"http://127.0.0.1:{server.server_port}"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("document", [STATIONS_QUERY, SUBMIT], ids=["query", "mutation"])
def test_redirect_to_another_origin_sends_nothing_there(backend: FakeBackend, elsewhere: Any, status: int,
                                                        document: str) -> None:
    backend.set_state(stations=[STATION], redirect_all={"status": status, "origin": origin_of(elsewhere)})
    variables = {"events": [EVENT]} if document == SUBMIT else None
    with pytest.raises(BackendError, match=rf"^{backend.graphql} (redirected to another origin|answered a mutation)"):
        execute(backend.graphql, document, variables, headers=KEYS)
    assert elsewhere.backend.recorded_requests() == []  # neither the key nor the token, nor anything else
    assert elsewhere.backend.snapshot("events") == []
    assert [entry["method"] for entry in backend.recorded_requests()] == ["POST"]


def test_cross_origin_message_names_both_origins(backend: FakeBackend, elsewhere: Any) -> None:
    backend.set_state(redirect_all={"status": 302, "origin": origin_of(elsewhere)})
    with pytest.raises(BackendError) as caught:
        execute(backend.graphql, STATIONS_QUERY, headers=AUTH)
    assert str(caught.value) == (
        f"{backend.graphql} redirected to another origin, '{origin_of(elsewhere)}' (HTTP 302); only redirects "
        f"within '{backend.url}' are followed, so its credentials stay there")


@pytest.mark.parametrize(("location", "same"), [
    ("http://joy.example:80/graphql?query=x", True),
    # The stricter reading of the two origin() functions the programs had: a port that cannot be read is no
    # origin at all (one of them took it for the default port) ...
    ("http://joy.example:bad/graphql", False),
    ("http://joy.example:99999/graphql", False),
    # ... and a trailing dot names another host (the other one dropped it).
    ("http://joy.example./graphql", False),
])
def test_same_origin_is_strict(location: str, same: bool) -> None:
    assert same_origin(location, "http://joy.example/graphql") is same


@pytest.mark.parametrize("origin", [
    pytest.param("http://localhost:{port}", id="other-host-name"),
    pytest.param("https://127.0.0.1:{port}", id="other-scheme"),
    pytest.param("http://127.0.0.1:1", id="other-port"),
])
def test_same_server_under_another_origin_is_another_origin(backend: FakeBackend, origin: str) -> None:
    port = backend.url.rsplit(":", 1)[1]
    backend.set_state(stations=[STATION], redirect_all={"status": 302, "origin": origin.format(port=port)})
    with pytest.raises(BackendError, match="redirected to another origin"):
        execute(backend.graphql, STATIONS_QUERY, headers=AUTH)
    assert len(backend.recorded_requests()) == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize(("document", "variables"), [(SUBMIT, {"events": [EVENT]}), (TRIGGER, {"station_id": 1})],
                         ids=["submit", "trigger"])
def test_mutation_never_follows_a_redirect_even_to_its_own_origin(backend: FakeBackend, status: int, document: str,
                                                                  variables: dict[str, Any]) -> None:
    backend.set_state(api_key="k3y", redirect_all={"status": status, "origin": ""})
    with pytest.raises(BackendError) as caught:
        execute(backend.graphql, document, variables, headers=KEYS)
    assert str(caught.value).startswith(f"{backend.graphql} answered a mutation with HTTP {status} (a redirect to "
                                        f"'{backend.url}/graphql?query=")
    assert str(caught.value).endswith("mutations never follow redirects: set the endpoint to the URL that answers")
    assert [entry["method"] for entry in backend.recorded_requests()] == ["POST"]  # never re-sent as a GET
    assert backend.server.backend.snapshot("events") == []
    assert backend.server.backend.snapshot("metadata_fetches") == []


@pytest.mark.parametrize(("status", "methods"), [(302, ["POST", "GET"]), (303, ["POST", "GET"]),
                                                 (307, ["POST", "POST"]), (308, ["POST", "POST"])])
def test_query_follows_a_same_origin_redirect_with_its_headers(backend: FakeBackend, status: int,
                                                              methods: list[str]) -> None:
    backend.set_state(stations=[STATION], token="s3cret", redirect_all={"status": status, "origin": backend.url})
    assert execute(backend.graphql, STATIONS_QUERY, headers=AUTH) == {"stations": [STATION]}
    logged = backend.recorded_requests()
    assert [entry["method"] for entry in logged] == methods
    assert logged[1]["headers"]["Authorization"] == "Bearer s3cret"


def test_a_redirect_loop_ends() -> None:
    session = FakeSession(FakeResponse(None, 302, {"Location": "/graphql?again"}))
    with pytest.raises(BackendError, match=r"^http://x/graphql redirected more than 5 times$"):
        execute("http://x/graphql", STATIONS_QUERY, session=session)  # type: ignore[arg-type]
    assert session.calls == ["POST http://x/graphql"] + ["GET http://x/graphql?again"] * 5


def test_a_redirect_without_location_is_an_error() -> None:
    session = FakeSession(FakeResponse(None, 302))
    with pytest.raises(BackendError, match=r"answered HTTP 302$"):
        execute("http://x/graphql", STATIONS_QUERY, session=session)  # type: ignore[arg-type]


@pytest.mark.parametrize(("document", "query"), [
    (STATIONS_QUERY, True),
    ("{ stations { id } }", True),
    ("  # a comment\n , query Q { stations { id } }", True),
    ("\ufeffquery{stations{id}}", True),
    (SUBMIT, False),
    (TRIGGER, False),
    ("  mutation { x }", False),
    ("subscription S { x }", False),
    ("queryX { x }", False),
    ("fragment F on Station { id } query Q { stations { ...F } }", False),
    ("query Q { stations { id } } mutation M { x }", False),  # two operations: treated as the riskier one
    ("", False),
])
def test_is_query(document: str, query: bool) -> None:
    assert is_query(document) is query


# --- what reaches the journal ------------------------------------------------------------------------------

def test_graphql_messages_cannot_forge_a_journal_line() -> None:
    payload = {"errors": [{"message": "Unauthorized\nERROR no change made: forged\r\x1b[31m"}]}
    with pytest.raises(BackendError) as caught:
        execute("http://x/graphql", STATIONS_QUERY, session=FakeSession(FakeResponse(payload)))  # type: ignore[arg-type]
    assert str(caught.value) == ("GraphQL errors from http://x/graphql: Unauthorized\\nERROR no change made: "
                                 "forged\\r\\x1b[31m")


def test_many_long_graphql_messages_are_shortened() -> None:
    payload = {"errors": [{"message": "m" * 5000}] * 40}
    with pytest.raises(BackendError) as caught:
        execute("http://x/graphql", STATIONS_QUERY, session=FakeSession(FakeResponse(payload)))  # type: ignore[arg-type]
    message = str(caught.value)
    assert len(message) <= 1100
    assert "m" * 200 + "... (5000 characters)" in message


def test_any_backend_error_is_one_line() -> None:
    # Callers build BackendErrors from the backend's own text too (analytics: OperationInfo messages).
    error = BackendError("the backend refused the batch: bad\nERROR forged\u2028line")
    assert str(error) == "the backend refused the batch: bad\\nERROR forged\\u2028line"


def test_malformed_body_is_shown_escaped() -> None:
    response = FakeResponse(None)
    response.text = "<html>\nERROR forged</html>"
    response.json = lambda: (_ for _ in ()).throw(ValueError("no JSON"))  # type: ignore[method-assign]
    with pytest.raises(BackendError) as caught:
        execute("http://x/graphql", STATIONS_QUERY, session=FakeSession(response))  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)

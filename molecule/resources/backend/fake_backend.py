#!/usr/bin/env python3
"""A fake radio-crestin GraphQL backend for tests, faithful to backend.graphql and able to fail on demand.

Standard library + graphql-core 3.2 only. The schema is built from the copied SDL file, so a document the real
backend would reject (unknown field, wrong argument) is rejected here too.

Endpoints
  POST /graphql            JSON {query, variables?, operationName?}
  GET  /graphql            ?query=...&operationName=...&variables=<JSON>
  GET  /healthz            200 "ok"
  GET  /admin/state        the whole state (JSON)
  PUT  /admin/state        shallow-merge a JSON object into the state, answer the new state
  POST /admin/reset        back to the default state (also forgets recorded requests)
  GET  /admin/events       the recorded listening events
  GET  /admin/requests     the recorded /graphql requests (method, path, headers, operationName, time)

Behaviour, driven by the state (see DEFAULT_STATE)
  stations          list of station dicts; missing fields get STATION_DEFAULTS, disabled ones are hidden like the
                    real resolver does; values are returned as given (tests put hostile values in them).
                    order_by is accepted and ignored: stations come back in state order.
  token             when set, `stations` and `trigger_metadata_fetch` need "Authorization: <any word> <token>".
  api_key           when set, `submit_listening_events` needs "X-Streaming-Api-Key: <api_key>"
                    (or "Authorization: <any word> <api_key>", as older deployments do).
                    A failed check answers HTTP 200 with data null and an errors entry "Unauthorized": the field is
                    non-null, so the resolver's error nulls the whole response, which is how a GraphQL server
                    reports it rather than with HTTP 401.
  redirect_queries  a POSTed *query* is answered with 302 to the equivalent GET URL (the real backend does this);
                    mutations always run directly.
  redirect_all      None | {"status": 301|302|303|307|308, "origin": "http://host:port" or "" for this server}:
                    every POST /graphql (query or mutation) without a query string is answered with that status
                    and a Location at that origin (the equivalent GET URL, which a repeated POST may also use),
                    as a moved backend or an https-redirecting proxy would.
  submit_result     "ok" | "operation_info" | "unsuccessful"; only "ok" records the events.
  refuse_nul        true (the default): a batch with a NUL character in any string is refused with a GraphQL
                    error, nothing of it recorded, as PostgreSQL refuses NUL in text (the resolver raises, so
                    data is null); false: NUL is recorded like anything else.
  fail              None | "500" | "hang" | "malformed" | "errors" | "close"; applies to /graphql only.
                    "hang" sleeps hang_seconds and then answers normally.
  fail_count        an integer N makes only the next N /graphql requests fail, then `fail` resets to None.

With --state-file the state is loaded at start and rewritten atomically on every change, so it survives a
restart. Recorded requests are kept in memory only.

Start: python3 fake_backend.py --host 127.0.0.1 --port 8000 [--schema backend.graphql] [--state-file state.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from graphql import (
    GraphQLError,
    GraphQLResolveInfo,
    GraphQLSchema,
    OperationType,
    build_schema,
    get_operation_ast,
    graphql_sync,
    parse,
)

DEFAULT_SCHEMA = Path(__file__).resolve().with_name("backend.graphql")

DEFAULT_STATE: dict[str, Any] = {
    "stations": [],
    "token": None,
    "api_key": None,
    "redirect_queries": False,
    "redirect_all": None,
    "fail": None,
    "fail_count": None,
    "hang_seconds": 30,
    "submit_result": "ok",
    "refuse_nul": True,
    "events": [],
    "metadata_fetches": [],
}

STATION_DEFAULTS: dict[str, Any] = {
    "generate_hls_stream": True,
    "disabled": False,
    "order": None,
    "website": None,
    "thumbnail_url": None,
    "hls_stream_url": None,
    "station_streams": [],
    "now_playing": None,
}

FAIL_MODES = (None, "500", "hang", "malformed", "errors", "close")
SUBMIT_RESULTS = ("ok", "operation_info", "unsuccessful")
RECORDED_HEADERS = ("Authorization", "X-Streaming-Api-Key", "Content-Type")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)

# Django's plain error page: clients must cope with a non-JSON body.
ERROR_500_BODY = b"<!doctype html>\n<html><head><title>Server Error (500)</title></head>" \
                 b"<body><h1>Server Error (500)</h1></body></html>\n"
MALFORMED_BODY = b'{"data": {"stations": ['
INJECTED_ERRORS_BODY = b'{"data": null, "errors": [{"message": "Injected failure"}]}'


class BadRequest(Exception):
    """The HTTP request itself is unusable (answered with 400)."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def presented_key(headers: Any) -> str | None:
    """The key of an "Authorization: <any word> <key>" header; the backend ignores the prefix word."""
    parts = (headers.get("Authorization") or "").split()
    return parts[1] if len(parts) == 2 else None


def holds_nul(value: Any) -> bool:
    """Whether any string in a JSON-like value contains NUL."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(item) for item in value.values())
    if isinstance(value, list):
        return any(holds_nul(item) for item in value)
    return False


def require_key(expected: str | None, *presented: str | None) -> None:
    if expected is not None and expected not in presented:
        raise GraphQLError("Unauthorized")


def validate_patch(patch: Any) -> dict[str, Any]:
    """Refuse admin changes the server could not act on, so a typo fails the test that made it."""
    if not isinstance(patch, dict):
        raise BadRequest("body must be a JSON object")
    if patch.get("fail") not in FAIL_MODES:
        raise BadRequest(f"fail must be one of {FAIL_MODES}")
    if patch.get("submit_result", "ok") not in SUBMIT_RESULTS:
        raise BadRequest(f"submit_result must be one of {SUBMIT_RESULTS}")
    redirect = patch.get("redirect_all")
    if redirect is not None and not (isinstance(redirect, dict) and redirect.get("status") in REDIRECT_STATUSES
                                     and isinstance(redirect.get("origin"), str)):
        raise BadRequest(f"redirect_all must be null or {{'status': one of {REDIRECT_STATUSES}, 'origin': str}}")
    return patch


class Backend:
    """The state, its persistence, and the resolvers that read and change it (all under one lock)."""

    def __init__(self, schema_path: Path, state_file: Path | None) -> None:
        self.lock = threading.Lock()
        self.state_file = state_file
        self.state = self._initial_state()
        self.requests: list[dict[str, Any]] = []
        self.schema = self._build_schema(schema_path)
        # Answers to queries, until the state changes: graphql-core takes about a second of CPU to answer a list of
        # 1,000 stations, which hls-sync-watch asks for every 5 s, on the cores the benchmark measures.
        self.answers: dict[str, dict[str, Any]] = {}

    # --- state ---------------------------------------------------------------------------------------------

    def _initial_state(self) -> dict[str, Any]:
        state = copy.deepcopy(DEFAULT_STATE)
        if self.state_file is not None and self.state_file.exists():
            state.update(json.loads(self.state_file.read_text(encoding="utf-8")))
        return state

    def _save(self) -> None:
        """Write the state atomically (caller holds the lock): a killed server never leaves half a file."""
        if self.state_file is None:
            return
        directory = self.state_file.parent
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=directory, delete=False,
                                         prefix=f".{self.state_file.name}.") as tmp:
            json.dump(self.state, tmp, indent=2)
        os.replace(tmp.name, self.state_file)

    def snapshot(self, key: str | None = None) -> Any:
        with self.lock:
            return copy.deepcopy(self.state if key is None else self.state[key])

    def update(self, patch: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.state.update(copy.deepcopy(patch))
            self.answers.clear()
            self._save()
            return copy.deepcopy(self.state)

    def reset(self) -> dict[str, Any]:
        with self.lock:
            self.state = copy.deepcopy(DEFAULT_STATE)
            self.requests.clear()
            self.answers.clear()
            self._save()
            return copy.deepcopy(self.state)

    def record_request(self, method: str, path: str, headers: Any, operation_name: str | None) -> None:
        entry = {
            "method": method,
            "path": path,
            "headers": {name: headers[name] for name in RECORDED_HEADERS if headers.get(name) is not None},
            "operationName": operation_name,
            "time": now_iso(),
        }
        with self.lock:
            self.requests.append(entry)

    def recorded_requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self.requests)

    def take_failure(self) -> tuple[str | None, float]:
        """The failure to inject into this /graphql request, counting it against fail_count."""
        with self.lock:
            mode, count = self.state.get("fail"), self.state.get("fail_count")
            if mode is not None and isinstance(count, int):
                mode = mode if count > 0 else None
                if count > 1:
                    self.state["fail_count"] = count - 1
                else:
                    self.state.update(fail=None, fail_count=None)
                self._save()
            return mode, float(self.state.get("hang_seconds") or 0)

    def redirects_queries(self) -> bool:
        with self.lock:
            return bool(self.state.get("redirect_queries"))

    def redirect_all(self) -> dict[str, Any] | None:
        with self.lock:
            return copy.deepcopy(self.state.get("redirect_all"))

    # --- GraphQL -------------------------------------------------------------------------------------------

    def _build_schema(self, schema_path: Path) -> GraphQLSchema:
        schema = build_schema(schema_path.read_text(encoding="utf-8"))
        schema.query_type.fields["stations"].resolve = self.resolve_stations
        mutations = schema.mutation_type.fields
        mutations["submit_listening_events"].resolve = self.resolve_submit_listening_events
        mutations["trigger_metadata_fetch"].resolve = self.resolve_trigger_metadata_fetch
        schema.get_type("SubmitListeningEventsPayload").resolve_type = (
            lambda value, _info, _type: value["__typename"])
        return schema

    def execute(self, params: dict[str, Any], headers: Any) -> dict[str, Any]:
        query = is_query(params)
        key = json.dumps([params["query"], params.get("variables"), params.get("operationName"),
                          presented_key(headers)])
        with self.lock:
            answer = self.answers.get(key) if query else None
        if answer is not None:
            return answer
        result = graphql_sync(
            self.schema,
            params["query"],
            variable_values=params.get("variables"),
            operation_name=params.get("operationName"),
            context_value={"headers": headers},
        ).formatted
        if query:
            with self.lock:
                self.answers[key] = result
        return result

    def resolve_stations(self, _root: Any, info: GraphQLResolveInfo, limit: int | None = None,
                         offset: int | None = None, station_slugs: list[str] | None = None,
                         exclude_station_slugs: list[str] | None = None, **_order_by: Any) -> list[dict]:
        headers = info.context["headers"]
        with self.lock:
            require_key(self.state.get("token"), presented_key(headers))
            stations = [{**STATION_DEFAULTS, **station} for station in self.state.get("stations") or []]
        stations = [s for s in stations if not s["disabled"]]
        if station_slugs is not None:
            stations = [s for s in stations if s.get("slug") in station_slugs]
        if exclude_station_slugs is not None:
            stations = [s for s in stations if s.get("slug") not in exclude_station_slugs]
        stations = stations[offset or 0:]
        return stations if limit is None else stations[:limit]

    def resolve_submit_listening_events(self, _root: Any, info: GraphQLResolveInfo,
                                        events: list[dict[str, Any]]) -> dict[str, Any]:
        headers = info.context["headers"]
        with self.lock:
            require_key(self.state.get("api_key"), headers.get("X-Streaming-Api-Key"), presented_key(headers))
            if self.state.get("refuse_nul", True) and holds_nul(events):
                # psycopg's own message; the resolver's exception becomes a GraphQL error.
                raise GraphQLError("A string literal cannot contain NUL (0x00) characters.")
            outcome = self.state.get("submit_result", "ok")
            if outcome == "operation_info":
                return {"__typename": "OperationInfo", "messages": [
                    {"kind": "ERROR", "message": "Injected OperationInfo", "field": None, "code": "TEST"}]}
            if outcome == "unsuccessful":
                return {"__typename": "SubmitListeningEventsResponse", "success": False,
                        "processed_count": 0, "message": "Injected unsuccessful result"}
            self._record_events(events)
        return {"__typename": "SubmitListeningEventsResponse", "success": True,
                "processed_count": len(events), "message": f"Processed {len(events)} events"}

    def _record_events(self, events: list[dict[str, Any]]) -> None:
        """Append one batch (caller holds the lock); batch numbers continue across restarts."""
        recorded = self.state.setdefault("events", [])
        batch = (recorded[-1].get("batch") or 0) + 1 if recorded else 1
        received_at = now_iso()
        recorded.extend({**event, "received_at": received_at, "batch": batch} for event in events)
        self._save()

    def resolve_trigger_metadata_fetch(self, _root: Any, info: GraphQLResolveInfo,
                                       station_id: int) -> dict[str, Any]:
        with self.lock:
            require_key(self.state.get("token"), presented_key(info.context["headers"]))
            self.state.setdefault("metadata_fetches", []).append(
                {"station_id": station_id, "received_at": now_iso()})
            self._save()
        return {"success": True, "message": f"Metadata fetch triggered for station {station_id}"}


def is_query(params: dict[str, Any]) -> bool:
    """Whether the selected operation is a query; an unparsable document is left to execute() to report."""
    try:
        document = parse(params["query"])
    except GraphQLError:
        return False
    operation = get_operation_ast(document, params.get("operationName"))
    return operation is not None and operation.operation == OperationType.QUERY


def redirect_location(params: dict[str, Any]) -> str:
    pairs = {"query": params["query"]}
    if params.get("operationName"):
        pairs["operationName"] = params["operationName"]
    if params.get("variables") is not None:
        pairs["variables"] = json.dumps(params["variables"])
    return "/graphql?" + urlencode(pairs)


def check_params(params: Any) -> dict[str, Any]:
    if not isinstance(params, dict) or not isinstance(params.get("query"), str):
        raise BadRequest("expected a JSON object with a string 'query'")
    if not isinstance(params.get("variables"), (dict, type(None))):
        raise BadRequest("'variables' must be a JSON object")
    if not isinstance(params.get("operationName"), (str, type(None))):
        raise BadRequest("'operationName' must be a string")
    return params


def params_from_query_string(query_string: str) -> dict[str, Any]:
    fields = {name: values[0] for name, values in parse_qs(query_string).items()}
    if "variables" in fields:
        try:
            fields["variables"] = json.loads(fields["variables"])
        except ValueError as error:
            raise BadRequest(f"'variables' is not JSON: {error}") from error
    return fields


class Handler(BaseHTTPRequestHandler):
    server: FakeBackendServer

    @property
    def backend(self) -> Backend:
        return self.server.backend

    # --- routing -------------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        routes = {
            "/graphql": self.handle_graphql,
            "/healthz": lambda: self.send_body(200, b"ok", "text/plain"),
            "/admin/state": lambda: self.send_json(200, self.backend.snapshot()),
            "/admin/events": lambda: self.send_json(200, self.backend.snapshot("events")),
            "/admin/requests": lambda: self.send_json(200, self.backend.recorded_requests()),
        }
        routes.get(path, self.send_not_found)()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path == "/graphql":
            self.handle_graphql()
        elif path == "/admin/reset":
            self.read_body()
            self.send_json(200, self.backend.reset())
        else:
            self.send_not_found()

    def do_PUT(self) -> None:
        if urlsplit(self.path).path != "/admin/state":
            self.send_not_found()
            return
        try:
            patch = validate_patch(self.read_json())
        except BadRequest as error:
            self.send_json(400, {"error": str(error)})
            return
        self.send_json(200, self.backend.update(patch))

    # --- /graphql ------------------------------------------------------------------------------------------

    def handle_graphql(self) -> None:
        params: dict[str, Any] | None = None
        problem: BadRequest | None = None
        try:
            params = self.graphql_params()
        except BadRequest as error:
            problem = error
        self.backend.record_request(self.command, self.path, self.headers,
                                    params.get("operationName") if params else None)
        mode, hang_seconds = self.backend.take_failure()
        if mode == "hang":
            time.sleep(hang_seconds)
        elif mode is not None:
            self.inject_failure(mode)
            return
        # Only the first hop: the Location carries a query string, so a repeated POST (307, 308) is answered.
        first_hop = self.command == "POST" and not urlsplit(self.path).query
        redirect = self.backend.redirect_all() if first_hop else None
        if params is None:
            self.send_json(400, {"errors": [{"message": str(problem)}]})
        elif redirect is not None:
            location = redirect["origin"] + redirect_location(params)
            self.send_body(redirect["status"], b"", "text/plain", {"Location": location})
        elif self.command == "POST" and self.backend.redirects_queries() and is_query(params):
            self.send_body(302, b"", "text/plain", {"Location": redirect_location(params)})
        else:
            self.send_json(200, self.backend.execute(params, self.headers))

    def graphql_params(self) -> dict[str, Any]:
        if self.command == "GET":
            return check_params(params_from_query_string(urlsplit(self.path).query))
        return check_params(self.read_json())

    def inject_failure(self, mode: str) -> None:
        if mode == "500":
            self.send_body(500, ERROR_500_BODY, "text/html; charset=utf-8")
        elif mode == "malformed":
            self.send_body(200, MALFORMED_BODY, "application/json")
        elif mode == "errors":
            self.send_body(200, INJECTED_ERRORS_BODY, "application/json")
        elif mode == "close":
            # Nothing is written: the client sees the connection end before any status line.
            self.close_connection = True
            self.log_message('"%s" closed without response', self.requestline)

    # --- I/O -----------------------------------------------------------------------------------------------

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def read_json(self) -> Any:
        try:
            return json.loads(self.read_body() or b"null")
        except ValueError as error:
            raise BadRequest(f"body is not JSON: {error}") from error

    def send_body(self, status: int, body: bytes, content_type: str,
                  headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, payload: Any) -> None:
        self.send_body(status, json.dumps(payload).encode(), "application/json")

    def send_not_found(self) -> None:
        self.send_json(404, {"error": f"no route for {self.command} {urlsplit(self.path).path}"})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (signature of the base class)
        sys.stderr.write(f"fake_backend: {self.address_string()} {format % args}\n")


class FakeBackendServer(ThreadingHTTPServer):
    daemon_threads = True  # a "hang" in progress must not delay shutdown

    def __init__(self, address: tuple[str, int], backend: Backend) -> None:
        super().__init__(address, Handler)
        self.backend = backend

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout during "hang") is expected, not worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def make_server(host: str = "127.0.0.1", port: int = 8000, schema: Path = DEFAULT_SCHEMA,
                state_file: Path | None = None) -> FakeBackendServer:
    """Bind the server (port 0 picks a free port: read it back from server.server_port)."""
    return FakeBackendServer((host, port), Backend(Path(schema), Path(state_file) if state_file else None))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fake radio-crestin GraphQL backend for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--schema", type=Path, default=DEFAULT_SCHEMA, help="GraphQL SDL file")
    parser.add_argument("--state-file", type=Path, help="JSON file the state is loaded from and saved to")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = make_server(args.host, args.port, args.schema, args.state_file)

    def stop(_signum: int, _frame: Any) -> None:
        # shutdown() waits for serve_forever() to return, so it cannot run in this (the serving) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    sys.stderr.write(f"fake_backend: listening on http://{host}:{port}/graphql\n")
    try:
        server.serve_forever()
    finally:
        server.server_close()
    sys.stderr.write("fake_backend: stopped\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A minimal GraphQL-over-HTTP client for the radio-crestin backend.

Every way the backend can fail (refused, timeout, 5xx, a body that is not JSON, GraphQL `errors`, no `data`)
becomes one BackendError with a message an operator can act on, escaped so that it fits one journal line.

Redirects are followed by hand, because requests would do two wrong things: it keeps every header but
`Authorization` on a redirect to another host (the analytics key `X-Streaming-Api-Key` would go with it), and it
turns a POST into a GET on a 302 (a mutation would be lost, or run twice). So a mutation never follows a
redirect, and a query follows only redirects to its endpoint's own origin (the backend answers a POSTed query
with a 302 to the same-origin GET URL that carries it). Anything else is a BackendError, sent nowhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin

import requests

from radio_hls.common.contract import USER_AGENT
from radio_hls.stations.station import one_line, origin, shown

# A backend's redirect chain longer than this is a loop, not a move.
MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
# 307 and 308 repeat the request as it was; 301, 302 and 303 make it a GET (what browsers and requests do).
REPEAT_STATUSES = (307, 308)
# GraphQL messages put into an error: how many, and how much of each.
MAX_MESSAGES = 5
MESSAGE_LIMIT = 200
# A document is plainly a query when its first operation is `query` or the `{` shorthand, after comments and
# ignored characters. Anything else, or a document that names a mutation or subscription anywhere, is treated as a
# mutation: never sent twice, never redirected.
PLAIN_QUERY = re.compile(r"(?:[\s,\ufeff]|#[^\n\r]*)*(?:\{|query\b)")
OTHER_OPERATION = re.compile(r"\b(?:mutation|subscription)\b")


class BackendError(RuntimeError):
    """The backend did not give a usable answer.

    The message often carries the backend's own text (GraphQL messages, a Location): it is escaped here, once for
    every caller (sync, watch, analytics, now playing), so that a newline in it cannot forge a journal line.
    """

    def __init__(self, message: object) -> None:
        super().__init__(one_line(str(message), 1000))


def is_query(document: str) -> bool:
    """Whether a document is plainly a query, the only kind that may follow a (same-origin) redirect."""
    return PLAIN_QUERY.match(document) is not None and OTHER_OPERATION.search(document) is None


def same_origin(url: str, endpoint: str) -> bool:
    """Whether `url` is on the endpoint's origin; never for a URL whose port cannot be read."""
    try:
        return origin(url) == origin(endpoint)
    except ValueError:
        return False


def show_origin(url: str) -> str:
    try:
        scheme, host, port = origin(url)
    except ValueError:
        return shown(url)
    return shown(f"{scheme}://{host}:{port}")


def next_location(endpoint: str, current: str, response: requests.Response, mutation: bool) -> str:
    """Where a redirect answer points, when it may be followed; BackendError when it may not."""
    location = urljoin(current, response.headers.get("Location", ""))
    status = response.status_code
    if mutation:
        raise BackendError(f"{endpoint} answered a mutation with HTTP {status} (a redirect to {shown(location)}); "
                           "mutations never follow redirects: set the endpoint to the URL that answers")
    if not same_origin(location, endpoint):
        raise BackendError(f"{endpoint} redirected to another origin, {show_origin(location)} (HTTP {status}); only "
                           f"redirects within {show_origin(endpoint)} are followed, so its credentials stay there")
    return location


def send(client: Any, endpoint: str, body: dict[str, Any], headers: Mapping[str, str], timeout: float,
         mutation: bool) -> requests.Response:
    """POST the body, following only the redirects next_location() allows, with the same headers."""
    response: requests.Response = client.post(endpoint, json=body, headers=headers, timeout=(5.0, timeout),
                                              allow_redirects=False)
    current = endpoint
    for _hop in range(MAX_REDIRECTS):
        if response.status_code not in REDIRECT_STATUSES or "Location" not in response.headers:
            return response
        current = next_location(endpoint, current, response, mutation)
        if response.status_code in REPEAT_STATUSES:
            response = client.post(current, json=body, headers=headers, timeout=(5.0, timeout),
                                   allow_redirects=False)
        else:
            response = client.get(current, headers=headers, timeout=(5.0, timeout), allow_redirects=False)
    if response.status_code in REDIRECT_STATUSES:
        raise BackendError(f"{endpoint} redirected more than {MAX_REDIRECTS} times")
    return response


def graphql_messages(errors: Any) -> str:
    """The messages of a GraphQL `errors` list, shortened: the list is the backend's, of any size."""
    items = errors if isinstance(errors, list) else [errors]
    messages = [str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in items[:MAX_MESSAGES]]
    text = "; ".join(one_line(message, MESSAGE_LIMIT) for message in messages)
    return text if len(items) <= MAX_MESSAGES else f"{text}; and {len(items) - MAX_MESSAGES} more"


def execute(
    endpoint: str,
    document: str,
    variables: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 20.0,
    session: requests.Session | None = None,
) -> dict[str, Any]:
    """POST a document and return its `data` (redirects: see the module's docstring)."""
    body: dict[str, Any] = {"query": document}
    if variables is not None:
        body["variables"] = dict(variables)
    all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
    try:
        response = send(session or requests, endpoint, body, all_headers, timeout, mutation=not is_query(document))
    except requests.Timeout:
        raise BackendError(f"no answer from {endpoint} within {timeout:g} s") from None
    except requests.RequestException as error:
        raise BackendError(f"cannot reach {endpoint}: {error.__class__.__name__}: {error}") from None

    if response.status_code >= 300:
        raise BackendError(f"{endpoint} answered HTTP {response.status_code}")
    try:
        payload = response.json()
    except ValueError:
        raise BackendError(f"{endpoint} answered with malformed JSON: {shown(response.text[:80])}") from None
    if not isinstance(payload, dict):
        raise BackendError(f"{endpoint} answered with a JSON {type(payload).__name__}, not an object")
    errors = payload.get("errors")
    if errors:
        raise BackendError(f"GraphQL errors from {endpoint}: {graphql_messages(errors)}")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise BackendError(f"{endpoint} answered without data")
    return data

"""A minimal GraphQL-over-HTTP client for the radio-crestin backend.

Every way the backend can fail (refused, timeout, 5xx, a body that is not JSON, GraphQL `errors`, no `data`)
becomes one BackendError with a message an operator can act on.
"""

from __future__ import annotations

from typing import Any, Mapping

import requests

USER_AGENT = "radio-hls/1.0"


class BackendError(RuntimeError):
    """The backend did not give a usable answer."""


def execute(
    endpoint: str,
    document: str,
    variables: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 20.0,
    session: requests.Session | None = None,
) -> dict[str, Any]:
    """POST a document and return its `data`.

    The backend may answer a POSTed query with a 302 to a GET URL carrying the query; requests follows it
    as a GET and keeps the Authorization header because the host is the same.
    """
    body: dict[str, Any] = {"query": document}
    if variables is not None:
        body["variables"] = dict(variables)
    all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
    client = session or requests
    try:
        response = client.post(endpoint, json=body, headers=all_headers, timeout=(5.0, timeout))
    except requests.Timeout:
        raise BackendError(f"no answer from {endpoint} within {timeout:g} s") from None
    except requests.RequestException as error:
        raise BackendError(f"cannot reach {endpoint}: {error.__class__.__name__}: {error}") from None

    if response.status_code >= 300:
        raise BackendError(f"{endpoint} answered HTTP {response.status_code}")
    try:
        payload = response.json()
    except ValueError:
        snippet = response.text[:80].replace("\n", " ")
        raise BackendError(f"{endpoint} answered with malformed JSON: {snippet!r}") from None
    if not isinstance(payload, dict):
        raise BackendError(f"{endpoint} answered with a JSON {type(payload).__name__}, not an object")
    errors = payload.get("errors")
    if errors:
        messages = "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)
        raise BackendError(f"GraphQL errors from {endpoint}: {messages}")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise BackendError(f"{endpoint} answered without data")
    return data

"""Shared set-up of the host-side unit tests.

- files/scripts and molecule/resources/backend go on sys.path: the scripts import each other as top-level
  modules (`from hls_station import ...`), and the fake backend is imported as `fake_backend`.
- `backend`: the fake GraphQL backend (fake_backend.py), in a thread on 127.0.0.1 with a free port.
- `url`: that backend's base URL (what test_fake_backend.py uses).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = REPO / "files" / "scripts"
BACKEND_DIR = REPO / "molecule" / "resources" / "backend"

for _directory in (SCRIPTS_DIR, BACKEND_DIR):
    if str(_directory) not in sys.path:
        sys.path.insert(0, str(_directory))

import fake_backend  # noqa: E402  (needs the sys.path entry above)


@dataclass(frozen=True)
class FakeBackend:
    """A running fake backend: its base URL and a few admin helpers."""

    url: str
    server: Any

    @property
    def graphql(self) -> str:
        """The GraphQL endpoint, as GRAPHQL_ENDPOINT would name it."""
        return f"{self.url}/graphql"

    def set_state(self, **state: Any) -> dict[str, Any]:
        """PUT /admin/state (shallow merge) and return the new state."""
        response = requests.put(f"{self.url}/admin/state", json=state, timeout=5)
        response.raise_for_status()
        return response.json()

    def recorded_requests(self) -> list[dict[str, Any]]:
        """GET /admin/requests: the /graphql requests seen so far."""
        response = requests.get(f"{self.url}/admin/requests", timeout=5)
        response.raise_for_status()
        return response.json()


@pytest.fixture
def backend() -> Iterator[FakeBackend]:
    """A fresh in-process fake backend on a free loopback port."""
    server = fake_backend.make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield FakeBackend(url=f"http://127.0.0.1:{server.server_port}", server=server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def url(backend: FakeBackend) -> str:
    """The base URL of a fresh fake backend."""
    return backend.url

"""Role hls's placement settings: what it writes into sync.env for the sync, and what it refuses before any change.

Run on the controller as test_role_input.py runs the checks (tasks/assert.yml only), in an inventory whose group
hls_origins holds localhost and two hosts that are never contacted; sync.env is rendered from the role's template
into the test's directory and read back by the sync's own parser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values
from test_role_input import REPO, check_input

from radio_hls.stations.placement import Placement, placement_from_env

PLACEMENT_KEYS = ("HLS_ORIGINS", "HLS_ORIGIN_SELF", "HLS_STATION_REPLICAS", "HLS_STATION_PINS")
STATIC = {"slug": "static-one", "stream_url": "http://radio.example/one.mp3"}


def network(tmp_path: Path, group: str = "localhost\nhls-2.example hls_common_origin_address=10.0.0.2:8080\n"
                                          "hls-3.example\n") -> str:
    """An inventory file: the group hls_origins, localhost in it unless told ."""
    path = tmp_path / "hosts.ini"
    path.write_text(f"localhost ansible_connection=local\n[hls_origins]\n{group}")
    return str(path)


def rendered(tmp_path: Path, variables: dict[str, Any], inventory: str) -> dict[str, str]:
    """sync.env's placement settings as the role writes them with `variables`."""
    dest = tmp_path / "sync.env"
    render = {"ansible.builtin.template": {"src": str(REPO / "templates/etc/hls/sync.env.j2"), "dest": str(dest),
                                           "mode": "0600"}}
    result = check_input(tmp_path, "hls", variables, inventory, then=[render])
    assert result.returncode == 0, result.stdout
    values = dotenv_values(dest, interpolate=False)
    return {key: values[key] or "" for key in PLACEMENT_KEYS}


def test_the_role_writes_the_network_the_sync_reads(tmp_path: Path) -> None:
    variables = {"hls_stations": [{**STATIC, "origins": ["hls-2.example"]}],
                 "hls_station_pins": {"backend-one": ["localhost", "hls-3.example"]}}
    settings = rendered(tmp_path, variables, network(tmp_path))
    assert settings == {"HLS_ORIGINS": "localhost:80 10.0.0.2:8080 hls-3.example:80", "HLS_ORIGIN_SELF": "localhost:80",
                        "HLS_STATION_REPLICAS": "2",
                        "HLS_STATION_PINS": "static-one=10.0.0.2:8080 backend-one=localhost:80,hls-3.example:80"}
    origins = ("localhost:80", "10.0.0.2:8080", "hls-3.example:80")
    assert placement_from_env(settings) == Placement(origins, "localhost:80", 2, {
        "static-one": ("10.0.0.2:8080",), "backend-one": ("localhost:80", "hls-3.example:80")})


@pytest.mark.parametrize(("group", "replicas", "origins"), [
    pytest.param(None, "1", "", id="no-network"),
    pytest.param("localhost\n", "1", "localhost:80", id="one-origin"),
])
def test_a_host_on_its_own_runs_every_station(tmp_path: Path, group: str | None, replicas: str, origins: str) -> None:
    inventory = "localhost," if group is None else network(tmp_path, group)
    settings = rendered(tmp_path, {"hls_stations": [STATIC]}, inventory)
    assert (settings["HLS_STATION_REPLICAS"], settings["HLS_ORIGINS"], settings["HLS_STATION_PINS"]) == (
        replicas, origins, "")
    placement = placement_from_env(settings)
    assert placement is None or placement.runs_here("static-one")


@pytest.mark.parametrize(("variables", "group", "refusal"), [
    pytest.param({"hls_station_pins": {"backend-one": ["hls-9.example"]}}, None,
                 "station backend-one is pinned to ['hls-9.example']", id="unknown-host"),
    pytest.param({"hls_stations": [{**STATIC, "origins": ["localhost", "nowhere"]}]}, None,
                 "station static-one is pinned to ['localhost', 'nowhere']", id="static-unknown-host"),
    pytest.param({"hls_station_pins": {"backend-one": []}}, None, "station backend-one is pinned to []", id="empty"),
    pytest.param({"hls_station_pins": {"backend-one": "localhost"}}, None, "station backend-one is pinned to",
                 id="not-a-list"),
    pytest.param({"hls_station_pins": {"Backend One": ["localhost"]}}, None, "station Backend One is pinned",
                 id="bad-slug"),
    pytest.param({"hls_station_pins": ["backend-one"]}, None, "hls_station_pins a mapping", id="pins-not-a-mapping"),
    pytest.param({"hls_stations": [{**STATIC, "origins": ["localhost"]}],
                  "hls_station_pins": {"static-one": ["localhost"]}}, None, "not both", id="pinned-twice"),
    pytest.param({"hls_station_replicas": 0}, None, "hls_station_replicas a whole number", id="no-replicas"),
    pytest.param({"hls_station_replicas": 4}, None, "hls_station_replicas a whole number", id="more-than-origins"),
    pytest.param({}, "hls-2.example\nhls-3.example\n", "this host (localhost, localhost:80) must be one of them",
                 id="not-an-origin"),
    pytest.param({}, "localhost\nhls-2.example hls_common_origin_address=localhost:80\n",
                 "needs an hls_common_origin_address of its own", id="same-address"),
])
def test_a_bad_placement_is_refused_before_any_change(tmp_path: Path, variables: dict[str, Any], group: str | None,
                                                       refusal: str) -> None:
    inventory = network(tmp_path) if group is None else network(tmp_path, group)
    result = check_input(tmp_path, "hls", variables, inventory)
    assert result.returncode != 0, result.stdout
    assert refusal in " ".join(result.stdout.split()), result.stdout

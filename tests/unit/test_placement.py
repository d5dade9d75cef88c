"""Tests of radio_hls/stations/placement.py: the ring is nginx's own, and moving origins moves only what must move.

The ring is checked against a real nginx (Debian's, which `make unit` installs through tools/ensure-packages.sh):
a throwaway one on loopback ports, whose upstreams hash `$arg_k consistent` over local servers that each answer
with their own port, and answer 404 when asked to, so the retry along the ring (proxy_next_upstream http_404) can be
followed too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import throwaway_nginx
from patience import GENEROUS_TIMEOUT
from throwaway_nginx import free_ports

from radio_hls.common.contract import BadSetting
from radio_hls.stations.placement import POINTS_PER_SERVER, Placement, Ring, placement_from_env, server_base

# Slugs as a network names its stations; enough that a share of them measures the ring, not chance.
SLUGS = [f"station-{number}" for number in range(3000)]
ORIGINS = ("origin-a.example:80", "origin-b.example:80", "origin-c.example:80")
NEW = "origin-d.example:80"


@dataclass(frozen=True)
class Nginx:
    front: int  # the port of the edge-like server: /<upstream name>?k=<key>[&miss1=<port>&miss2=<port>]
    upstreams: dict[str, list[str]]  # upstream name -> its `server` strings

    def answer(self, session: requests.Session, upstream: str, key: str, *misses: int) -> requests.Response:
        params = {"k": key, **{f"miss{number}": str(port) for number, port in enumerate(misses, 1)}}
        return session.get(f"http://127.0.0.1:{self.front}/{upstream}", params=params, timeout=GENEROUS_TIMEOUT)


def nginx_conf(prefix: Path, front: int, backends: Sequence[int], upstreams: dict[str, list[str]]) -> str:
    """One server on `front` with a location per upstream, and a server per backend port that answers its own
    port, or 404 when the request names that port in miss1 or miss2."""
    lines = [f"pid {prefix}/nginx.pid;", f"error_log {prefix}/error.log notice;", "worker_processes 1;",
             "events { worker_connections 64; }", "http {", "access_log off;", "default_type text/plain;"]
    lines += throwaway_nginx.temp_paths(prefix)
    for name, servers in upstreams.items():
        lines.append(f"upstream {name} {{ hash $arg_k consistent; {' '.join(f'server {s};' for s in servers)} }}")
    for port in backends:
        lines.append(f"server {{ listen 127.0.0.1:{port}; location / {{ "
                     "if ($arg_miss1 = $server_port) { return 404; } if ($arg_miss2 = $server_port) { return 404; } "
                     "return 200 $server_port; } }")
    lines.append(f"server {{ listen 127.0.0.1:{front};")
    lines += [f"location = /{name} {{ proxy_pass http://{name}; proxy_next_upstream error timeout http_404; }}"
              for name in upstreams]
    lines += ["}", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """A throwaway nginx: upstream `three` over three local servers, `five` over those and two more."""
    prefix = tmp_path_factory.mktemp("nginx")
    front, *backends = free_ports(6)
    servers = [f"127.0.0.1:{port}" for port in backends]
    upstreams = {"three": servers[:3], "five": servers}
    server = Nginx(front, upstreams)

    def up() -> bool:
        with requests.Session() as session:
            return server.answer(session, "three", "probe").status_code == 200

    process = throwaway_nginx.start(prefix, nginx_conf(prefix, front, backends, upstreams), up)
    try:
        yield server
    finally:
        throwaway_nginx.stop(process)


def port_of(server: str) -> int:
    return int(server.rpartition(":")[2])


@pytest.mark.parametrize("upstream", ["three", "five"])
def test_nginx_sends_a_slug_to_the_first_origin_of_its_preference_list(nginx: Nginx, upstream: str) -> None:
    ring = Ring(nginx.upstreams[upstream])
    with requests.Session() as session:
        answers = {slug: nginx.answer(session, upstream, slug).text for slug in SLUGS[:1000]}
    expected = {slug: str(port_of(ring.preference(slug)[0])) for slug in answers}
    assert [slug for slug in answers if answers[slug] != expected[slug]] == []
    # Every server answers its share of slugs: no agreement by chance on one server.
    assert len(set(answers.values())) == len(nginx.upstreams[upstream])


def test_a_404_sends_nginx_on_along_the_ring_as_the_preference_list_goes(nginx: Nginx) -> None:
    ring = Ring(nginx.upstreams["five"])
    wrong = []
    with requests.Session() as session:
        for slug in SLUGS[:300]:
            first, second, third = map(port_of, ring.preference(slug)[:3])
            answers = (nginx.answer(session, "five", slug, first).text,
                       nginx.answer(session, "five", slug, first, second).text)
            if answers != (str(second), str(third)):
                wrong.append((slug, answers, (second, third)))
    assert wrong == []


# --- the ring without nginx ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("server", "base"), [
    ("origin-a.example:80", b"origin-a.example\0" + b"80"),
    ("[::1]:8080", b"[::1]\0" + b"8080"),  # split at the last ':'
    ("origin-a.example", b"origin-a.example\0"),  # no port
    ("origin-a.example:", b"origin-a.example\0"),  # an empty port
    ("a:b", b"a:b\0"),  # not digits after the last ':': all host
    ("unix:/run/hls.sock", b"/run/hls.sock\0"),
])
def test_a_server_is_hashed_from_host_nul_port_as_nginx_splits_it(server: str, base: bytes) -> None:
    assert server_base(server) == base


def placed(origins: Sequence[str], replicas: int = 2) -> dict[str, set[str]]:
    """Each slug's origins."""
    placement = Placement(tuple(origins), origins[0], replicas)
    return {slug: set(placement.origins_of(slug)) for slug in SLUGS}


def shown_fraction(what: str, fraction: float, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\n{what}: {fraction:.3f} of {len(SLUGS)} stations")


def test_the_order_of_the_origin_list_does_not_matter() -> None:
    forward, backward = Ring(ORIGINS + (NEW,)), Ring((NEW, *reversed(ORIGINS)))
    assert len(forward.hashes) == 4 * POINTS_PER_SERVER  # no two points alike, so no tie to break
    assert all(forward.preference(slug) == backward.preference(slug) for slug in SLUGS)


def test_each_origin_runs_about_its_share(capsys: pytest.CaptureFixture[str]) -> None:
    placement = placed(ORIGINS)
    for origin in ORIGINS:
        share = sum(origin in origins for origins in placement.values()) / len(SLUGS)
        shown_fraction(f"share of {origin} (2 replicas on 3 origins: 0.667 expected)", share, capsys)
        assert 0.55 <= share <= 0.78


def test_adding_a_fourth_origin_moves_only_stations_onto_it(capsys: pytest.CaptureFixture[str]) -> None:
    before, after = placed(ORIGINS), placed(ORIGINS + (NEW,))
    moved = [slug for slug in SLUGS if before[slug] != after[slug]]
    # A station that moved gained the new origin and lost exactly one of its old ones; the others kept theirs.
    assert [slug for slug in moved if after[slug] - before[slug] != {NEW} or len(before[slug] - after[slug]) != 1] == []
    fraction = len(moved) / len(SLUGS)
    shown_fraction("moved when a 4th origin joins 3 (2 replicas: 2/4 expected)", fraction, capsys)
    assert 0.4 <= fraction <= 0.6
    # The edges' first choice changes only for stations whose first origin is now the new one.
    old_ring, new_ring = Ring(ORIGINS), Ring(ORIGINS + (NEW,))
    assert {new_ring.preference(slug)[0] for slug in SLUGS
            if new_ring.preference(slug)[0] != old_ring.preference(slug)[0]} == {NEW}


def test_removing_an_origin_moves_only_its_stations(capsys: pytest.CaptureFixture[str]) -> None:
    gone = ORIGINS[1]
    before = placed(ORIGINS + (NEW,))
    after = placed([origin for origin in ORIGINS + (NEW,) if origin != gone])
    moved = [slug for slug in SLUGS if before[slug] != after[slug]]
    assert moved == [slug for slug in SLUGS if gone in before[slug]]
    assert [slug for slug in moved
            if before[slug] - after[slug] != {gone} or len(after[slug] - before[slug]) != 1] == []
    shown_fraction("moved when one of 4 origins leaves (2 replicas: 2/4 expected)", len(moved) / len(SLUGS), capsys)


@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
def test_a_station_runs_on_the_first_replicas_of_its_preference_list(replicas: int) -> None:
    origins = ORIGINS + (NEW,)
    placement = Placement(origins, NEW, replicas)
    for slug in SLUGS[:300]:
        chosen = placement.origins_of(slug)
        assert chosen == tuple(placement.ring.preference(slug)[:replicas])
        assert len(set(chosen)) == replicas
        assert placement.runs_here(slug) == (NEW in chosen)
    everywhere = Placement(origins, NEW, len(origins))
    assert all(everywhere.runs_here(slug) for slug in SLUGS)


def test_a_pin_overrides_the_ring() -> None:
    slug = next(slug for slug in SLUGS if ORIGINS[2] not in placed(ORIGINS)[slug])
    pins = {slug: (ORIGINS[2],), "other": (ORIGINS[0], ORIGINS[1], ORIGINS[2])}
    views = {origin: Placement(ORIGINS, origin, 2, pins) for origin in ORIGINS}
    assert [origin for origin, view in views.items() if view.runs_here(slug)] == [ORIGINS[2]]
    assert all(view.runs_here("other") for view in views.values())  # a pin may name more origins than replicas
    unpinned = next(other for other in SLUGS if other != slug)
    assert views[ORIGINS[0]].origins_of(unpinned) == Placement(ORIGINS, ORIGINS[0], 2).origins_of(unpinned)


def test_one_origin_runs_every_station() -> None:
    alone = Placement(("origin-a.example:80",), "origin-a.example:80", 1)
    assert all(alone.runs_here(slug) for slug in SLUGS)


# --- the settings (sync.env) ---------------------------------------------------------------------------------

SETTINGS = {"HLS_ORIGINS": " ".join(ORIGINS), "HLS_ORIGIN_SELF": ORIGINS[1], "HLS_STATION_REPLICAS": "2",
            "HLS_STATION_PINS": f"pinned={ORIGINS[0]},{ORIGINS[2]} solo={ORIGINS[1]}"}


def test_the_settings_make_the_placement() -> None:
    placement = placement_from_env(SETTINGS)
    assert placement == Placement(ORIGINS, ORIGINS[1], 2, {"pinned": (ORIGINS[0], ORIGINS[2]), "solo": (ORIGINS[1],)})
    assert not placement.runs_here("pinned") and placement.runs_here("solo")


@pytest.mark.parametrize("origins", ["", "   "])
def test_without_origins_there_is_no_placement(origins: str) -> None:
    assert placement_from_env({**SETTINGS, "HLS_ORIGINS": origins}) is None
    assert placement_from_env({}) is None


@pytest.mark.parametrize(("change", "message"), [
    pytest.param({"HLS_ORIGINS": f"{ORIGINS[0]} {ORIGINS[1]} {ORIGINS[0]}"},
                 "HLS_ORIGINS lists an origin more than once", id="duplicate-origin"),
    pytest.param({"HLS_ORIGIN_SELF": ""}, "HLS_ORIGIN_SELF is not set", id="no-self"),
    pytest.param({"HLS_ORIGIN_SELF": NEW}, f"HLS_ORIGIN_SELF '{NEW}' is not one of HLS_ORIGINS", id="self-elsewhere"),
    pytest.param({"HLS_STATION_REPLICAS": ""}, "HLS_STATION_REPLICAS is not set", id="no-replicas"),
    pytest.param({"HLS_STATION_REPLICAS": "0"}, "HLS_STATION_REPLICAS '0' is not a whole number from 1 to 3",
                 id="zero-replicas"),
    pytest.param({"HLS_STATION_REPLICAS": "4"}, "HLS_STATION_REPLICAS '4' is not a whole number from 1 to 3",
                 id="more-replicas-than-origins"),
    pytest.param({"HLS_STATION_REPLICAS": "two"}, "HLS_STATION_REPLICAS 'two'", id="replicas-word"),
    pytest.param({"HLS_STATION_REPLICAS": "-1"}, "HLS_STATION_REPLICAS '-1'", id="negative-replicas"),
    pytest.param({"HLS_STATION_PINS": f"one={NEW}"}, "HLS_STATION_PINS: 'one=origin-d.example:80' is not",
                 id="unknown-origin"),
    pytest.param({"HLS_STATION_PINS": "one="}, "HLS_STATION_PINS: 'one=' is not", id="no-origin"),
    pytest.param({"HLS_STATION_PINS": "one"}, "HLS_STATION_PINS: 'one' is not", id="no-equals"),
    pytest.param({"HLS_STATION_PINS": f"one={ORIGINS[0]},{ORIGINS[0]}"}, "HLS_STATION_PINS: 'one=", id="same-twice"),
    pytest.param({"HLS_STATION_PINS": f"one={ORIGINS[0]} one={ORIGINS[1]}"}, f"HLS_STATION_PINS: 'one={ORIGINS[1]}'",
                 id="slug-twice"),
    pytest.param({"HLS_STATION_PINS": f"Bad_Slug={ORIGINS[0]}"}, "HLS_STATION_PINS: slug 'Bad_Slug' does not match",
                 id="bad-slug"),
])
def test_a_bad_setting_is_refused_by_name(change: dict[str, str], message: str) -> None:
    with pytest.raises(BadSetting) as caught:
        placement_from_env({**SETTINGS, **change})
    assert str(caught.value).startswith(message)

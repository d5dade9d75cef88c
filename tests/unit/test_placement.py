"""Tests of radio_hls/stations/placement.py: the ring is nginx's own, and moving origins moves only what must move.

The ring is checked against a real nginx (Debian's, which `make unit` installs through tools/ensure-packages.sh):
a throwaway one on loopback ports, whose upstreams hash `$arg_k consistent` over local servers that each answer
with their own port, and answer 404 when asked to, so the retry along the ring (proxy_next_upstream http_404) can be
followed too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from patience import GENEROUS_TIMEOUT, wait_for

from radio_hls.common.contract import BadSetting
from radio_hls.stations.placement import POINTS_PER_SERVER, Placement, Ring, placement_from_env, server_base

# Slugs as a network names its stations; enough that a share of them measures the ring, not chance.
SLUGS = [f"station-{number}" for number in range(3000)]
ORIGINS = ("origin-a.example:80", "origin-b.example:80", "origin-c.example:80")
NEW = "origin-d.example:80"


def free_ports(count: int) -> list[int]:
    """Loopback ports nothing listens on now (held open together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    with closing(sockets[0]):
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        ports = [sock.getsockname()[1] for sock in sockets]
        for sock in sockets[1:]:
            sock.close()
    return ports


def nginx_binary() -> str:
    # Debian's nginx is /usr/sbin/nginx, on root's PATH but not always on a user's.
    found = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if found is None:
        pytest.fail("no nginx: `make unit` installs Debian's (tools/ensure-packages.sh nginx)")
    return found


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
    lines += [f"{kind}_temp_path {prefix}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")]
    for name, servers in upstreams.items():
        lines.append(f"upstream {name} {{ hash $arg_k consistent; {' '.join(f'server {s};' for s in servers)} }}")
    for port in backends:
        lines.append(f"server {{ listen 127.0.0.1:{port}; location / {{ if ($arg_miss1 = $server_port) {{ return 404; }} "
                     f"if ($arg_miss2 = $server_port) {{ return 404; }} return 200 $server_port; }} }}")
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
    (prefix / "nginx.conf").write_text(nginx_conf(prefix, front, backends, upstreams))
    with (prefix / "stderr").open("wb") as stderr:
        process = subprocess.Popen([nginx_binary(), "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                                    "-e", str(prefix / "error.log"), "-g", "daemon off;"],
                                   stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    server = Nginx(front, upstreams)
    try:
        def up() -> bool:
            if process.poll() is not None:
                pytest.fail(f"nginx exited: {(prefix / 'stderr').read_text()}{(prefix / 'error.log').read_text()}")
            try:
                with requests.Session() as session:
                    return server.answer(session, "three", "probe").status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(up, "the throwaway nginx to answer")
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=GENEROUS_TIMEOUT)


def port_of(server: str) -> int:
    return int(server.rpartition(":")[2])


@pytest.mark.parametrize("upstream", ["three", "five"])
def test_nginx_sends_a_slug_to_the_first_origin_of_its_preference_list(nginx: Nginx, upstream: str) -> None:
    ring = Ring(nginx.upstreams[upstream])
    chosen: dict[str, int] = {}
    with requests.Session() as session:
        answers = {slug: nginx.answer(session, upstream, slug).text for slug in SLUGS[:1000]}
    for slug, answer in answers.items():
        chosen[answer] = chosen.get(answer, 0) + 1
    expected = {slug: str(port_of(ring.preference(slug)[0])) for slug in answers}
    assert [slug for slug in answers if answers[slug] != expected[slug]] == []
    assert len(chosen) == len(nginx.upstreams[upstream])  # every server has its share: no trivial agreement


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

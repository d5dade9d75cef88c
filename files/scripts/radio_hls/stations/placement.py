"""Which origins run a station: the ring of nginx's `hash $slug consistent`, computed as nginx computes it.

The edges' upstream lists the origins (`server <address>;`, the role's __hls_common_origins) and hashes each
request's slug onto a ketama ring built from exactly those strings (ngx_http_upstream_hash_module.c,
ngx_http_upstream_init_chash): per server 160 points, each the CRC-32 of `host NUL port` followed by the previous
point's four bytes, little-endian (zero for the first). A key goes to the first point at or after its CRC-32,
wrapping round; a retry (proxy_next_upstream) walks on to the next point whose server was not tried yet. The
distinct servers of that walk are the slug's preference list, and a station runs on its first `replicas`: so the
edge's first choice for a station is an origin that runs it, and its retry on error, timeout or 404 the next one.
Every origin's sync computes this alone from the same list; no coordinator.

Adding an origin adds its points and takes over the arcs before them, so a station either keeps its origins or
swaps one of them for the new origin; removing one moves only the stations it ran.
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from radio_hls.common.contract import BadSetting, setting
from radio_hls.stations.station import InvalidStation, shown, validate_slug

# nginx's points per unit of a server's weight. The edges' servers keep the default weight 1: a weight would move
# stations there too, and this ring would have to know it.
POINTS_PER_SERVER = 160
DIGITS = frozenset("0123456789")


def server_base(server: str) -> bytes:
    """What nginx hashes a server's points from: host, a NUL byte, port. The port is the run of ASCII digits after
    the last ':' (`[::1]:80` splits as `[::1]` and `80`); a string that does not end that way is all host, and a
    `unix:` socket path is host with no port."""
    if server[:5].lower() == "unix:":
        return server[5:].encode() + b"\0"
    host, colon, port = server.rpartition(":")
    if not colon or not set(port) <= DIGITS:
        host, port = server, ""
    return host.encode() + b"\0" + port.encode()


class Ring:
    """The ketama ring of a list of servers, as one nginx upstream with `hash ... consistent` builds it."""

    def __init__(self, servers: Sequence[str]) -> None:
        points: dict[int, str] = {}
        for server in servers:
            base = zlib.crc32(server_base(server))
            previous = 0
            for _ in range(POINTS_PER_SERVER):
                previous = zlib.crc32(previous.to_bytes(4, "little"), base)
                # nginx keeps one point of each hash value; which one when two servers share a value is its
                # qsort's choice (one chance in about 10^5 for three servers). Here the first server listed keeps it.
                points.setdefault(previous, server)
        self.hashes = sorted(points)
        self.servers = [points[value] for value in self.hashes]
        self.distinct = len(set(servers))

    def preference(self, key: str) -> list[str]:
        """Every server in the order nginx tries them for `key`: the first at or after crc32(key), then each
        server not met yet as the walk goes on clockwise."""
        start = bisect.bisect_left(self.hashes, zlib.crc32(key.encode()))
        order: list[str] = []
        for step in range(len(self.hashes)):
            server = self.servers[(start + step) % len(self.hashes)]
            if server not in order:
                order.append(server)
                if len(order) == self.distinct:
                    break
        return order


@dataclass(frozen=True)
class Placement:
    """One origin's view of the network: every origin's address as the edges list them, its own, how many origins
    run a station, and the stations pinned to origins of the operator's choice (which override the ring)."""

    origins: tuple[str, ...]
    here: str
    replicas: int
    pins: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ring: Ring = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ring", Ring(self.origins))

    def origins_of(self, slug: str) -> tuple[str, ...]:
        """The origins that run the station: its pins, else the first `replicas` of its preference list."""
        return self.pins.get(slug) or tuple(self.ring.preference(slug)[: self.replicas])

    def runs_here(self, slug: str) -> bool:
        return self.here in self.origins_of(slug)


def placement_from_env(environ: Mapping[str, str]) -> Placement | None:
    """The placement sync.env sets, or None when HLS_ORIGINS is empty (a host on its own runs every station).
    BadSetting, naming the setting, for anything the edges and the other origins could not agree with."""
    origins = tuple(environ.get("HLS_ORIGINS", "").split())
    if not origins:
        return None
    if len(set(origins)) != len(origins):
        raise BadSetting(f"HLS_ORIGINS lists an origin more than once: {' '.join(origins)}")
    here = setting(environ, "HLS_ORIGIN_SELF")
    if here not in origins:
        raise BadSetting(f"HLS_ORIGIN_SELF {shown(here)} is not one of HLS_ORIGINS ({' '.join(origins)})")
    text = setting(environ, "HLS_STATION_REPLICAS")
    if not (set(text) <= DIGITS and 1 <= int(text) <= len(origins)):
        raise BadSetting(f"HLS_STATION_REPLICAS {shown(text)} is not a whole number from 1 to {len(origins)}, "
                         "the number of origins")
    return Placement(origins, here, int(text), parse_pins(environ.get("HLS_STATION_PINS", ""), origins))


def parse_pins(text: str, origins: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """HLS_STATION_PINS: `slug=origin,origin` entries separated by white space, each origin one of `origins`."""
    pins: dict[str, tuple[str, ...]] = {}
    for entry in text.split():
        slug, _equals, listed = entry.partition("=")
        pinned = tuple(listed.split(",")) if listed else ()
        try:
            validate_slug(slug)
        except InvalidStation as error:
            raise BadSetting(f"HLS_STATION_PINS: {error}") from None
        unknown = [origin for origin in pinned if origin not in origins]
        if not pinned or unknown or len(set(pinned)) != len(pinned) or slug in pins:
            raise BadSetting(f"HLS_STATION_PINS: {shown(entry)} is not slug=origin[,origin...] with each origin "
                             f"one of HLS_ORIGINS ({' '.join(origins)}), once, and each slug once")
        pins[slug] = pinned
    return pins

"""nginx session log lines -> listening requests, aggregated per session, station, type and time window.

The log format (templates/etc/nginx/nginx.conf.j2, `log_format hls_session escape=json`) is tab-separated
fields, each JSON-escaped by nginx: a field can never hold a raw tab or newline, so a line is split on tabs
and nothing else. Which field is where comes from contract.json's session_log_fields, the list the role writes
the log_format from: fields are found by their nginx variable's name, never by a position written here. Only
the few fields an event needs are unescaped, and only when they hold a backslash.

Speed matters (a million lines in a few seconds of plain Python): the loop in Aggregator.feed does one split
per line, no regex and no JSON. The log is parsed as bytes, never decoded as a whole: only what keys and events
need is decoded, once per distinct value, as UTF-8 with invalid bytes replaced (U+FFFD) field by field, which
gives what decoding the whole line gave, since tabs and newlines are ASCII and no invalid sequence spans them.
"""

from __future__ import annotations

import gc
import ipaddress
import json
import operator
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from radio_hls.common.contract import SESSION_ID_PATTERN, SESSION_LOG_FIELDS


@dataclass(frozen=True)
class LogFields:
    """Where each field the parser reads sits in a line (0-based), and how many fields a line has."""

    count: int
    msec: int
    slug: int
    session: int
    ref: int
    remote_addr: int
    peer_addr: int
    cf_ip: int
    method: int
    uri: int
    status: int
    bytes: int
    request_time: int
    user_agent: int
    referer: int

    @classmethod
    def of(cls, names: Sequence[str]) -> LogFields:
        """The positions of the nginx variables (names without "$") in a log_format's field list; KeyError names a
        variable the parser needs that the list lacks."""
        index = {name: position for position, name in enumerate(names)}
        return cls(count=len(names), msec=index["msec"], slug=index["hls_slug"], session=index["arg_s"],
                   ref=index["arg_ref"], remote_addr=index["remote_addr"], peer_addr=index["realip_remote_addr"],
                   cf_ip=index["http_cf_connecting_ip"], method=index["request_method"], uri=index["uri"],
                   status=index["status"], bytes=index["body_bytes_sent"], request_time=index["request_time"],
                   user_agent=index["http_user_agent"], referer=index["http_referer"])


# The session log as nginx writes it (contract.json).
SESSION_LOG = LogFields.of(SESSION_LOG_FIELDS)

PLAYLIST = "playlist_request"
SEGMENT = "segment_request"

# What an `s` value may be once unescaped: an app's UUID or any similar opaque token (contract.json; nginx's map
# $hls_session uses the same pattern).
SESSION_ID = re.compile(SESSION_ID_PATTERN)
# A raw (percent-encoded) value longer than this cannot decode to a valid session id.
MAX_RAW_SESSION_ID = 3 * 128
MAX_TEXT = 512  # user agents and referers are cut to this many characters
# C0 controls, DEL and C1 controls: removed from user agents and referers. NUL makes PostgreSQL refuse the
# whole batch, the others forge lines and colours wherever the values are shown. nginx's escape=json writes
# C0 as \u00NN (undone by unescape), DEL and C1 raw; a percent-encoded `ref` brings any of them.
CONTROL_CHARACTERS = dict.fromkeys((*range(0x20), *range(0x7F, 0xA0)))
# The same as a pattern: most values hold none, and a regex search says so far faster than str.translate.
CONTROL_PATTERN = re.compile("[\x00-\x1f\x7f-\x9f]")
MAX_INT = 2**31 - 1  # GraphQL Int is 32-bit
SESSION_CACHE_LIMIT = 200_000
OK_STATUS = (b"2", b"3")

# The run summary's counters: every line read lands in exactly one of them.
COUNTERS = ("events", "not_hls", "not_media", "method", "status", "malformed")

# An aggregate: [request count, bytes, seconds, last msec, the last line, its key in its table]. Keeping the line
# rather than its fields halves the parser's time: one object stays alive per aggregate instead of sixteen.
Aggregate = list[Any]
LAST_MSEC = operator.itemgetter(3)
# What an event tells of its last request, as logged: remote_addr, realip_remote_addr, CF-Connecting-IP, user
# agent, `ref`, Referer and status.
Context = tuple[bytes, bytes, bytes, bytes, bytes, bytes, bytes]


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cycle collector: the hot loops only make objects without cycles, by the hundred thousand,
    and each collection would scan all of them again."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def unescape(value: str) -> str:
    """Undo nginx's escape=json for one field; a field nginx could not have written is kept as it is."""
    if "\\" not in value:
        return value
    try:
        text: str = json.loads(f'"{value}"')
    except ValueError:
        return value
    # \ud800 and friends decode to lone surrogates, which cannot be sent as UTF-8.
    return text.encode("utf-8", "replace").decode("utf-8")


def clean_session_id(raw: str) -> str | None:
    """The session id of a raw `s` value, or None when it is not a usable one (too long, odd characters)."""
    if len(raw) > MAX_RAW_SESSION_ID:
        return None
    value = unescape(raw)
    if "%" in value:
        value = unquote(value, errors="replace")
    return value if SESSION_ID.fullmatch(value) else None


def clean_text(raw: str, url_encoded: bool = False) -> str | None:
    """A user agent, `ref` or Referer value for the backend: unescaped, without control characters, cut, None
    when nothing is left.

    `ref` comes from the query string as the client sent it, so it is also percent-decoded (before the control
    characters go: `%00` is one).
    """
    if len(raw) <= MAX_CACHED_TEXT:
        return _clean_text(raw, url_encoded)
    return _clean_text.__wrapped__(raw, url_encoded)


# The same few user agents and referers make most events; values this short are cached (at most about 16 MiB).
MAX_CACHED_TEXT = 1024


@lru_cache(maxsize=16384)
def _clean_text(raw: str, url_encoded: bool) -> str | None:
    value = unescape(raw)
    if url_encoded and "%" in value:
        value = unquote(value, errors="replace")
    return CONTROL_PATTERN.sub("", value)[:MAX_TEXT] or None


@lru_cache(maxsize=65536)
def valid_ip(value: str) -> str | None:
    """The address in its canonical form, or None when `value` is not one."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


class Networks:
    """Address ranges, e.g. Cloudflare's: `address in networks` (cached per address, the log repeats them)."""

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self.networks = [ipaddress.ip_network(network.strip(), strict=False) for network in networks if network.strip()]
        self._cache: dict[str, bool] = {}

    @classmethod
    def parse(cls, text: str) -> Networks:
        return cls(text.replace(",", " ").split())

    def __contains__(self, address: str) -> bool:
        known = self._cache.get(address)
        if known is None:
            ip = valid_ip(address) if self.networks else None
            known = ip is not None and any(ipaddress.ip_address(ip) in network for network in self.networks)
            if len(self._cache) < 65536:
                self._cache[address] = known
        return known


def client_ip(remote: str, peer: str, cf_ip: str, cloudflare: Networks) -> str | None:
    """The listener's address: CF-Connecting-IP when the connection came from Cloudflare, else nginx's
    remote_addr.

    nginx's realip module has already taken remote_addr from X-Forwarded-For when, and only as far as, the
    connection came through hls_nginx_trusted_proxies (the right-most address no trusted proxy added), so
    X-Forwarded-For is not read here: its first address is whatever the client wrote. CF-Connecting-IP is
    believed only from a peer (realip_remote_addr, the address that really connected) in Cloudflare's ranges:
    from anyone else it is a header the client chose.
    """
    if cf_ip and peer in cloudflare:
        found = valid_ip(unescape(cf_ip))
        if found:
            return found
    return valid_ip(remote)


@lru_cache(maxsize=4096)
def _iso_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


# Every timestamp's end: one concatenation per event instead of a formatting.
_MILLISECONDS = [f".{millisecond:03d}+00:00" for millisecond in range(1000)]


def iso_time(msec: int) -> str:
    """ISO 8601 in UTC with milliseconds, like datetime.isoformat(timespec="milliseconds")."""
    second, millisecond = divmod(msec, 1000)
    return _iso_second(second) + _MILLISECONDS[millisecond]


def text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


class Requests:
    """What the backend is told of requests, from their logged fields: decoded, cleaned and cached per distinct
    value for one batch of events (the same clients make most requests)."""

    def __init__(self, cloudflare: Networks, log: LogFields = SESSION_LOG) -> None:
        self.cloudflare = cloudflare
        self._context = operator.itemgetter(log.remote_addr, log.peer_addr, log.cf_ip, log.user_agent, log.ref,
                                            log.referer, log.status)
        self._clients: dict[tuple[bytes, bytes, bytes, bytes], tuple[str | None, str]] = {}
        self._described: dict[Context, tuple[str | None, str | None, str | None, int]] = {}
        self._durations: dict[float, float] = {}  # summed seconds -> rounded: round() is slow, sums repeat

    def client(self, remote: bytes, peer: bytes, cf_ip: bytes, user_agent: bytes) -> tuple[str | None, str]:
        """The client's address and its user agent as logged: what its keyed hash is made of."""
        fields = (remote, peer, cf_ip, user_agent)
        found = self._clients.get(fields)
        if found is None:
            found = self._clients[fields] = (client_ip(text(remote), text(peer), text(cf_ip), self.cloudflare),
                                             text(user_agent))
        return found

    def _describe(self, context: Context) -> tuple[str | None, str | None, str | None, int]:
        remote, peer, cf_ip, user_agent, ref, referer, status = map(text, context)
        return (client_ip(remote, peer, cf_ip, self.cloudflare), clean_text(user_agent),
                clean_text(ref, url_encoded=True) or clean_text(referer), int(status))

    def event(self, aggregate: Aggregate) -> dict[str, Any]:
        """The ListeningEventInput of an aggregate keyed (session id, slug, type, window): counts and sizes summed,
        everything else from its last request."""
        count, size, seconds, msec, line, (session_id, slug, kind, _window) = aggregate
        context: Context = self._context(line.split(b"\t"))
        described = self._described.get(context)
        if described is None:
            described = self._described[context] = self._describe(context)
        ip, user_agent, referer, status = described
        duration = self._durations.get(seconds) if seconds else seconds  # (a cached 0.0 could answer for -0.0)
        if duration is None:
            duration = self._durations[seconds] = round(seconds, 3)
        return {
            "anonymous_session_id": session_id,
            "station_slug": slug,
            "ip_address": ip,
            "user_agent": user_agent,
            "timestamp": iso_time(msec),
            "event_type": kind,
            "bytes_transferred": size if size < MAX_INT else MAX_INT,
            "request_duration": duration,
            "status_code": status,
            "request_count": count,
            "referer": referer,
        }


def numbers_as_text(msec: bytes, size: bytes, seconds: bytes) -> tuple[int, int, float] | None:
    """A request's time, size and duration read from decoded text, for values int() and float() refuse as bytes:
    as text they also take digits of other scripts and Unicode spaces, which the parser read when it decoded whole
    lines, so the same lines still make the same events. None: a malformed line."""
    try:
        return int(text(msec).replace(".", "")), int(text(size)), float(text(seconds))
    except ValueError:
        return None


@dataclass
class Aggregator:
    """Collects the listening requests of some log lines.

    by_session: (session id, slug, type, window) -> aggregate, for requests with a valid `s`.
    anonymous:  (remote, peer, CF-Connecting-IP, user agent (bytes as logged), slug, type, window) -> aggregate,
                for the others; analytics.sessions gives them a session (joined to an `s` or a keyed hash).
    counts:     the run summary (COUNTERS), plus `invalid_session_id` for `s` values that were refused.
    """

    window_seconds: int = 10
    log: LogFields = SESSION_LOG
    by_session: dict[tuple[Any, ...], Aggregate] = field(default_factory=dict)
    anonymous: dict[tuple[Any, ...], Aggregate] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*COUNTERS, "invalid_session_id"), 0))
    _session_ids: dict[bytes, str] = field(default_factory=dict)

    def feed(self, data: bytes | str) -> None:
        """Add complete lines: log bytes ending in a newline, or lines joined by newlines (text is taken as UTF-8)."""
        if isinstance(data, str):
            data = data.encode()
        with no_gc():
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        by_session, anonymous, session_ids = self.by_session, self.anonymous, self._session_ids
        if len(session_ids) > SESSION_CACHE_LIMIT:
            session_ids.clear()
        slugs: dict[bytes, str] = {}
        window_ms = self.window_seconds * 1000
        # The positions as locals: the loop below runs once per line, by the hundred thousand.
        log = self.log
        field_count, msec_at, slug_at, session_at, method_at, uri_at, status_at = (
            log.count, log.msec, log.slug, log.session, log.method, log.uri, log.status)
        bytes_at, time_at, remote_at, peer_at, cf_ip_at, agent_at = (
            log.bytes, log.request_time, log.remote_addr, log.peer_addr, log.cf_ip, log.user_agent)
        events = not_hls = not_media = method = status = malformed = invalid = 0
        for line in data.split(b"\n"):
            fields = line.split(b"\t")
            if len(fields) != field_count:
                if line:
                    malformed += 1
                continue
            slug_field = fields[slug_at]
            if not slug_field:
                not_hls += 1
                continue
            uri = fields[uri_at]
            if uri.endswith(b".ts"):
                kind = SEGMENT
            elif uri.endswith(b".m3u8"):
                kind = PLAYLIST
            else:
                not_media += 1
                continue
            if fields[method_at] != b"GET":
                method += 1
                continue
            if fields[status_at][:1] not in OK_STATUS:
                status += 1
                continue
            try:
                msec = int(fields[msec_at].replace(b".", b""))
                size = int(fields[bytes_at])
                seconds = float(fields[time_at])
            except ValueError:
                numbers = numbers_as_text(fields[msec_at], fields[bytes_at], fields[time_at])
                if numbers is None:
                    malformed += 1
                    continue
                msec, size, seconds = numbers
            slug = slugs.get(slug_field)
            if slug is None:
                slug = slugs[slug_field] = text(slug_field)
            raw = fields[session_at]
            session_id: str | None = ""
            if raw:
                session_id = session_ids.get(raw)
                if session_id is None:
                    session_id = clean_session_id(text(raw)) or ""
                    if len(raw) <= MAX_RAW_SESSION_ID:
                        session_ids[raw] = session_id
                if not session_id:
                    invalid += 1
            key: tuple[Any, ...]
            if session_id:
                key = (session_id, slug, kind, msec // window_ms)
                table = by_session
            else:
                key = (fields[remote_at], fields[peer_at], fields[cf_ip_at], fields[agent_at], slug, kind,
                       msec // window_ms)
                table = anonymous
            aggregate = table.get(key)
            if aggregate is None:
                table[key] = [1, size, seconds, msec, line, key]
            else:
                aggregate[0] += 1
                aggregate[1] += size
                aggregate[2] += seconds
                if msec >= aggregate[3]:
                    aggregate[3] = msec
                    aggregate[4] = line
            events += 1
        counts = self.counts
        counts["events"] += events
        counts["not_hls"] += not_hls
        counts["not_media"] += not_media
        counts["method"] += method
        counts["status"] += status
        counts["malformed"] += malformed
        counts["invalid_session_id"] += invalid

    def lines(self) -> int:
        return sum(self.counts[name] for name in COUNTERS)

    def take(self) -> tuple[dict[tuple[Any, ...], Aggregate], dict[tuple[Any, ...], Aggregate]]:
        """by_session and anonymous, leaving the aggregator empty."""
        taken = self.by_session, self.anonymous
        self.by_session, self.anonymous = {}, {}
        return taken

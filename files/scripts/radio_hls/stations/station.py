"""What a station is, how it is validated, and how its env file is written.

Shared by hls-sync (which writes /etc/hls/stations/<slug>.env) and the launcher (which reads it), so the
rules for what may reach a unit name, a path or an FFmpeg command line live in exactly one place.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from radio_hls.common import contract
from radio_hls.stations.variants import InvalidVariants, variants_from_objects, variants_text

# A slug becomes a unit instance name, a directory name and a URL path segment: nothing that could
# escape any of them (no dots, slashes, spaces, upper case or a leading dash). The roles use the same pattern.
SLUG_PATTERN = re.compile(contract.SLUG_PATTERN)
ALLOWED_SCHEMES = ("http", "https")
# Control characters would let a value break out of its env-file line or a log line.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
MAX_URL_LENGTH = 2048
# A host name as FFmpeg hands it to getaddrinfo(): ASCII labels of letters, digits, '-' and '_', no label
# starting or ending with '-'. Anything else (percent-escapes, non-ASCII, empty labels) never resolves.
HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
MAX_HOST_LENGTH = 253
# A last label like these makes getaddrinfo() read the whole host as an IPv4 number (inet_aton: "127.1",
# "2130706433", "0x7f.1" are all 127.0.0.1), so only the plain dotted quad is accepted.
NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
# Where a station URL must not point unless hls_upstream_allowed_networks holds the address: the host itself,
# its link-local neighbours (cloud metadata at 169.254.169.254) and private networks (100.64/10 too: Alibaba
# Cloud's metadata is 100.100.100.200). Names are left to the units' IPAddressDeny=, which also sees redirects.
INTERNAL_NETWORKS = {
    ipaddress.ip_network(network): kind for network, kind in (
        ("0.0.0.0/8", "unspecified"), ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"),
        ("10.0.0.0/8", "private"), ("172.16.0.0/12", "private"), ("192.168.0.0/16", "private"),
        ("100.64.0.0/10", "shared (carrier NAT)"), ("::/128", "unspecified"), ("::1/128", "loopback"),
        ("fe80::/10", "link-local"), ("fc00::/7", "private (unique local)"))
}
# Names that resolve to this machine without asking DNS (glibc's /etc/hosts on Debian, RFC 6761 for .localhost).
LOCALHOST_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
LOOPBACK_ADDRESSES = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
# The longest piece of an outside value put in a log line: a valid slug (63) fits, a 300-character one does not.
SHOWN_LIMIT = 80
# One systemd unit per station: hls@<slug>.service (the slug pattern keeps it a valid instance name).
UNIT_PREFIX = "hls@"
UNIT_SUFFIX = ".service"


class InvalidStation(ValueError):
    """A station record that must not be deployed; the message says why."""


@dataclass(frozen=True)
class Station:
    slug: str
    stream_url: str
    title: str = ""
    station_id: int | None = None
    variants: str | None = None  # its own HLS_VARIANTS (a static station's `variants`); None: the deployment's


def one_line(text: str, limit: int = 500) -> str:
    """Text from outside (a backend's message, say) made fit for one journal line: every character that is not
    printable (newline, ESC, U+2028 ...) escaped as repr() writes it, so nothing can forge a line or colour a
    terminal, and at most `limit` characters of it."""
    escaped = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text[:limit])
    return escaped if len(text) <= limit else f"{escaped}... ({len(text)} characters)"


def shown(value: Any, limit: int = SHOWN_LIMIT) -> str:
    """An outside value quoted for a log line: its repr() (which escapes control characters), cut at `limit`
    characters, so a hostile 300-character slug costs one short line."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(value) if isinstance(value, str) else len(text)} characters)"


def validate_slug(slug: Any) -> str:
    if not isinstance(slug, str) or not SLUG_PATTERN.fullmatch(slug):
        raise InvalidStation(f"slug {shown(slug)} does not match ^{contract.SLUG_PATTERN}$")
    return slug


def normal_host(host: str, bracketed: bool) -> str:
    """The host as FFmpeg can resolve it, in lower case (an IPv6 literal in its short form, without brackets);
    InvalidStation for a host getaddrinfo() would refuse or read differently than it looks."""
    if bracketed:
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidStation(f"stream_url host [{host}] is not an IPv6 address") from None
        if address.scope_id is not None:
            raise InvalidStation("stream_url host has an IPv6 zone (%...), which FFmpeg cannot open")
        return str(address)
    host = host.lower()
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not host.isascii() or len(host) > MAX_HOST_LENGTH or not all(map(HOST_LABEL.fullmatch, labels)):
        raise InvalidStation(f"stream_url host {shown(host)} is not a host name FFmpeg can resolve (ASCII letters, "
                             "digits, '-' and '_' between dots; an international name in its xn-- form)")
    if NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            ipv4: ipaddress.IPv4Address | None = ipaddress.IPv4Address(host)
        except ValueError:
            ipv4 = None
        if ipv4 is None or str(ipv4) != host:
            raise InvalidStation(f"stream_url host {shown(host)} is a number but not a dotted-quad IPv4 address "
                                 "(a.b.c.d)")
    return host


def split_netloc(netloc: str) -> tuple[str, str, bool, str]:
    """(user:password@ or "", host, whether it was in brackets, ":port" or "") of a URL's authority."""
    userinfo, at, hostport = netloc.rpartition("@")
    if hostport.startswith("["):
        host, _bracket, port = hostport[1:].partition("]")
        return userinfo + at, host, True, port
    host, colon, port = hostport.partition(":")
    return userinfo + at, host, False, colon + port


def validate_stream_url(url: Any) -> str:
    """The URL as FFmpeg must be given it, or InvalidStation. Normalised rather than refused where the meaning is
    plain: scheme and host in lower case (FFmpeg's protocol names are case-sensitive, `HTTP://` cannot be opened),
    an IPv6 literal in its short form, the port without leading zeros, an empty port (FFmpeg reads port 0) dropped.
    Credentials, path, query and fragment are kept exactly as they were written."""
    if not isinstance(url, str) or not url:
        raise InvalidStation("stream_url is missing")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidStation(f"stream_url is longer than {MAX_URL_LENGTH} characters")
    if CONTROL_CHARS.search(url) or " " in url or "\\" in url:
        raise InvalidStation("stream_url contains white space, backslashes or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError as error:
        raise InvalidStation(f"stream_url cannot be parsed: {one_line(str(error), SHOWN_LIMIT)}") from None
    if parts.scheme not in ALLOWED_SCHEMES:  # urlsplit gives the scheme in lower case
        raise InvalidStation(f"stream_url scheme {parts.scheme or '(none)'!r} is not http or https")
    if not parts.hostname:
        raise InvalidStation("stream_url has no host")
    if port == 0:
        raise InvalidStation("stream_url port 0 cannot be connected to")
    userinfo, host, bracketed, port_text = split_netloc(parts.netloc)
    if port_text and not port_text.startswith(":"):
        raise InvalidStation("stream_url has characters between the IPv6 address and the port")
    host = normal_host(host, bracketed)
    authority = f"{userinfo}[{host}]" if bracketed else f"{userinfo}{host}"
    rest = url[len(parts.scheme) + len("://") + len(parts.netloc):]
    if rest and not rest.startswith("/"):
        rest = "/" + rest  # FFmpeg would send "GET ?x": the path it stands for is "/"
    return f"{parts.scheme}://{authority}{'' if port is None else f':{port}'}{rest}"


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """Networks written as systemd's IPAddressAllow= takes them (CIDRs or addresses, host bits allowed), separated
    by white space or commas; ValueError names the one that is not."""
    networks = []
    for item in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP network (like 127.0.0.1/32 or fd00::/8)") from None
    return tuple(networks)


def internal_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """The kind of internal network that holds an address ("loopback", "private" ...), None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1 to the kernel
    return next((kind for network, kind in INTERNAL_NETWORKS.items() if address in network), None)


def target_addresses(host: str) -> Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses a URL host stands for without DNS: its literal address, or loopback for a localhost name."""
    name = host.rstrip(".")
    if name in LOCALHOST_NAMES or name.endswith(".localhost"):
        return LOOPBACK_ADDRESSES
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return ()
    return (address.ipv4_mapped or address,) if isinstance(address, ipaddress.IPv6Address) else (address,)


def check_target(url: str, allowed_networks: Sequence[IPNetwork] = ()) -> None:
    """InvalidStation when a (validated) URL names an internal address that no allowed network holds."""
    host = urlsplit(url).hostname or ""
    addresses = list(target_addresses(host))
    if not addresses or any(address in network for address in addresses for network in allowed_networks
                            if address.version == network.version):
        return
    kinds = {kind for kind in map(internal_kind, addresses) if kind is not None}
    if kinds:
        raise InvalidStation(f"stream_url host {host} is an internal address ({', '.join(sorted(kinds))}); "
                             "list its network in hls_upstream_allowed_networks to allow it")


def split_credentials(url: str) -> tuple[str, str | None]:
    """(the URL without user:password, "user:password" decoded, or None when it had none)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    userinfo = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)), userinfo


def unit_name(slug: str) -> str:
    """The station's systemd unit."""
    return f"{UNIT_PREFIX}{slug}{UNIT_SUFFIX}"


def slug_of_unit(unit: str) -> str | None:
    """The slug of an hls@<slug>.service unit; None for any other unit."""
    if unit.startswith(UNIT_PREFIX) and unit.endswith(UNIT_SUFFIX):
        return unit[len(UNIT_PREFIX) : -len(UNIT_SUFFIX)]
    return None


def basic_authorization(url: str) -> tuple[str, str | None]:
    """(the URL without user:password, the `Authorization` value that carries them, or None when it had none):
    a client then sends them in a header, and they never show in a URL, an error message or a log."""
    bare, userinfo = split_credentials(url)
    if userinfo is None:
        return url, None
    return bare, f"Basic {base64.b64encode(userinfo.encode()).decode()}"


def redact_url(url: str) -> str:
    """The URL for logs: user:password, the query string and the fragment (where stream tokens travel) become ***."""
    try:
        bare, userinfo = split_credentials(url)
        parts = urlsplit(bare)
    except ValueError:
        return "(a URL that cannot be parsed)"
    netloc = parts.netloc if userinfo is None else f"***@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", "***" if parts.fragment else ""))


# Where a URL's credentials belong: its scheme, host and port (an origin, as browsers define it).
Origin = tuple[str, str, int]
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> Origin:
    """(scheme, host, port), the scheme's default port filled in: what a browser calls the origin, and where a
    client sends credentials (hls-launcher, hls-nowplaying) or follows a backend's redirect (common.graphql).

    Strict where a looser reading would let credentials travel: a port that cannot be read is a ValueError (not
    the default port), and "example.com." is another host than "example.com" (no trailing dot is dropped)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, parts.hostname or "", parts.port or DEFAULT_PORTS.get(scheme, 0)


def station_env_file(stations_dir: Path, slug: str) -> Path:
    """Where hls-sync writes a station's env file, which its unit, hls-nowplaying and hls-status read."""
    return stations_dir / f"{slug}{contract.ENV_SUFFIX}"


def clean_title(title: Any) -> str:
    """A display title that fits an env-file value: no control characters, no backslashes."""
    text = CONTROL_CHARS.sub(" ", title if isinstance(title, str) else "").replace("\\", "/")
    return text.strip()[:200]


def station_from_record(record: Mapping[str, Any], allowed_networks: Sequence[IPNetwork] = ()) -> Station:
    """Build a Station from a backend or inventory record, or raise InvalidStation. Its URL is normalised
    (validate_stream_url) and may not name an internal address outside `allowed_networks` (check_target)."""
    if not isinstance(record, Mapping):
        raise InvalidStation(f"station record is a {type(record).__name__}, not an object")
    slug = validate_slug(record.get("slug"))
    try:
        url = validate_stream_url(record.get("stream_url"))
        check_target(url, allowed_networks)
    except InvalidStation as error:
        raise InvalidStation(f"{slug}: {error}") from None
    station_id = record.get("id")
    if station_id is not None and (isinstance(station_id, bool) or not isinstance(station_id, int)):
        raise InvalidStation(f"{slug}: id {shown(station_id)} is not an integer")
    variants = None
    if "variants" in record:
        try:
            variants = variants_text(variants_from_objects(record["variants"]))
        except InvalidVariants as error:
            raise InvalidStation(f"{slug}: {error}") from None
    return Station(slug=slug, stream_url=url, title=clean_title(record.get("title")), station_id=station_id,
                   variants=variants)


def quote_env_value(value: str) -> str:
    """Double-quote a value the way python-dotenv reads it back, so no value can add a variable.

    Backslashes are refused: python-dotenv reads an escaped backslash before the closing quote as an
    escaped quote, which would swallow the next line.
    """
    if CONTROL_CHARS.search(value) or "\\" in value:
        raise ValueError("env values must not contain control characters or backslashes")
    return '"' + value.replace('"', '\\"') + '"'


def render_env(values: Mapping[str, str]) -> str:
    lines = ["# Written by hls-sync: edit the station in the backend or inventory, not here."]
    lines += [f"{key}={quote_env_value(str(value))}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def station_env(station: Station, settings: Mapping[str, str]) -> str:
    """The complete env file of one station: its identity plus the deployment-wide FFmpeg settings, its own
    renditions in place of the deployment's when it has them."""
    values = {
        "HLS_STATION_SLUG": station.slug,
        "HLS_STATION_ID": "" if station.station_id is None else str(station.station_id),
        "HLS_STATION_TITLE": station.title,
        "HLS_STREAM_URL": station.stream_url,
    }
    values.update(settings)
    if station.variants is not None:
        values["HLS_VARIANTS"] = station.variants
    return render_env(values)

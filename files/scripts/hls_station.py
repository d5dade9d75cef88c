"""What a station is, how it is validated, and how its env file is written.

Shared by hls-sync (which writes /etc/hls/stations/<slug>.env) and the launcher (which reads it), so the
rules for what may reach a unit name, a path or an FFmpeg command line live in exactly one place.
"""

from __future__ import annotations

import base64
import grp
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

# A slug becomes a unit instance name, a directory name and a URL path segment: nothing that could
# escape any of them (no dots, slashes, spaces, upper case or a leading dash).
SLUG_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
ALLOWED_SCHEMES = ("http", "https")
# Control characters would let a value break out of its env-file line or a log line.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
MAX_URL_LENGTH = 2048
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


def validate_slug(slug: Any) -> str:
    if not isinstance(slug, str) or not SLUG_PATTERN.fullmatch(slug):
        raise InvalidStation(f"slug {slug!r} does not match ^[a-z0-9][a-z0-9-]{{0,62}}$")
    return slug


def validate_stream_url(url: Any) -> str:
    if not isinstance(url, str) or not url:
        raise InvalidStation("stream_url is missing")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidStation(f"stream_url is longer than {MAX_URL_LENGTH} characters")
    if CONTROL_CHARS.search(url) or " " in url or "\\" in url:
        raise InvalidStation("stream_url contains white space, backslashes or control characters")
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port  # .port raises on a non-numeric or out-of-range port
    except ValueError as error:
        raise InvalidStation(f"stream_url cannot be parsed: {error}") from None
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise InvalidStation(f"stream_url scheme {parts.scheme or '(none)'!r} is not http or https")
    if not host:
        raise InvalidStation("stream_url has no host")
    return url


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
    """The URL without user:password, for logs."""
    bare, userinfo = split_credentials(url)
    if userinfo is None:
        return url
    scheme, rest = bare.split("://", 1)
    return f"{scheme}://***@{rest}"


def clean_title(title: Any) -> str:
    """A display title that fits an env-file value: no control characters, no backslashes."""
    text = CONTROL_CHARS.sub(" ", title if isinstance(title, str) else "").replace("\\", "/")
    return text.strip()[:200]


def station_from_record(record: Mapping[str, Any]) -> Station:
    """Build a Station from a backend or inventory record, or raise InvalidStation."""
    if not isinstance(record, Mapping):
        raise InvalidStation(f"station record is a {type(record).__name__}, not an object")
    slug = validate_slug(record.get("slug"))
    try:
        url = validate_stream_url(record.get("stream_url"))
    except InvalidStation as error:
        raise InvalidStation(f"{slug}: {error}") from None
    station_id = record.get("id")
    if station_id is not None and (isinstance(station_id, bool) or not isinstance(station_id, int)):
        raise InvalidStation(f"{slug}: id {station_id!r} is not an integer")
    return Station(slug=slug, stream_url=url, title=clean_title(record.get("title")), station_id=station_id)


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
    """The complete env file of one station: its identity plus the deployment-wide FFmpeg settings."""
    values = {
        "HLS_STATION_SLUG": station.slug,
        "HLS_STATION_ID": "" if station.station_id is None else str(station.station_id),
        "HLS_STATION_TITLE": station.title,
        "HLS_STREAM_URL": station.stream_url,
    }
    values.update(settings)
    return render_env(values)


def set_owner_group(path: Path | str, mode: int, group: str | None) -> None:
    os.chmod(path, mode)
    if group is not None:
        os.chown(path, -1, grp.getgrnam(group).gr_gid)


def write_atomically(path: Path, content: str | bytes, mode: int = 0o640, group: str | None = None,
                     make_parents: bool = True) -> None:
    """Write a file so that readers see the old or the new content, never a half-written one.

    make_parents=False: fail (FileNotFoundError) rather than create a directory that someone removed.
    """
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content.encode("utf-8") if isinstance(content, str) else content)
            handle.flush()
            os.fsync(handle.fileno())
        set_owner_group(tmp_name, mode, group)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise

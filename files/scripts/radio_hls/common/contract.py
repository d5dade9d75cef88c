"""The contract between the roles and the programs, and the names every program of the package agrees on.

contract.json (package data) holds what the roles and the programs must both know: the slug pattern (unit
names, directories, nginx's locations), the listener session id nginx passes on and the analytics count (s=), and
the session log's fields, in the order of nginx's `log_format
hls_session`. The roles read the same file, so neither side can change them alone. Paths are not here: the role
passes each program every path it uses (env files, unit arguments), and a missing one is a BadSetting, never a
guess.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol


class _DataLoader(Protocol):
    def get_data(self, path: str) -> bytes: ...


def _package_data(name: str) -> Any:
    """A JSON file of this package, read through the package's loader: what importlib.resources and
    pkgutil.get_data call underneath, so it is found in an installed wheel as in the source tree. Not through
    importlib.resources itself: that imports nine more modules (zipfile among them), about 3.5 ms added to every
    station start (the launcher reads the slug pattern)."""
    loader: _DataLoader = __spec__.loader  # type: ignore[assignment]
    return json.loads(loader.get_data(os.path.join(os.path.dirname(__file__), name)))


CONTRACT = _package_data("contract.json")
SLUG_PATTERN: str = CONTRACT["slug_pattern"]
SESSION_ID_PATTERN: str = CONTRACT["session_id_pattern"]
# A rendition of a station's ladder (hls_variants): a directory of the station's output, a path segment of its URLs
# (/hls/<slug>/<name>/...) and a part of its playlist's name.
RENDITION_NAME_PATTERN: str = CONTRACT["rendition_name_pattern"]
SESSION_LOG_FIELDS: tuple[str, ...] = tuple(CONTRACT["session_log_fields"])
# <output root>/<this>/<slug>.m3u8: every station's media playlist, written by hls-playlists, served by nginx as
# /hls/<slug>/index.m3u8. Outside the station directories, which systemd removes on a stop; never a slug.
PLAYLISTS_DIR_NAME: str = CONTRACT["playlists_dir_name"]
# In a station's output directory from its stop to its next start (hls@.service writes it): systemd removes the
# directory of a stopped station from a tmpfs but not from a disk, so on a disk output hls-playlists does.
STOPPED_MARKER_NAME: str = CONTRACT["stopped_marker_name"]

# What the programs call themselves to upstreams and backends.
USER_AGENT = "radio-hls/1.0"
# A station's output directory (<output root>/<slug>): written by FFmpeg, the launcher and hls-nowplaying, read by
# hls-playlists, hls-status, hlsctl and the watchdog; nginx serves the segments from it.
PLAYLIST_NAME = "index.m3u8"  # the name in the URL, /hls/<slug>/index.m3u8
LAUNCH_INFO_NAME = ".launch.json"  # what the last start decided (codec, copy or transcode)
NOW_PLAYING_NAME = "now-playing.json"
# A station's env file in the stations directory: <slug>.env.
ENV_SUFFIX = ".env"


class BadSetting(ValueError):
    """A setting the role passes is missing or cannot be used; the message names it."""


def setting(values: Mapping[str, str | None], name: str) -> str:
    """The value of a setting the role always passes; BadSetting when it is missing or empty."""
    value = (values.get(name) or "").strip()
    if not value:
        raise BadSetting(f"{name} is not set (the role writes it into the program's env file or unit)")
    return value


# The multivariant playlist's name among a station's playlists (no rendition may take it).
MASTER = "master"


def playlist_path(output_root: Path, slug: str, rendition: str | None = None) -> Path:
    """Where hls-playlists writes a station's playlist: the main rendition's (nginx serves it as
    /hls/<slug>/index.m3u8), a ladder rendition's (/hls/<slug>/<rendition>/index.m3u8) or, for MASTER, the
    multivariant playlist (/hls/<slug>/master.m3u8). A dot is in no slug and no rendition name."""
    return output_root / PLAYLISTS_DIR_NAME / (f"{slug}.m3u8" if rendition is None else f"{slug}.{rendition}.m3u8")

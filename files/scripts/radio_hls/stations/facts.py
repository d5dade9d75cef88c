"""What the last probe of a station's upstream found (its format, codec and burst on connect), kept across reboots.

A probe is one more FFmpeg and one more upstream connection per start: about 50 ms of CPU (Debian's FFmpeg links
a hundred libraries) and half a second of waiting for the burst to settle. When a host boots a thousand stations,
or the upstream's server drops them all at once, that is what the starts cost. So the launcher keeps each probe's
result in the unit's state directory ($STATE_DIRECTORY/<slug>.json, which outlives the output directory and a
reboot) and starts from it when it holds:
- the facts are of this station URL (a digest of it, credentials included, so the file holds no secret);
- the last start did not fail;
- the upstream's format is one that decides the mode by itself (PINNED_FORMATS: ADTS AAC is copied, MP3 is
  transcoded), and FFmpeg is held to it (the demuxer whitelist in its input document). An upstream that changed
  format under the same URL makes that start fail at once ("Format not on whitelist"), and the next start, after a
  failed one, probes again. Other formats (Ogg, MPEG-TS, HLS ...) can carry either codec: they are probed at every
  start, as before.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from radio_hls.common.files import read_json_object, write_atomically

# FFmpeg's demuxer name -> the one codec it yields.
PINNED_FORMATS = {"aac": "aac", "mp3": "mp3"}


@dataclass(frozen=True)
class UpstreamFacts:
    url_digest: str
    input_format: str  # one of PINNED_FORMATS
    burst: float  # seconds of audio the upstream sent at once on connect
    measured_at: float  # Unix seconds

    @property
    def codec(self) -> str:
        return PINNED_FORMATS[self.input_format]


def pinned(input_format: str | None) -> str | None:
    """The demuxer FFmpeg is held to, when it decides the codec by itself (PINNED_FORMATS); else None."""
    return input_format if input_format in PINNED_FORMATS else None


def url_digest(stream_url: str) -> str:
    return hashlib.sha256(stream_url.encode()).hexdigest()


def facts_path(state_dir: Path, slug: str) -> Path:
    return state_dir / f"{slug}.json"


def load(state_dir: Path, slug: str, stream_url: str) -> UpstreamFacts | None:
    """The facts last recorded for the station, None when there are none for this URL or they do not read back."""
    recorded = read_json_object(facts_path(state_dir, slug))
    try:
        facts = UpstreamFacts(str(recorded["url_digest"]), str(recorded["input_format"]), float(recorded["burst"]),
                              float(recorded["measured_at"]))
    except (KeyError, TypeError, ValueError):
        return None
    valid = (facts.url_digest == url_digest(stream_url) and facts.input_format in PINNED_FORMATS
             and math.isfinite(facts.burst) and facts.burst >= 0 and math.isfinite(facts.measured_at))
    return facts if valid else None


def save(state_dir: Path, slug: str, facts: UpstreamFacts) -> None:
    """Record the facts (atomically; a crash loses at most one probe: no fsync)."""
    write_atomically(facts_path(state_dir, slug), json.dumps(asdict(facts)), mode=0o600, make_parents=False,
                     durable=False)


def forget(state_dir: Path, slug: str) -> None:
    """Facts that no longer hold (an upstream whose format cannot be pinned)."""
    facts_path(state_dir, slug).unlink(missing_ok=True)

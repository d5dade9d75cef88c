"""A station's extra renditions (its bitrate ladder): what HLS_VARIANTS says, validated once for every reader.

HLS_VARIANTS is `<name>:<bitrate>[:<channels>[:<sample rate>]]`, comma-separated, empty for none, e.g.
`low:48k:2:44100,mid:64k`. The sync checks a station's own list before it writes it (a static station may
override the deployment's), the launcher checks it again on every start, so a value either would refuse never
reaches FFmpeg. Each rendition's name is a directory in the station's output and a path segment of its URLs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from radio_hls.common.contract import RENDITION_NAME_PATTERN

# A directory and a URL path segment (contract.json, as nginx's locations and the role's check take it): no dot,
# dash or slash, so it can never be a segment (<run>-<i>.ts), a list, now-playing.json or a hidden file of the
# station's directory.
NAME = re.compile(RENDITION_NAME_PATTERN)
# The station's main playlist (index.m3u8) and its multivariant playlist (master.m3u8) own these names.
RESERVED_NAMES = ("master", "index")
BITRATE = re.compile(r"([0-9]{1,3})k")
LOWEST_KBPS, HIGHEST_KBPS = 16, 320
CHANNELS = (1, 2)
# What FFmpeg's native AAC encoder accepts (`ffmpeg -h encoder=aac`).
SAMPLE_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
DEFAULT_CHANNELS, DEFAULT_SAMPLE_RATE = 2, 44100


class InvalidVariants(ValueError):
    """HLS_VARIANTS that must not reach FFmpeg; the message says which rendition and why."""


@dataclass(frozen=True)
class Variant:
    name: str
    bitrate: str  # like 48k, as FFmpeg's -b:a takes it
    channels: int = DEFAULT_CHANNELS
    sample_rate: int = DEFAULT_SAMPLE_RATE

    def text(self) -> str:
        return f"{self.name}:{self.bitrate}:{self.channels}:{self.sample_rate}"


def parse_one(item: str) -> Variant:
    fields = item.strip().split(":")
    if not 2 <= len(fields) <= 4:
        raise InvalidVariants(f"{item!r} is not name:bitrate[:channels[:sample_rate]]")
    name, bitrate, *rest = fields
    if not NAME.fullmatch(name) or name in RESERVED_NAMES:
        raise InvalidVariants(f"rendition name {name!r} does not match ^{NAME.pattern}$ or is one of "
                              f"{', '.join(RESERVED_NAMES)}")
    rate = BITRATE.fullmatch(bitrate)
    if rate is None or not LOWEST_KBPS <= int(rate.group(1)) <= HIGHEST_KBPS:
        raise InvalidVariants(f"{name}: bitrate {bitrate!r} is not {LOWEST_KBPS}k to {HIGHEST_KBPS}k")
    channels = rest[0] if rest else str(DEFAULT_CHANNELS)
    if channels not in map(str, CHANNELS):
        raise InvalidVariants(f"{name}: channels {channels!r} is not 1 or 2")
    sample_rate = rest[1] if len(rest) > 1 else str(DEFAULT_SAMPLE_RATE)
    if sample_rate not in map(str, SAMPLE_RATES):
        raise InvalidVariants(f"{name}: sample rate {sample_rate!r} is not one the AAC encoder takes "
                              f"({', '.join(map(str, SAMPLE_RATES))})")
    return Variant(name, bitrate, int(channels), int(sample_rate))


def parse_variants(text: str | None) -> tuple[Variant, ...]:
    """The renditions of an HLS_VARIANTS value, in its order; InvalidVariants for the first that is not valid or
    whose name repeats."""
    return unique(parse_one(item) for item in (text or "").split(",") if item.strip())


def unique(renditions: Iterable[Variant]) -> tuple[Variant, ...]:
    variants = tuple(renditions)
    names = [variant.name for variant in variants]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidVariants(f"rendition name {repeated[0]!r} is used more than once")
    return variants


def variants_from_objects(listed: Any) -> tuple[Variant, ...]:
    """The renditions of a JSON list of {name, bitrate, channels, sample_rate} objects (the last two optional): a
    static station's `variants` in stations.json, a run's in .launch.json. Checked as parse_variants checks text."""
    if not isinstance(listed, list) or not all(isinstance(item, dict) for item in listed):
        raise InvalidVariants("variants is not a list of objects")
    try:
        # One at a time, every field in its place: a value holding a "," or ":" cannot make another rendition.
        return unique(parse_one(f"{item['name']}:{item['bitrate']}:{item.get('channels', DEFAULT_CHANNELS)}:"
                                f"{item.get('sample_rate', DEFAULT_SAMPLE_RATE)}") for item in listed)
    except KeyError as error:
        raise InvalidVariants(f"a rendition has no {error.args[0]}") from None


def variants_text(variants: Iterable[Variant]) -> str:
    """The HLS_VARIANTS value of some renditions (what parse_variants reads back)."""
    return ",".join(variant.text() for variant in variants)

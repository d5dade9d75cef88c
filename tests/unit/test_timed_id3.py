"""Tests of radio_hls/playlists/timed_id3.py: titles as timed ID3 in real segments of this machine's FFmpeg.

The segments come from FFmpeg's segment muxer with the launcher's options (launcher.build_command: output_ts_offset,
PES of up to 0.7 s with mpegts_copyts, initial_offset on the Unix clock), from a sine encoded to AAC. What a player
sees is checked three ways: ffprobe (FFmpeg's demuxer), a reader of the PES written here from the standard, and a
reading of the PMT the way hls.js's parsePMT reads it. The ID3 tags are read by a small ID3v2.4 parser written here
too (no ID3 library is installed in the dev venv).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from radio_hls.playlists.timed_id3 import id3_tag, tag_segment

CLOCK = 90_000
WRAP = 1 << 33
BASE = 1764000000.0  # the Unix time of the timeline's zero (initial_offset)
SEGMENT_SECONDS = 6
# A base that puts the 33-bit wrap of the PTS 9 s into the timeline: 3 s into the second segment.
WRAP_BASE = round(round(BASE * CLOCK / WRAP) * WRAP / CLOCK - 9.0, 6)
PACKET = 188
ROMANIAN = "Grupul Eldad - Isus e Domnul, ăîșțâ"


def make_segments(directory: Path, base: float) -> list[Path]:
    """Three segments (6 s, 6 s, the rest) as the launcher's FFmpeg cuts them, the first audio at 2.5 s."""
    directory.mkdir()
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=14",
         "-map", "0:a:0", "-ac", "2", "-c:a", "aac", "-profile:a", "aac_low", "-b:a", "128k",
         "-output_ts_offset", "2.500", "-muxdelay", "0.7", "-muxpreload", "0", "-f", "segment",
         "-segment_time", str(SEGMENT_SECONDS), "-segment_format", "mpegts",
         "-segment_format_options", "mpegts_copyts=1",
         "-segment_list", str(directory / "run.csv"), "-segment_list_type", "csv",
         "-initial_offset", f"{base:.6f}", str(directory / "run-%d.ts")],
        check=True, timeout=120)
    return sorted(directory.glob("run-*.ts"), key=lambda path: int(path.stem.split("-")[1]))


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_segments(tmp_path_factory.mktemp("timed-id3") / "segments", BASE)


@pytest.fixture
def segments(originals: list[Path], tmp_path: Path) -> list[Path]:
    """Fresh copies of the segments for one test."""
    copies = []
    for original in originals:
        copy = tmp_path / original.name
        copy.write_bytes(original.read_bytes())
        copies.append(copy)
    return copies


def ffprobe(path: Path) -> dict[str, list[dict[str, object]]]:
    result = subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-show_streams", "-show_packets",
                             "-show_data_hash", "MD5", str(path)], check=True, capture_output=True, timeout=60)
    document: dict[str, list[dict[str, object]]] = json.loads(result.stdout)
    return document


def audio_md5(path: Path) -> str:
    result = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a", "-f", "md5", "-"],
                            check=True, capture_output=True, timeout=60)
    return result.stdout.decode().strip()


def unix_time(pts: int, base: float = BASE) -> float:
    """The Unix time of a PTS of a segment made from `base`."""
    return base + (pts - round(base * CLOCK)) % WRAP / CLOCK


def audio_pts(path: Path) -> list[int]:
    return [int(str(packet["pts"])) for packet in ffprobe(path)["packets"] if packet["codec_type"] == "audio"]


# --- Readers written from the standards, to check the bytes themselves -------------------------------------------

def crc32_mpeg2(data: bytes) -> int:
    """Bit by bit, unlike the module's table: a second implementation to check the first."""
    crc = 0xFFFFFFFF
    for byte in data:
        for bit in range(7, -1, -1):
            top = (crc >> 31) ^ (byte >> bit & 1)
            crc = (crc << 1) & 0xFFFFFFFF
            if top:
                crc ^= 0x04C11DB7
    return crc


@dataclass
class Packet:
    pid: int
    unit_start: bool
    counter: int
    adaptation: bytes | None
    payload: bytes


def packets(data: bytes) -> Iterator[Packet]:
    for offset in range(0, len(data), PACKET):
        raw = data[offset:offset + PACKET]
        assert raw[0] == 0x47
        control = raw[3] >> 4 & 3
        start = 4
        adaptation = None
        if control & 2:
            adaptation = raw[5:5 + raw[4]]
            start = 5 + raw[4]
        yield Packet((raw[1] & 0x1F) << 8 | raw[2], bool(raw[1] & 0x40), raw[3] & 0x0F, adaptation,
                     raw[start:] if control & 1 else b"")


def parse_pmt(data: bytes) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """(program info descriptors, [(stream_type, pid, ES info)]) of the first PMT, as hls.js's parsePMT walks it."""
    all_packets = list(packets(data))
    pat = next(packet for packet in all_packets if packet.pid == 0 and packet.unit_start).payload
    pat = pat[1 + pat[0]:]
    pmt_pid = (pat[10] & 0x1F) << 8 | pat[11]
    pmt = next(packet for packet in all_packets if packet.pid == pmt_pid and packet.unit_start).payload
    pmt = pmt[1 + pmt[0]:]
    section_length = (pmt[1] & 0x0F) << 8 | pmt[2]
    assert crc32_mpeg2(pmt[:3 + section_length]) == 0, "PMT CRC"
    info_length = (pmt[10] & 0x0F) << 8 | pmt[11]
    info = pmt[12:12 + info_length]
    offset, end, streams = 12 + info_length, 3 + section_length - 4, []
    while offset < end:
        es_length = (pmt[offset + 3] & 0x0F) << 8 | pmt[offset + 4]
        streams.append((pmt[offset], (pmt[offset + 1] & 0x1F) << 8 | pmt[offset + 2],
                        pmt[offset + 5:offset + 5 + es_length]))
        offset += 5 + es_length
    return info, streams


def metadata_pid(data: bytes) -> int:
    [pid] = [pid for stream_type, pid, _ in parse_pmt(data)[1] if stream_type == 0x15]
    return pid


@dataclass
class Pes:
    pts: int
    data: bytes
    counters: list[int]
    first_packet: int  # index in the file
    last_adaptation: bytes | None


def read_pes(data: bytes, pid: int) -> list[Pes]:
    """The PES of `pid`, checked against ISO/IEC 13818-1 and Apple's timed metadata (stream_id 0xBD, PTS only)."""
    found: list[Pes] = []
    parts: list[bytes] = []
    for index, packet in enumerate(packets(data)):
        if packet.pid != pid:
            continue
        if packet.unit_start:
            parts = [packet.payload]
            found.append(Pes(0, b"", [packet.counter], index, packet.adaptation))
        else:
            parts.append(packet.payload)
            found[-1].counters.append(packet.counter)
            found[-1].last_adaptation = packet.adaptation
        pes = b"".join(parts)
        assert pes[:4] == b"\x00\x00\x01\xbd"
        length = pes[4] << 8 | pes[5]
        if len(pes) >= 6 + length:
            assert len(pes) == 6 + length, "PES_packet_length"
            assert pes[6] == 0x84, "'10' marker bits and data_alignment_indicator"
            assert pes[7] == 0x80 and pes[8] == 5, "PTS only"
            field = pes[9:14]
            assert field[0] >> 4 == 0b0010 and field[0] & field[2] & field[4] & 1, "PTS markers"
            found[-1].pts = ((field[0] & 0x0E) << 29 | field[1] << 22 | (field[2] >> 1) << 15 | field[3] << 7
                             | field[4] >> 1)
            found[-1].data = pes[14:]
    return found


def parse_id3(tag: bytes) -> dict[str, str]:
    """The text frames of an ID3v2.4 tag ("TXXX:<description>" for TXXX), all UTF-8, nothing left over."""

    def size(field: bytes) -> int:
        assert not any(byte & 0x80 for byte in field), "syncsafe"
        return field[0] << 21 | field[1] << 14 | field[2] << 7 | field[3]

    assert tag[:5] == b"ID3\x04\x00" and tag[5] == 0, "ID3v2.4.0, no flags"
    assert size(tag[6:10]) == len(tag) - 10
    frames, position = {}, 10
    while position < len(tag):
        frame_id, length = tag[position:position + 4].decode("ascii"), size(tag[position + 4:position + 8])
        assert tag[position + 8:position + 10] == b"\x00\x00"
        body = tag[position + 10:position + 10 + length]
        assert len(body) == length and body[0] == 3, "UTF-8 text"
        text = body[1:].decode("utf-8")
        if frame_id == "TXXX":
            description, value = text.split("\0")
            frames[f"TXXX:{description}"] = value
        else:
            frames[frame_id] = text
        position += 10 + length
    return frames


def md5(data: bytes) -> str:
    return "MD5:" + hashlib.md5(data).hexdigest()


# --- The tag ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("title", "frames"), [
    (ROMANIAN, {"TIT2": "Isus e Domnul, ăîșțâ", "TPE1": "Grupul Eldad", "TXXX:StreamTitle": ROMANIAN}),
    ("Radio Joy - live", {"TIT2": "live", "TPE1": "Radio Joy", "TXXX:StreamTitle": "Radio Joy - live"}),
    # Does not split: no TPE1, the whole title is the title.
    ("Radio Joy live", {"TIT2": "Radio Joy live", "TXXX:StreamTitle": "Radio Joy live"}),
    (" - Song", {"TIT2": "- Song", "TXXX:StreamTitle": "- Song"}),
    # Control characters and terminal escapes go (radio_hls.nowplaying.icy.split_title's cleaning).
    ("Art\x1b[31mist\x07 -\x00 So\nng\u202e",
     {"TIT2": "So ng", "TPE1": "Artist", "TXXX:StreamTitle": "Artist - So ng"}),
    ("", {"TIT2": "", "TXXX:StreamTitle": ""}),
])
def test_the_tag_is_id3v24_with_title_artist_and_stream_title(title: str, frames: dict[str, str]) -> None:
    assert parse_id3(id3_tag(title)) == frames


# --- The segment --------------------------------------------------------------------------------------------------

def test_ffprobe_finds_the_timed_id3_stream_with_the_tags_at_their_times(segments: list[Path]) -> None:
    segment = segments[1]
    first = audio_pts(segment)[0]
    times = [unix_time(first), unix_time(first) + 2.5]
    tags = [id3_tag(ROMANIAN), id3_tag("Radio Joy live")]
    tag_segment(segment, list(zip(times, tags, strict=True)), 0)

    probe = ffprobe(segment)
    [stream] = [stream for stream in probe["streams"] if stream["codec_type"] == "data"]
    assert stream["codec_name"] == "timed_id3"
    data_packets = [packet for packet in probe["packets"] if packet["stream_index"] == stream["index"]]
    assert [int(str(packet["pts"])) for packet in data_packets] == [round(time * CLOCK) % WRAP for time in times]
    # FFmpeg 5.1's demuxer drops the first 5 bytes of every stream_type 0x15 PES (it takes them for the metadata
    # AU cell header of ISO/IEC 13818-1 2.12.4); FFmpeg's master does that only for stream_id 0xFC.
    assert [packet["data_hash"] for packet in data_packets] in (
        [md5(tag) for tag in tags], [md5(tag[5:]) for tag in tags])
    assert [parse_id3(pes.data) for pes in read_pes(segment.read_bytes(), int(str(stream["id"]), 16))] == [
        {"TIT2": "Isus e Domnul, ăîșțâ", "TPE1": "Grupul Eldad", "TXXX:StreamTitle": ROMANIAN},
        {"TIT2": "Radio Joy live", "TXXX:StreamTitle": "Radio Joy live"}]


def test_the_pmt_announces_the_stream_as_apple_and_hls_js_want(segments: list[Path]) -> None:
    tag_segment(segments[1], [(unix_time(audio_pts(segments[1])[0]), id3_tag(ROMANIAN))], 0)
    data = segments[1].read_bytes()
    info, streams = parse_pmt(data)
    identifiers = b"\xff\xffID3 \xffID3 \x00"
    assert info == bytes((0x25, 15)) + identifiers + b"\x1f\x00\x01"  # this TS, program 1
    assert [(stream_type, pid) for stream_type, pid, _ in streams] == [(0x0F, 0x100), (0x15, 0x102)]
    assert streams[1][2] == bytes((0x26, 13)) + identifiers + b"\x0f"
    # Every PMT of the segment (FFmpeg repeats PAT and PMT) is the new one.
    pmts = {packet.payload for packet in packets(data) if packet.pid == 0x1000}
    assert len(pmts) == 1


def test_the_audio_is_unchanged(originals: list[Path], segments: list[Path]) -> None:
    segment = segments[1]
    first = audio_pts(segment)[0]
    tags = [(unix_time(first) + offset, id3_tag(f"Artist - Song {offset}")) for offset in (0.0, 1.0, 3.3, 5.9)]
    tag_segment(segment, tags, 0)

    def audio_packets(path: Path) -> list[tuple[object, object, object]]:
        return [(packet["pts"], packet["size"], packet["data_hash"]) for packet in ffprobe(path)["packets"]
                if packet["codec_type"] == "audio"]

    assert audio_packets(segment) == audio_packets(originals[1])
    assert audio_md5(segment) == audio_md5(originals[1])
    decoded = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(segment), "-map", "0", "-f", "null",
                              "-"], capture_output=True, check=True, timeout=60)
    assert decoded.stderr == b""


def audio_pes_pts(data: bytes) -> list[tuple[int, int]]:
    """(packet index, PTS) of each audio PES start."""
    found = []
    for index, packet in enumerate(packets(data)):
        if packet.pid == 0x100 and packet.unit_start:
            field = packet.payload[9:14]
            found.append((index, (field[0] & 0x0E) << 29 | field[1] << 22 | (field[2] >> 1) << 15
                          | field[3] << 7 | field[4] >> 1))
    return found


def signed(delta: int) -> int:
    return (delta + WRAP // 2) % WRAP - WRAP // 2


def assert_in_time_order(data: bytes) -> None:
    """Each tag's first packet comes after every audio PES before its time and right before the first at or
    after it (or at the end of the file)."""
    audio = audio_pes_pts(data)
    for pes in read_pes(data, metadata_pid(data)):
        following = [index for index, pts in audio if signed(pts - pes.pts) >= 0]
        expected = following[0] if following else len(data) // PACKET
        # Tags placed at the same spot come one after the other: step back over the tag packets before the audio.
        assert pes.first_packet < expected
        between = [packet.pid for packet in list(packets(data))[pes.first_packet:expected]]
        assert set(between) == {metadata_pid(data)}


def test_tags_go_where_their_time_is(segments: list[Path]) -> None:
    segment = segments[1]
    pts = audio_pts(segment)
    tags = [(unix_time(pts[0]) - 1.0, id3_tag("before the first audio")),
            (unix_time(pts[0]), id3_tag("at the first audio")),
            (unix_time(pts[40]) - 0.001, id3_tag("just before an audio packet")),
            (unix_time(pts[40]), id3_tag("at an audio packet")),
            (unix_time(pts[-1]) + 0.001, id3_tag("after the last audio"))]
    tag_segment(segment, tags[::-1], 0)
    data = segment.read_bytes()
    assert_in_time_order(data)
    found = read_pes(data, metadata_pid(data))
    assert [parse_id3(pes.data)["TIT2"] for pes in found] == [
        "before the first audio", "at the first audio", "just before an audio packet", "at an audio packet",
        "after the last audio"]
    assert found[-1].first_packet == len(data) // PACKET - 1
    # The first tag comes after PAT and PMT, before the first audio.
    pids = [packet.pid for packet in packets(data)]
    assert pids.index(metadata_pid(data)) > pids.index(0x1000) > pids.index(0)


def test_a_long_title_spans_several_packets_and_stuffs_the_last(segments: list[Path]) -> None:
    title = "Orchestra " * 40 + "- " + "ăîșțâ " * 60
    tag_segment(segments[1], [(unix_time(audio_pts(segments[1])[0]), id3_tag(title))], 3)
    data = segments[1].read_bytes()
    [pes] = read_pes(data, metadata_pid(data))
    assert len(pes.counters) > 3
    assert pes.counters == [(3 + index) % 16 for index in range(len(pes.counters))]
    assert pes.last_adaptation is not None and set(pes.last_adaptation[1:]) <= {0xFF}
    assert parse_id3(pes.data)["TXXX:StreamTitle"] == " ".join(title.split())
    assert ffprobe(segments[1])["streams"][1]["codec_name"] == "timed_id3"


def test_the_continuity_counter_goes_on_across_segments(segments: list[Path]) -> None:
    counter = 14
    seen = []
    for segment in segments[:2]:
        first = audio_pts(segment)[0]
        tags = [(unix_time(first), id3_tag("A - " + "b" * 300)), (unix_time(first) + 1, id3_tag("C - D"))]
        counter = tag_segment(segment, tags, counter)
        data = segment.read_bytes()
        seen += [value for pes in read_pes(data, metadata_pid(data)) for value in pes.counters]
    assert seen == [(14 + index) % 16 for index in range(len(seen))]
    assert counter == (14 + len(seen)) % 16


def test_the_file_is_replaced_whole_and_world_readable(segments: list[Path]) -> None:
    segment = segments[1]
    segment.chmod(0o600)
    inode = segment.stat().st_ino
    tag_segment(segment, [], 0)
    assert segment.stat().st_mode & 0o777 == 0o644
    assert segment.stat().st_ino != inode  # a new file renamed over the old: readers see one or the other
    assert sorted(path.name for path in segment.parent.iterdir()) == sorted(path.name for path in segments)
    # No tags: the stream is announced all the same, every segment of a station has the same PMT.
    assert ffprobe(segment)["streams"][1]["codec_name"] == "timed_id3"


def test_the_pts_wrap_inside_a_segment(tmp_path: Path) -> None:
    segment = make_segments(tmp_path / "wrap", WRAP_BASE)[1]
    pts = [value for _, value in audio_pes_pts(segment.read_bytes())]  # as written: ffprobe unwraps them
    assert pts[0] > pts[-1], "the segment's PTS wrap"
    wrapped = next(index for index, value in enumerate(pts) if value < pts[0])
    tags = [(unix_time(pts[0], WRAP_BASE), id3_tag("before the wrap")),
            (unix_time(pts[wrapped + 5], WRAP_BASE), id3_tag("after the wrap"))]
    original = audio_md5(segment)
    tag_segment(segment, tags, 0)
    data = segment.read_bytes()
    assert_in_time_order(data)
    assert [pes.pts for pes in read_pes(data, metadata_pid(data))] == [pts[0], pts[wrapped + 5]]
    assert audio_md5(segment) == original


def garbage(segment: bytes) -> Iterator[tuple[str, bytes]]:
    yield "empty", b""
    yield "not TS", b"#EXTM3U\n" * 100
    yield "truncated mid-packet", segment[:PACKET * 30 + 100]
    yield "a sync byte missing", segment[:PACKET * 7] + b"\x00" + segment[PACKET * 7 + 1:]
    pat_and_pmt = {0, 0x1000}
    audio_only = b"".join(segment[offset:offset + PACKET] for offset in range(0, len(segment), PACKET)
                          if (segment[offset + 1] & 0x1F) << 8 | segment[offset + 2] not in pat_and_pmt)
    yield "no PAT nor PMT", audio_only
    pat = segment[PACKET:2 * PACKET]
    assert (pat[1] & 0x1F) << 8 | pat[2] == 0
    yield "no PMT", pat + audio_only
    bad_crc = bytearray(segment)
    for offset in range(0, len(segment), PACKET):
        if (segment[offset + 1] & 0x1F) << 8 | segment[offset + 2] == 0x1000:
            bad_crc[offset + 20] ^= 0x01
    yield "a PMT with a wrong CRC", bytes(bad_crc)


def test_what_is_not_the_expected_mpegts_raises_and_stays(originals: list[Path], tmp_path: Path) -> None:
    for what, content in garbage(originals[1].read_bytes()):
        path = tmp_path / "run-1.ts"
        path.write_bytes(content)
        with pytest.raises(ValueError):
            tag_segment(path, [(BASE + 7, id3_tag(ROMANIAN))], 0)
        assert path.read_bytes() == content, what
        assert os.listdir(tmp_path) == ["run-1.ts"], what


def test_a_tagged_segment_is_not_tagged_twice(segments: list[Path]) -> None:
    tag_segment(segments[1], [(BASE + 7, id3_tag(ROMANIAN))], 0)
    tagged = segments[1].read_bytes()
    with pytest.raises(ValueError):
        tag_segment(segments[1], [(BASE + 8, id3_tag(ROMANIAN))], 0)
    assert segments[1].read_bytes() == tagged

"""Timed ID3 in an MPEG-TS segment: the station's titles in the stream, where players look for them.

Apple's "Timed Metadata for HTTP Live Streaming" carries ID3 tags in the transport stream itself: the PMT announces
a metadata stream (stream_type 0x15, 'ID3 ' in a metadata_pointer_descriptor of the program and a
metadata_descriptor of the stream), and each tag is one PES packet (stream_id 0xBD, private_stream_1) whose PTS
says when it applies. Safari, AVPlayer, hls.js and ExoPlayer hand such tags to the application. (Debian 12's FFmpeg
5.1 shows each tag without its first 5 bytes: its demuxer takes them for the metadata AU cell header that ISO/IEC
13818-1 puts in stream_id 0xFC metadata, which Apple's 0xBD PES do not have; FFmpeg's master skips it for 0xFC only.)

hls-playlists rewrites every finished segment once, for up to a thousand stations, so no Python loop runs over the
segment's bytes or packets: the packet headers come out in two strided slices, bytes.find looks for a PID in them,
the audio PES a tag goes before is found by bisection (a handful of PTS read per tag), and a station's new PMT is
computed once (lru_cache).
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

from radio_hls.common.files import write_atomically
from radio_hls.nowplaying.icy import split_title

PACKET = 188
HEADER = 4
PAYLOAD = PACKET - HEADER
SYNC = 0x47
PTS_CLOCK = 90_000
PTS_WRAP = 1 << 33
PAT_PID = 0x0000
NULL_PID = 0x1FFF
PAT_TABLE = 0x00
PMT_TABLE = 0x02
STREAM_TYPE_METADATA = 0x15
PREFERRED_PID = 0x0102
PRIVATE_STREAM_1 = 0xBD
ID3 = b"ID3 "
# The two descriptors Apple's specification puts in the PMT (ISO/IEC 13818-1 2.6.58 and 2.6.60). Both say:
# application format 0xFFFF then its identifier 'ID3 ', format 0xFF then its identifier 'ID3 ', metadata service 0.
# The pointer (program info) goes on with metadata_locator_record_flag 0, MPEG_carriage_flags 0 (this transport
# stream) and 5 reserved 1 bits, then the program_number it points to; the descriptor (ES info) with
# decoder_config_flags 000, DSM-CC_flag 0 and 4 reserved 1 bits.
FORMAT_IDENTIFIERS = b"\xff\xff" + ID3 + b"\xff" + ID3 + b"\x00"
POINTER_TAG = 0x25
METADATA_TAG = 0x26
POINTER_FLAGS = 0x1F
METADATA_FLAGS = 0x0F
# PES header flags: '10' marker bits and data_alignment_indicator; PTS only; 5 bytes of PTS follow.
PES_FLAGS = bytes((0x84, 0x80, 0x05))
PES_HEADER_LENGTH = 9
PTS_FLAG = 0x80
ADAPTATION = 0x20
HAS_PAYLOAD = 0x10
PAYLOAD_UNIT_START = 0x40
STUFFING = 0xFF
ID3_VERSION = b"ID3\x04\x00\x00"
UTF8 = b"\x03"
CRC_POLYNOMIAL = 0x04C11DB7
PID_HIGH = bytes(byte & 0x1F for byte in range(256))  # bytes.translate table: byte 1 of a header -> PID bits
MINIMUM_SECTION = 16  # table header, one program or no stream, CRC


def syncsafe(size: int) -> bytes:
    """ID3v2.4 sizes: 28 bits in four bytes of 7 bits each, so no size ever looks like an MPEG sync word."""
    return bytes((size >> 21 & 0x7F, size >> 14 & 0x7F, size >> 7 & 0x7F, size & 0x7F))


def id3_frame(frame_id: bytes, body: bytes) -> bytes:
    return frame_id + syncsafe(len(body)) + b"\x00\x00" + body


def id3_tag(title: str) -> bytes:
    """An ID3v2.4 tag for an ICY StreamTitle: TIT2, TPE1 when "Artist - Title" splits cleanly, TXXX:StreamTitle."""
    now = split_title(title)
    frames = [id3_frame(b"TIT2", UTF8 + (now.song or now.title).encode())]
    if now.artist is not None:
        frames.append(id3_frame(b"TPE1", UTF8 + now.artist.encode()))
    frames.append(id3_frame(b"TXXX", UTF8 + b"StreamTitle\x00" + now.title.encode()))
    body = b"".join(frames)
    return ID3_VERSION + syncsafe(len(body)) + body


def crc_table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        crc = index << 24
        for _ in range(8):
            crc = (crc << 1 ^ CRC_POLYNOMIAL) & 0xFFFFFFFF if crc & 0x80000000 else crc << 1
        table.append(crc)
    return tuple(table)


CRC_TABLE = crc_table()


def crc32_mpeg2(data: bytes) -> int:
    """The CRC of PSI sections: polynomial 0x04C11DB7, not reflected, initial value all ones, no final XOR (zlib's
    CRC-32 is the reflected one). Only PAT and PMT sections, a few dozen bytes, go through here."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = (crc << 8 & 0xFFFFFFFF) ^ CRC_TABLE[crc >> 24 ^ byte]
    return crc


def pts_of(unix_time: float) -> int:
    """The segments' clock: FFmpeg's initial_offset puts Unix time x 90 kHz (mod 2^33) in every PTS."""
    return round(unix_time * PTS_CLOCK) % PTS_WRAP


def encode_pts(pts: int) -> bytes:
    """'0010', PTS[32..30], marker; PTS[29..15], marker; PTS[14..0], marker."""
    return bytes((0x21 | (pts >> 29 & 0x0E), pts >> 22 & 0xFF, (pts >> 14 & 0xFE) | 1, pts >> 7 & 0xFF,
                  (pts << 1 & 0xFE) | 1))


def decode_pts(field: bytes) -> int:
    return ((field[0] & 0x0E) << 29 | field[1] << 22 | (field[2] & 0xFE) << 14 | field[3] << 7
            | field[4] >> 1)


def pes_packets(tag: bytes, pts: int, pid: int, continuity: int) -> list[bytes]:
    """One PES (stream_id 0xBD, PTS only, data aligned) in TS packets; the last is filled up with an adaptation
    field of stuffing bytes: in a PES, unlike a section, 0xFF after the end would be read as data."""
    pes_length = len(PES_FLAGS) + 5 + len(tag)
    pes = b"\x00\x00\x01" + bytes((PRIVATE_STREAM_1,)) + struct.pack(">H", pes_length) + PES_FLAGS \
        + encode_pts(pts) + tag
    packets = []
    for index, start in enumerate(range(0, len(pes), PAYLOAD)):
        chunk = pes[start:start + PAYLOAD]
        first = PAYLOAD_UNIT_START if start == 0 else 0
        header = bytes((SYNC, first | pid >> 8, pid & 0xFF))
        counter = (continuity + index) % 16
        if len(chunk) == PAYLOAD:
            packets.append(header + bytes((HAS_PAYLOAD | counter,)) + chunk)
            continue
        field_length = PAYLOAD - len(chunk) - 1
        field = bytes((field_length,)) + (b"\x00" + bytes((STUFFING,)) * (field_length - 1) if field_length else b"")
        packets.append(header + bytes((ADAPTATION | HAS_PAYLOAD | counter,)) + field + chunk)
    return packets


def find_pairs(pairs: bytes | bytearray, key: bytes, first: int = 0) -> Iterator[int]:
    """The indexes k from `first` on where pairs[2k:2k+2] == key, in order."""
    position = pairs.find(key, 2 * first)
    while position >= 0:
        if position % 2:
            position = pairs.find(key, position + 1)
            continue
        yield position // 2
        position = pairs.find(key, position + 2)


class Packets:
    """A segment's bytes and bytes 1 and 2 of every packet (flags and PID) side by side: searching those finds a
    PID's packets without a look at the audio in between, whose bytes may look like anything."""

    def __init__(self, data: bytes) -> None:
        count = len(data) // PACKET
        if not count or len(data) % PACKET or data[::PACKET] != bytes((SYNC,)) * count:
            raise ValueError("not a whole number of MPEG-TS packets")
        self.data = data
        self.count = count
        self.headers = bytearray(2 * count)
        self.headers[0::2] = data[1::PACKET]
        self.headers[1::2] = data[2::PACKET]

    def unit_starts(self, pid: int, first: int = 0) -> Iterator[int]:
        """The packets of `pid` from index `first` on that start a PES or a section (transport_error and priority
        bits clear, as FFmpeg writes them)."""
        return find_pairs(self.headers, bytes((PAYLOAD_UNIT_START | pid >> 8, pid & 0xFF)), first)

    def free_pid(self) -> int:
        """The first PID from PREFERRED_PID on that no packet uses, whatever its flags."""
        pids = bytearray(self.headers)
        pids[0::2] = self.headers[0::2].translate(PID_HIGH)
        for pid in range(PREFERRED_PID, NULL_PID):
            if next(find_pairs(pids, bytes((pid >> 8, pid & 0xFF))), None) is None:
                return pid
        raise ValueError("every PID is taken")

    def payload(self, index: int) -> int:
        """Where the payload of packet `index` starts, past its adaptation field."""
        offset = index * PACKET
        control = self.data[offset + 3] & 0x30
        start = offset + HEADER + (1 + self.data[offset + HEADER] if control & ADAPTATION else 0)
        if not control & HAS_PAYLOAD or start >= offset + PACKET:
            raise ValueError(f"packet {index} has no payload")
        return start

    def section(self, index: int, table_id: int) -> bytes:
        """The PSI section that starts in packet `index`; it must fit in that packet, as FFmpeg's do."""
        start = self.payload(index)
        start += 1 + self.data[start]
        end = (index + 1) * PACKET
        if start + 3 > end or self.data[start] != table_id:
            raise ValueError(f"no table {table_id} in packet {index}")
        length = 3 + ((self.data[start + 1] & 0x0F) << 8 | self.data[start + 2])
        if start + length > end or length < MINIMUM_SECTION:
            raise ValueError(f"the table in packet {index} does not fit in it")
        found = self.data[start:start + length]
        if crc32_mpeg2(found):
            raise ValueError(f"the table in packet {index} fails its CRC")
        return found

    def pmt_pid(self) -> int:
        """The PID of the first program's PMT, from the first PAT."""
        pat_index = next(self.unit_starts(PAT_PID), None)
        if pat_index is None:
            raise ValueError("no PAT")
        pat = self.section(pat_index, PAT_TABLE)
        for entry in range(8, len(pat) - 4, 4):
            if pat[entry] << 8 | pat[entry + 1]:
                return (pat[entry + 2] & 0x1F) << 8 | pat[entry + 3]
        raise ValueError("the PAT lists no program")

    def pts(self, index: int) -> int:
        """The PTS of the PES that starts in packet `index`."""
        start = self.payload(index)
        header = self.data[start:start + PES_HEADER_LENGTH + 5]
        if len(header) < PES_HEADER_LENGTH + 5 or header[:3] != b"\x00\x00\x01" or not header[7] & PTS_FLAG:
            raise ValueError(f"no PES header with a PTS in packet {index}")
        return decode_pts(header[PES_HEADER_LENGTH:])

    def first_at_or_after(self, pid: int, pts: int, first: int) -> int:
        """The index of the first PES of `pid` (from packet `first` on) whose PTS is at or after `pts`, or the
        packet count when there is none. A single stream's PTS only grow, so bisection over the packet indexes
        finds it reading a dozen PTS; the comparison is on the 33-bit clock, which may wrap inside a segment."""
        def next_start(index: int) -> int:
            return next(self.unit_starts(pid, index), self.count)

        def reached(index: int) -> bool:
            start = next_start(index)
            return start == self.count or wrapped_delta(self.pts(start), pts) >= 0

        return next_start(bisect_left(range(first, self.count), True, key=reached) + first)


def elementary_streams(pmt: bytes) -> Iterator[tuple[int, int]]:
    """(stream_type, PID) of each stream the PMT lists."""
    position = 12 + ((pmt[10] & 0x0F) << 8 | pmt[11])
    while position + 5 <= len(pmt) - 4:
        yield pmt[position], (pmt[position + 1] & 0x1F) << 8 | pmt[position + 2]
        position += 5 + ((pmt[position + 3] & 0x0F) << 8 | pmt[position + 4])


@lru_cache(maxsize=4096)
def tagged_pmt_payload(payload: bytes, metadata_pid: int) -> bytes:
    """A PMT packet's payload (pointer field, section, stuffing) with the metadata stream added.

    program_info gets the metadata_pointer_descriptor (it names this program), the stream loop one more entry. The
    version stays: every PMT of every tagged segment says the same. Cached: a station's PMT never changes, and
    hls-playlists keeps a thousand stations' in a few hundred kilobytes."""
    start = 1 + payload[0]
    old = payload[start:start + 3 + ((payload[start + 1] & 0x0F) << 8 | payload[start + 2])]
    info_end = 12 + ((old[10] & 0x0F) << 8 | old[11])
    pointer_descriptor = bytes((POINTER_TAG, len(FORMAT_IDENTIFIERS) + 3)) + FORMAT_IDENTIFIERS \
        + bytes((POINTER_FLAGS,)) + old[3:5]
    metadata_descriptor = bytes((METADATA_TAG, len(FORMAT_IDENTIFIERS) + 1)) + FORMAT_IDENTIFIERS \
        + bytes((METADATA_FLAGS,))
    stream = bytes((STREAM_TYPE_METADATA, 0xE0 | metadata_pid >> 8, metadata_pid & 0xFF)) \
        + struct.pack(">H", 0xF000 | len(metadata_descriptor)) + metadata_descriptor
    body = old[3:10] + struct.pack(">H", 0xF000 | (info_end - 12 + len(pointer_descriptor))) + old[12:info_end] \
        + pointer_descriptor + old[info_end:-4] + stream
    new = old[:1] + struct.pack(">H", (old[1] << 8 & 0xF000) | (len(body) + 4)) + body
    result = payload[:start] + new + struct.pack(">I", crc32_mpeg2(new))
    if len(result) > PAYLOAD:
        raise ValueError("the PMT with the metadata stream would not fit in one packet")
    return result + bytes((STUFFING,)) * (PAYLOAD - len(result))


def wrapped_delta(later: int, earlier: int) -> int:
    """later - earlier on the 33-bit clock, between -2^32 and 2^32."""
    return (later - earlier + PTS_WRAP // 2) % PTS_WRAP - PTS_WRAP // 2


def tagged(data: bytes, tags: Sequence[tuple[float, bytes]], continuity: int) -> tuple[list[bytes | memoryview], int]:
    """The pieces of the tagged segment and the next continuity counter (tag_segment without the file)."""
    packets = Packets(data)
    pmt_pid = packets.pmt_pid()
    pmt_indexes = list(packets.unit_starts(pmt_pid))
    if not pmt_indexes:
        raise ValueError("no PMT")
    streams = list(elementary_streams(packets.section(pmt_indexes[0], PMT_TABLE)))
    if not streams or any(stream_type == STREAM_TYPE_METADATA for stream_type, _ in streams):
        raise ValueError("no stream, or a metadata stream already")
    payloads = {data[index * PACKET + HEADER:(index + 1) * PACKET] for index in pmt_indexes}
    if len(payloads) > 1 or data[pmt_indexes[0] * PACKET + 3] & 0x30 != HAS_PAYLOAD:
        raise ValueError("PMT packets that differ or have an adaptation field")
    metadata_pid = packets.free_pid()
    new_pmt = tagged_pmt_payload(payloads.pop(), metadata_pid)
    # Each tag before the first audio PES at or after its time (the file stays in time order), never before the
    # first PMT (a player must know the stream before it sees a packet of it).
    inserts: dict[int, list[bytes]] = {}
    for unix_time, tag in sorted(tags, key=lambda item: item[0]):
        pts = pts_of(unix_time)
        index = packets.first_at_or_after(streams[0][1], pts, pmt_indexes[0] + 1)
        tag_packets = pes_packets(tag, pts, metadata_pid, continuity)
        continuity = (continuity + len(tag_packets)) % 16
        inserts.setdefault(index, []).extend(tag_packets)
    view = memoryview(data)
    pieces: list[bytes | memoryview] = []
    position = 0
    pmt_set = set(pmt_indexes)
    for index in sorted(pmt_set | inserts.keys()):
        offset = index * PACKET
        pieces += (view[position:offset], *inserts.get(index, ()))
        position = offset
        if index in pmt_set:
            pieces += (view[offset:offset + HEADER], new_pmt)
            position = offset + PACKET
    pieces.append(view[position:])
    return pieces, continuity


def tag_segment(path: Path, tags: Sequence[tuple[float, bytes]], continuity: int) -> int:
    """Rewrite the MPEG-TS segment at `path` (atomically: temp file in the same directory + os.replace, mode 0644,
    no fsync needed) with each (Unix time, ID3 tag) as a timed-ID3 PES; returns the continuity counter to pass for
    the station's next segment. A file that is not the MPEG-TS it expects (no PAT/PMT found, truncated) raises
    ValueError and is left untouched.

    With no tags the PMT still announces the metadata stream: every segment of a station says the same."""
    try:
        pieces, continuity = tagged(path.read_bytes(), tags, continuity)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    write_atomically(path, b"".join(pieces), mode=0o644, make_parents=False, durable=False)
    return continuity

"""The edge benchmark's stations and listeners (benchmarks/hls_load.py): what they count is what was asked."""

from __future__ import annotations

import asyncio

import pytest
from hls_load import Listeners, get, playlist_text, segment_bytes, segment_names
from patience import PATIENCE


def test_a_playlist_lists_the_newest_segments_by_slot() -> None:
    text = playlist_text(41, 2.0)
    assert "#EXT-X-MEDIA-SEQUENCE:37\n" in text
    assert segment_names(text) == ["37.ts", "38.ts", "39.ts", "40.ts", "41.ts"]
    # An edge puts the listener's session on each line; the names stay the same.
    assert segment_names(text.replace(".ts\n", ".ts?s=abc\n")) == segment_names(text)


def test_a_segment_is_two_seconds_of_96_kbit_in_whole_packets() -> None:
    segment = segment_bytes(2, 96)
    assert len(segment) % 188 == 0 and abs(len(segment) - 24_000) < 188


async def serving(answers: dict[str, bytes], asked: list[str]) -> asyncio.Server:
    """A keep-alive HTTP server answering each path with its raw response (headers and body)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while request := await reader.readuntil(b"\r\n\r\n"):
                path = request.split(b" ")[1].decode()
                asked.append(path)
                writer.write(answers[path.partition("?")[0]])
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_a_get_reads_a_sized_and_a_chunked_body_on_one_connection() -> None:
    answers = {"/sized": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
               "/chunked": b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"3\r\nabc\r\n0a\r\n0123456789\r\n0\r\n\r\n"}

    async def both() -> list[tuple[int, bytes]]:
        server = await serving(answers, [])
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        try:
            return [await get(reader, writer, "/chunked"), await get(reader, writer, "/sized"),
                    await get(reader, writer, "/chunked")]
        finally:
            writer.close()
            server.close()

    assert asyncio.run(asyncio.wait_for(both(), PATIENCE)) == [(404, b"abc0123456789"), (200, b"hello"),
                                                              (404, b"abc0123456789")]


@pytest.mark.parametrize("newest", [12, 13])
def test_a_listener_starts_at_the_newest_segment_and_fetches_each_new_one_once(newest: int) -> None:
    """Two polls of a playlist that moved on by `newest - 12` segments in between."""
    asked: list[str] = []
    playlists = iter([playlist_text(12, 2.0), playlist_text(newest, 2.0)])

    def reply(body: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    class Answers(dict[str, bytes]):
        def __getitem__(self, path: str) -> bytes:
            return reply(next(playlists, playlist_text(newest, 2.0)).encode() if path.endswith(".m3u8") else b"ts")

    async def two_polls() -> int:
        server = await serving(Answers(), asked)
        crowd = Listeners(server.sockets[0].getsockname()[1], ["one"], 1, 0.2)
        task = asyncio.create_task(crowd.listener(0))
        try:
            while sum(path.endswith(".m3u8?s=bench-0") for path in asked) < 3:
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            server.close()
        return crowd.counts.errors

    assert asyncio.run(asyncio.wait_for(two_polls(), PATIENCE)) == 0
    segments = [path for path in asked if ".ts" in path]
    assert segments == [f"/hls/one/{slot}.ts?s=bench-0" for slot in range(12, newest + 1)]

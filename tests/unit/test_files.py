"""Tests of radio_hls.common.files: atomic writes (mode, group, no half-written file, no temp file left) and JSON
reads that give nothing for a missing or broken file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from radio_hls.common import files
from radio_hls.common.files import read_json, read_json_object, write_atomically


def test_write_atomically_writes_with_mode_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "stations" / "radio-joy.env"
    write_atomically(target, "A=\"1\"\n", mode=0o640)
    assert target.read_text(encoding="utf-8") == "A=\"1\"\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["radio-joy.env"]

    write_atomically(target, "A=\"2\"\n", mode=0o600)
    assert target.read_text(encoding="utf-8") == "A=\"2\"\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["radio-joy.env"]


def test_write_atomically_mode_ignores_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomically(tmp_path / "a.env", "x", mode=0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.env").stat().st_mode) == 0o644


def test_write_atomically_keeps_old_content_when_replace_fails(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "radio-joy.env"
    target.write_text("old\n", encoding="utf-8")
    target.chmod(0o640)

    def failing_replace(src: str, dst: object) -> None:
        assert Path(src).read_text(encoding="utf-8") == "new\n"  # the new content was complete
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, "new\n")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["radio-joy.env"]


def test_write_atomically_keeps_old_content_when_writing_fails(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "radio-joy.env"
    target.write_text("old\n", encoding="utf-8")

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(files.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        write_atomically(target, "new\n")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["radio-joy.env"]


def test_write_atomically_refuses_unencodable_content_cleanly(tmp_path: Path) -> None:
    target = tmp_path / "radio-joy.env"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):
        write_atomically(target, "lone surrogate \udc80")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["radio-joy.env"]


def test_write_atomically_sets_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int, int]] = []

    class Group:
        gr_gid = 4242

    monkeypatch.setattr(files.grp, "getgrnam", lambda name: Group if name == "hls" else None)
    monkeypatch.setattr(files.os, "chown", lambda path, uid, gid: calls.append((Path(path).name, uid, gid)))
    write_atomically(tmp_path / "radio-joy.env", "x", group="hls")
    assert len(calls) == 1
    name, uid, gid = calls[0]
    assert name.startswith(".radio-joy.env.") and name.endswith(".tmp")  # set before the rename
    assert (uid, gid) == (-1, 4242)


# --- read_json ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "expected"), [
    (None, None), ("", None), ("{not json", None), ("[1, 2]", [1, 2]), ('{"a": 1}', {"a": 1}),
])
def test_read_json_gives_nothing_for_a_missing_or_broken_file(tmp_path: Path, content: str | None,
                                                             expected: object) -> None:
    path = tmp_path / "document.json"
    if content is not None:
        path.write_text(content)
    assert read_json(path) == expected
    assert read_json_object(path) == (expected if isinstance(expected, dict) else {})

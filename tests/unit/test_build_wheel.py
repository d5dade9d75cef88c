"""Tests of files/scripts/build-wheel.py, which the role runs on the controller: one wheel per content of the
programs, byte for byte the same for the same tree (so an unchanged deployment copies and installs nothing), a new
version when a program changes (what the hosts' pip compares)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "files" / "scripts"


def build(source: Path, cache: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(SOURCE / "build-wheel.py"), str(source), str(cache)],
                         capture_output=True, text=True, check=True, timeout=300)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.fixture
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package's source, as another checkout would have it."""
    copy = tmp_path_factory.mktemp("checkout") / "scripts"
    shutil.copytree(SOURCE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    return copy


def test_the_same_tree_gives_the_same_wheel_once(tree: Path, tmp_path: Path) -> None:
    first = build(SOURCE, tmp_path / "one")
    assert first["built"] is True
    assert build(SOURCE, tmp_path / "one") == {**first, "built": False}  # cached by content
    elsewhere = build(tree, tmp_path / "two")  # another checkout, another cache, other file times and modes
    assert elsewhere["version"] == first["version"]
    assert Path(elsewhere["wheel"]).read_bytes() == Path(first["wheel"]).read_bytes()
    with zipfile.ZipFile(first["wheel"]) as wheel:
        names = wheel.namelist()
    assert "radio_hls/common/contract.json" in names
    assert not any("__pycache__" in name or name.startswith("build-wheel") for name in names)


def test_a_changed_program_is_a_new_version(tree: Path, tmp_path: Path) -> None:
    before = build(tree, tmp_path)
    logs = tree / "radio_hls" / "common" / "logs.py"
    logs.write_text(logs.read_text() + "\n# changed\n")
    after = build(tree, tmp_path)
    assert after["built"] is True
    assert after["version"] != before["version"]
    assert after["version"].startswith("1.0+") and before["version"].startswith("1.0+")

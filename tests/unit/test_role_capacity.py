"""The role's capacity check (roles/hls/tasks/capacity.yml, one of its input checks), run by ansible-playbook.

The host's facts are crafted (`ansible_facts` as an extra variable: the filesystems and the RAM of a host that is not
this one), so each number is exact; the only command that runs is `du` on a temporary directory. Run through the
real tasks rather than a copy of their arithmetic in Python, which could agree with itself and not with the role.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_role_input import check_input

GB = 10**9
REFUSED = "the output storage is too small for the planned stations"
# 1000 stations x 128 kbit/s x (2 x 30 min + 2 x 6 s): 1000 x 16,000 B/s x 3612 s.
BIG = {"hls_planned_stations": 1000, "hls_planned_kbps": 128, "hls_window_minutes": 30, "hls_segment_seconds": 6}
BIG_NEED = "need 57792.0 MB"


def filesystems(*mounts: tuple[str, int]) -> dict[str, Any]:
    """ansible_facts with these (mount point, free bytes) filesystems, as the setup module reports them."""
    return {"mounts": [{"mount": mount, "device": f"/dev/fake{index}", "fstype": "ext4", "size_available": free,
                        "size_total": 2 * free} for index, (mount, free) in enumerate(mounts)]}


def check(tmp_path: Path, **variables: Any) -> tuple[bool, str]:
    """(accepted, output) of the role's input checks with these variables; the output directory in tmp_path."""
    output = tmp_path / "output"
    output.mkdir(exist_ok=True)
    # du runs on this machine, with this Python (interpreter discovery may find none that works).
    result = check_input(tmp_path, "hls", {"hls_output_disk_dir": str(output),
                                           "ansible_python_interpreter": sys.executable, **variables})
    accepted = result.returncode == 0
    assert accepted or REFUSED in result.stdout, result.stdout  # refused by the capacity check, not another one
    return accepted, result.stdout


def test_a_window_the_disk_cannot_hold_is_refused_with_the_need_the_room_and_what_to_change(tmp_path: Path) -> None:
    accepted, output = check(tmp_path, **BIG, ansible_facts=filesystems(("/", 50 * GB)))
    assert not accepted
    assert BIG_NEED in output and "has 50000.0 MB" in output, output
    assert "1000 stations x 128 kbit/s x (2 x 30 min + 2 x 6 s)" in output, output
    for variable in ("hls_window_minutes", "hls_planned_stations", "hls_output_disk_dir"):
        assert variable in output, variable


def test_a_disk_with_room_for_the_window_passes(tmp_path: Path) -> None:
    assert check(tmp_path, **BIG, ansible_facts=filesystems(("/", 58 * GB)))[0]


def test_the_ladder_counts(tmp_path: Path) -> None:
    # 58 GB hold the main renditions; a 48k rendition each adds 64 kbit/s on disk (its bitrate plus a third).
    ladder = [{"name": "low", "bitrate": "48k"}]
    accepted, output = check(tmp_path, **BIG, hls_variants=ladder, ansible_facts=filesystems(("/", 58 * GB)))
    assert not accepted and "1000 stations x 128 kbit/s + 64 for the ladder (hls_variants)" in output, output
    assert "need 86688.0 MB" in output, output
    assert check(tmp_path, **BIG, hls_variants=ladder, ansible_facts=filesystems(("/", 87 * GB)))[0]


def test_the_filesystem_that_holds_the_directory_counts(tmp_path: Path) -> None:
    # The longest mount point at or above the directory: not /, and not a sibling whose name merely starts alike.
    small_here = filesystems(("/", 100 * GB), (str(tmp_path), 1 * GB), (f"{tmp_path}/out", 100 * GB))
    accepted, output = check(tmp_path, **BIG, ansible_facts=small_here)
    assert not accepted and f"mounted on {tmp_path}:" in output, output
    big_here = filesystems(("/", 1 * GB), (str(tmp_path), 100 * GB), (f"{tmp_path}/out", 1 * GB))
    assert check(tmp_path, **BIG, ansible_facts=big_here)[0]


def test_what_the_directory_holds_counts_as_room(tmp_path: Path) -> None:
    # 1 station x 100 kbit/s x (2 x 1 min + 2 x 2 s) = 1.55 MB; 1 MB free, plus the 2 MB of segments kept there.
    small = {"hls_planned_stations": 1, "hls_planned_kbps": 100, "hls_window_minutes": 1, "hls_segment_seconds": 2,
             "ansible_facts": filesystems(("/", 1_000_000))}
    assert not check(tmp_path, **small)[0]
    (tmp_path / "output" / "station").mkdir(parents=True)
    (tmp_path / "output" / "station" / "1-0.ts").write_bytes(b"\x47" * 2_000_000)
    assert check(tmp_path, **small)[0]


def test_without_the_filesystem_in_the_facts_the_host_is_asked(tmp_path: Path) -> None:
    # As in a container, whose overlay root the facts leave out: findmnt, on this machine.
    mount = subprocess.run(["findmnt", "--noheadings", "--output", "TARGET", "--target", str(tmp_path)],
                           capture_output=True, text=True, check=True).stdout.strip()
    # 1000 x 10 Mbit/s x 2 h: 18 TB, more than this machine has.
    accepted, output = check(tmp_path, hls_planned_stations=1000, hls_planned_kbps=10_000, hls_window_minutes=120,
                             ansible_facts={"mounts": []})
    assert not accepted and f"mounted on {mount}:" in output, output
    assert check(tmp_path, hls_planned_stations=1, hls_planned_kbps=1, hls_window_minutes=1,
                 ansible_facts={"mounts": []})[0]


# 20 stations x 192 kbit/s x (2 x 25 min + 2 x 6 s): 20 x 24,000 B/s x 3012 s = 1445.8 MB, the defaults with a backend.
@pytest.mark.parametrize(("max_size", "memtotal_mb", "accepted"), [
    ("25%", 4096, False),  # 1073.7 MB
    ("50%", 4096, True),  # 2147.5 MB
    ("1300M", 4096, False),  # 1363.1 MB
    ("1500M", 4096, True),
    ("2g", 4096, True),
    ("8G", 1024, False),  # a tmpfs larger than the RAM: the RAM counts
])
def test_a_window_the_tmpfs_cannot_hold_is_refused(tmp_path: Path, max_size: str, memtotal_mb: int,
                                                  accepted: bool) -> None:
    got, output = check(tmp_path, hls_output_storage="ram", hls_output_max_size=max_size, hls_planned_stations=20,
                        hls_graphql_endpoint="http://127.0.0.1:1/graphql",
                        ansible_facts={"memtotal_mb": memtotal_mb})
    assert got == accepted, output
    if not accepted:
        assert "need 1445.8 MB" in output and "hls_output_max_size" in output, output


def test_a_backend_plans_20_stations_and_a_static_list_its_own(tmp_path: Path) -> None:
    # Room for one station at the defaults (192 kbit/s, 25 min: 72.3 MB), not for 20.
    room = filesystems(("/", 73_000_000))
    static = [{"slug": "one", "stream_url": "http://radio.example/one"}]
    assert check(tmp_path, hls_stations=static, ansible_facts=room)[0]
    accepted, output = check(tmp_path, hls_graphql_endpoint="http://127.0.0.1:1/graphql", ansible_facts=room)
    assert not accepted and "20 stations x 192 kbit/s" in output, output


@pytest.mark.parametrize("variables", [
    {"hls_output_storage": "nfs"},
    {"hls_output_disk_dir": "/srv"},
    {"hls_output_disk_dir": "/"},
    {"hls_output_disk_dir": "relative/dir"},
    {"hls_output_disk_dir": "/var/lib/../../etc"},
    {"hls_output_disk_dir": "/var/lib/hls/output/"},
    {"hls_output_disk_dir": "/var/lib/hls out"},
    {"hls_output_max_size": "100%"},
    {"hls_output_max_size": "0"},
    {"hls_output_max_size": "1T; rm"},
    {"hls_planned_kbps": 0},
    {"hls_planned_stations": -1},
    {"hls_window_minutes": 0},
    {"hls_window_minutes": 121},
])
def test_storage_settings_out_of_range_are_refused(tmp_path: Path, variables: dict[str, Any]) -> None:
    result = check_input(tmp_path, "hls", variables)
    assert result.returncode != 0, result.stdout
    assert ("the output storage settings are invalid" in result.stdout
            or "the stream settings are out of range" in result.stdout), result.stdout


def test_the_removed_playlist_size_names_its_replacement(tmp_path: Path) -> None:
    result = check_input(tmp_path, "hls", {"hls_playlist_size": 6})
    assert result.returncode != 0, result.stdout
    assert "hls_playlist_size is gone: set the timeshift window in minutes, hls_window_minutes" in result.stdout

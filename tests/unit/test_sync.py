"""Tests of radio_hls/stations/sync.py: selection, planning, and whole runs against the fake backend.

systemd is replaced by FakeSystemctl, which records every argument list and answers `is-enabled` and
`list-units` from its own state. The real systemctl can never run here (see `no_real_systemctl`).
"""

from __future__ import annotations

import json
import logging
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from dotenv import dotenv_values
from patience import GENEROUS_TIMEOUT, SHORT_TIMEOUT

from radio_hls.common.graphql import BackendError
from radio_hls.operations.snapshot import station_slugs
from radio_hls.stations import startup
from radio_hls.stations import sync as hls_sync
from radio_hls.stations.placement import Placement
from radio_hls.stations.sync import Config, Plan, SyncRefused, make_plan, select_stations, sync

if TYPE_CHECKING:
    from conftest import FakeBackend, HeldHang

UNIT = re.compile(r"^hls@(.+)\.service$")
READ_VERBS = ("is-enabled", "list-units")


def record(slug: str, url: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": extra.pop("id", 1), "title": extra.pop("title", slug.title()), "slug": slug,
            "stream_url": url if url is not None else f"http://{slug}.example/stream.mp3",
            "generate_hls_stream": True, "disabled": False, **extra}


class FakeSystemctl:
    """Records calls; keeps enabled and loaded hls@ instances the way systemd would after each verb."""

    def __init__(self, enabled: Sequence[str] = (), loaded: Sequence[str] = ()) -> None:
        self.calls: list[list[str]] = []
        self.enabled = set(enabled)
        self.loaded = set(loaded)
        self.fail_on: str | None = None

    def __call__(self, args: Sequence[str]) -> str:
        args = list(args)
        self.calls.append(args)
        verb = args[0]
        if verb == self.fail_on:
            raise RuntimeError(f"systemctl {verb} ... failed: injected")
        slugs = [match.group(1) for match in map(UNIT.match, args) if match]
        if verb == "is-enabled":
            return "".join(("enabled" if slug in self.enabled else "disabled") + "\n" for slug in slugs)
        if verb == "list-units":
            return "".join(f"hls@{slug}.service loaded active running HLS {slug}\n" for slug in sorted(self.loaded))
        if verb == "enable":
            self.enabled.update(slugs)
            if "--now" in args:
                self.loaded.update(slugs)
        elif verb in ("restart", "start"):
            self.loaded.update(slugs)
        elif verb == "reset-failed":
            pass
        elif verb == "disable":
            self.enabled.difference_update(slugs)
            if "--now" in args:
                self.loaded.difference_update(slugs)
        else:
            raise AssertionError(f"unexpected systemctl call {args}")
        return ""

    def mutations(self) -> list[list[str]]:
        return [call for call in self.calls if call[0] not in READ_VERBS]

    def reset_calls(self) -> None:
        self.calls.clear()


@pytest.fixture(autouse=True)
def no_real_systemctl(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a test gets wrong, hls_sync must not run the host's systemctl."""
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"hls_sync tried to run a real command: {args}")

    monkeypatch.setattr(hls_sync, "subprocess", SimpleNamespace(run=forbidden))


@pytest.fixture
def stations_dir(tmp_path: Path) -> Path:
    return tmp_path / "stations"


@pytest.fixture
def environ(backend: FakeBackend, stations_dir: Path) -> dict[str, str]:
    """hls-sync's environment: the fake backend as the source, a temporary stations dir, no group."""
    return {
        "GRAPHQL_ENDPOINT": backend.graphql,
        "GRAPHQL_TOKEN": "s3cret",
        "GRAPHQL_TIMEOUT_SECONDS": str(GENEROUS_TIMEOUT),
        "HLS_STATIONS_DIR": str(stations_dir),
        "HLS_STATIONS_FILE": str(stations_dir.parent / "no-such-file.json"),
        "HLS_SEGMENT_SECONDS": "6",
        "HLS_CODEC": "auto",
    }


def run(environ: dict[str, str], systemctl: FakeSystemctl) -> Plan:
    return sync(Config.from_env(environ), systemctl)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of the stations dir (temp files included): content and mode."""
    if not directory.exists():
        return {}
    return {path.name: (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
            for path in sorted(directory.iterdir())}


def env_values(path: Path) -> dict[str, str | None]:
    return dict(dotenv_values(path, interpolate=False))


# --- select_stations ---------------------------------------------------------------------------------------

def test_select_keeps_only_generate_true_and_disabled_false() -> None:
    records = [
        record("yes"),
        record("no-hls", generate_hls_stream=False),
        record("off", disabled=True),
        record("both-wrong", generate_hls_stream=False, disabled=True),
        record("also-yes", id=2),
    ]
    selection = select_stations(records)
    assert [station.slug for station in selection.stations] == ["yes", "also-yes"]
    assert selection.refused == set() and selection.problems == []


def test_select_refuses_records_whose_flags_are_unreadable() -> None:
    # Not plainly true or false: refused like any invalid record (kept running if deployed), never "removed".
    records = [
        record("truthy-string", generate_hls_stream="true"),
        record("truthy-int", generate_hls_stream=1),
        record("disabled-none", disabled=None),
        record("disabled-zero", disabled=0),
        {key: value for key, value in record("no-flags").items() if key not in ("generate_hls_stream", "disabled")},
        {key: value for key, value in record("no-generate").items() if key != "generate_hls_stream"},
        record("Bad Slug", disabled=None),
        record("yes"),
    ]
    selection = select_stations(records)
    assert [station.slug for station in selection.stations] == ["yes"]
    assert selection.refused == {"truthy-string", "truthy-int", "disabled-none", "disabled-zero", "no-flags",
                                 "no-generate"}
    assert selection.problems == [
        "skipping station: truthy-string: generate_hls_stream is 'true', not true or false",
        "skipping station: truthy-int: generate_hls_stream is 1, not true or false",
        "skipping station: disabled-none: disabled is None, not true or false",
        "skipping station: disabled-zero: disabled is 0, not true or false",
        "skipping station: no-flags: generate_hls_stream is missing, not true or false",
        "skipping station: no-generate: generate_hls_stream is missing, not true or false",
        "skipping station: slug 'Bad Slug': disabled is None, not true or false",
    ]


def test_select_skips_invalid_records_with_an_error_and_keeps_the_others() -> None:
    records = [
        record("first"),
        record("../etc", "http://x.example/"),
        record("Upper"),
        record("bad-url", "file:///etc/passwd"),
        record("bad-id", id="7"),
        "not an object",
        None,
        record("last", id=9, title="Last\nOne"),
    ]
    selection = select_stations(records)
    assert [(s.slug, s.station_id, s.title) for s in selection.stations] == [("first", 1, "First"),
                                                                             ("last", 9, "Last One")]
    assert selection.refused == {"bad-url", "bad-id"}
    errors = selection.problems
    assert len(errors) == 6
    assert "skipping station: slug '../etc' does not match" in errors[0]
    assert "skipping station: slug 'Upper' does not match" in errors[1]
    assert errors[2] == "skipping station: bad-url: stream_url scheme 'file' is not http or https"
    assert errors[3] == "skipping station: bad-id: id '7' is not an integer"
    assert errors[4] == "skipping station record that is not an object: 'not an object'"
    assert errors[5] == "skipping station record that is not an object: None"


def test_select_long_and_hostile_values_make_short_single_lines() -> None:
    records = [record("a" * 300), record("bad-id", id="x" * 5000), record("evil\nERROR forged"),
               "s" * 100_000, record("ok", disabled="\x1b[2J" * 100)]
    problems = select_stations(records).problems
    assert len(problems) == 5
    for problem in problems:
        assert "\n" not in problem and "\x1b" not in problem
        assert len(problem) < 200, problem
    assert problems[0].startswith("skipping station: slug '" + "a" * 79 + "... (300 characters) does not match")


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]], ids=str)
def test_select_duplicates_the_lowest_id_wins_whatever_the_order(order: list[int]) -> None:
    records = [record("dup", "http://seven.example/", id=7), record("other"),
               record("dup", "http://three.example/", id=3), record("dup", "http://five.example/", id=5)]
    selection = select_stations([records[index] for index in order])
    assert sorted((s.slug, s.stream_url) for s in selection.stations) == [
        ("dup", "http://three.example/"), ("other", "http://other.example/stream.mp3")]
    assert selection.refused == set()
    assert len(selection.problems) == 2
    assert all(problem.startswith("skipping station: slug 'dup' is used by more than one record; the one with the "
                                  "lowest id is kept (id 3), not id ") for problem in selection.problems)


def test_select_duplicates_without_id_come_last_and_are_still_ordered() -> None:
    records = [record("dup", "http://b.example/", id=None), record("dup", "http://a.example/", id=None),
               record("dup", "http://c.example/", id=9)]
    for ordered in (records, records[::-1]):
        assert [s.stream_url for s in select_stations(ordered).stations] == ["http://c.example/"]
    assert [s.stream_url for s in select_stations(records[:2]).stations] == ["http://a.example/"]
    assert [s.stream_url for s in select_stations(records[1::-1]).stations] == ["http://a.example/"]


def test_select_a_refused_duplicate_does_not_stop_the_valid_one() -> None:
    selection = select_stations([record("dup", "file:///etc/passwd", id=1), record("dup", id=2)])
    assert [(s.slug, s.station_id) for s in selection.stations] == [("dup", 2)]


def test_select_skips_url_that_urlsplit_cannot_parse() -> None:
    selection = select_stations([record("good"), record("bad", "http://[::1/s")])
    assert [s.slug for s in selection.stations] == ["good"]
    assert selection.refused == {"bad"}


def test_select_normalises_urls_ffmpeg_could_not_open() -> None:
    selection = select_stations([record("upper", "HTTP://Upper.Example:/Live")])
    assert [s.stream_url for s in selection.stations] == ["http://upper.example/Live"]


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:8000/s",
                                 "http://localhost/s", "http://[::1]/s", "http://10.0.0.5/s", "http://192.168.1.1/s"])
def test_select_refuses_internal_targets(url: str) -> None:
    selection = select_stations([record("inside", url)])
    assert selection.stations == [] and selection.refused == {"inside"}
    assert selection.problems == [selection.problems[0]]
    assert selection.problems[0].startswith("skipping station: inside: stream_url host ")
    assert selection.problems[0].endswith("list its network in hls_upstream_allowed_networks to allow it")


def test_select_allowed_networks_admit_internal_targets() -> None:
    networks = hls_sync.allowed_networks("127.0.0.1/32")
    selection = select_stations([record("icecast", "http://127.0.0.1:8000/s"), record("meta", "http://169.254.169.254/"),
                                 record("name", "http://localhost:8000/s")], networks)
    assert [s.slug for s in selection.stations] == ["icecast", "name"]
    assert selection.refused == {"meta"}


# --- make_plan ---------------------------------------------------------------------------------------------

def test_plan_new_station_is_started() -> None:
    plan = make_plan({"b": "B", "a": "A"}, {}, set(), set())
    assert plan == Plan(start=["a", "b"])


def test_plan_changed_content_restarts_only_that_one() -> None:
    plan = make_plan({"a": "A", "b": "B2", "c": "C"}, {"a": "A", "b": "B", "c": "C"}, {"a", "b", "c"}, {"a", "b", "c"})
    assert plan == Plan(restart=["b"])


def test_plan_unchanged_but_not_enabled_is_enabled() -> None:
    plan = make_plan({"a": "A", "b": "B"}, {"a": "A", "b": "B"}, {"b"}, {"b"})
    assert plan == Plan(enable=["a"])


def test_plan_unchanged_and_enabled_is_empty() -> None:
    plan = make_plan({"a": "A"}, {"a": "A"}, {"a"}, {"a"})
    assert plan == Plan() and plan.is_empty()


def test_plan_gone_station_is_removed() -> None:
    plan = make_plan({"a": "A"}, {"a": "A", "gone": "G"}, {"a", "gone"}, {"a", "gone"})
    assert plan == Plan(remove=["gone"])
    assert not plan.is_empty()


def test_plan_refused_and_deployed_is_kept() -> None:
    plan = make_plan({"a": "A"}, {"a": "A", "refused": "R"}, {"a", "refused"}, {"a", "refused"}, keep={"refused"})
    assert plan == Plan()


def test_plan_orphan_units_without_env_file_are_removed() -> None:
    plan = make_plan({"a": "A"}, {"a": "A"}, {"a", "enabled-orphan"}, {"a", "running-orphan"})
    assert plan == Plan(remove=["enabled-orphan", "running-orphan"])


def test_plan_everything_at_once() -> None:
    plan = make_plan(
        desired={"new": "N", "changed": "C2", "disabled": "D", "same": "S"},
        current={"changed": "C", "disabled": "D", "same": "S", "gone": "G", "kept": "K"},
        enabled={"changed", "same", "gone", "kept"},
        running_units={"changed", "same", "gone", "kept", "orphan"},
        keep={"kept"},
    )
    assert plan == Plan(start=["new"], restart=["changed"], enable=["disabled"], remove=["gone", "orphan"])


# --- sync end to end against the fake backend --------------------------------------------------------------

def test_first_run_starts_both_and_second_run_does_nothing(backend: FakeBackend, environ: dict[str, str],
                                                          stations_dir: Path) -> None:
    backend.set_state(token="s3cret", stations=[
        record("radio-joy", title='Radio "Joy" $HOME', id=1),
        record("two", id=2),
        record("no-hls", generate_hls_stream=False, id=3),
        record("off", disabled=True, id=4),
    ])
    systemctl = FakeSystemctl()

    plan = run(environ, systemctl)
    assert plan == Plan(start=["radio-joy", "two"])
    assert systemctl.mutations() == [["enable", "hls@radio-joy.service", "hls@two.service"],
                                     ["start", "hls@radio-joy.service", "hls@two.service"]]
    assert sorted(p.name for p in stations_dir.iterdir()) == ["radio-joy.env", "two.env"]
    for path in stations_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert env_values(stations_dir / "radio-joy.env") == {
        "HLS_STATION_SLUG": "radio-joy",
        "HLS_STATION_ID": "1",
        "HLS_STATION_TITLE": 'Radio "Joy" $HOME',
        "HLS_STREAM_URL": "http://radio-joy.example/stream.mp3",
        "HLS_SEGMENT_SECONDS": "6",
        "HLS_CODEC": "auto",
    }
    assert backend.recorded_requests()[0]["headers"]["Authorization"] == "Bearer s3cret"

    before = snapshot(stations_dir)
    systemctl.reset_calls()
    plan = run(environ, systemctl)
    assert plan.is_empty()
    assert systemctl.mutations() == []
    assert [call[0] for call in systemctl.calls] == ["is-enabled", "list-units"]
    assert snapshot(stations_dir) == before


@pytest.fixture
def deployed(backend: FakeBackend, environ: dict[str, str]) -> FakeSystemctl:
    """Stations `one` and `two` deployed by a first run, whose calls are forgotten."""
    backend.set_state(token="s3cret", stations=[record("one"), record("two")])
    systemctl = FakeSystemctl()
    run(environ, systemctl)
    systemctl.reset_calls()
    return systemctl


def test_changed_url_restarts_only_that_station(deployed: FakeSystemctl, backend: FakeBackend,
                                                environ: dict[str, str], stations_dir: Path) -> None:
    systemctl = deployed
    one_before = (stations_dir / "one.env").read_bytes()

    backend.set_state(stations=[record("one"), record("two", "https://new.example/two.aac")])
    plan = run(environ, systemctl)
    assert plan == Plan(restart=["two"])
    assert systemctl.mutations() == [["enable", "hls@two.service"], ["restart", "--no-block", "hls@two.service"]]
    assert (stations_dir / "one.env").read_bytes() == one_before
    assert env_values(stations_dir / "two.env")["HLS_STREAM_URL"] == "https://new.example/two.aac"
    assert sorted(p.name for p in stations_dir.iterdir()) == ["one.env", "two.env"]


def test_changed_setting_restarts_every_station(deployed: FakeSystemctl, backend: FakeBackend,
                                                environ: dict[str, str], stations_dir: Path) -> None:
    systemctl = deployed
    plan = run({**environ, "HLS_CODEC": "transcode"}, systemctl)
    assert plan == Plan(restart=["one", "two"])
    assert env_values(stations_dir / "one.env")["HLS_CODEC"] == "transcode"


def test_generate_off_removes_the_station(deployed: FakeSystemctl, backend: FakeBackend, environ: dict[str, str],
                                          stations_dir: Path) -> None:
    systemctl = deployed

    backend.set_state(stations=[record("one"), record("two", generate_hls_stream=False)])
    plan = run(environ, systemctl)
    assert plan == Plan(remove=["two"])
    assert systemctl.mutations() == [["disable", "--now", "hls@two.service"], ["reset-failed", "hls@two.service"]]
    assert sorted(p.name for p in stations_dir.iterdir()) == ["one.env"]
    assert systemctl.enabled == {"one"} and systemctl.loaded == {"one"}


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:8000/s",
                                 "http://[fd00:ec2::254]/", "http://localhost/s"])
def test_a_record_turned_internal_keeps_its_deployed_station(deployed: FakeSystemctl, backend: FakeBackend,
                                                             environ: dict[str, str], stations_dir: Path, url: str,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    systemctl = deployed
    before = snapshot(stations_dir)
    backend.set_state(stations=[record("one"), record("two", url)])
    plan = run(environ, systemctl)
    assert plan.is_empty()
    assert systemctl.mutations() == []
    assert snapshot(stations_dir) == before  # two keeps running on its last good settings
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("skipping station: two: stream_url host ")


@pytest.mark.parametrize("changed", [
    pytest.param({"disabled": None}, id="disabled-null"),
    pytest.param({"generate_hls_stream": None}, id="generate-null"),
    pytest.param({"generate_hls_stream": "false"}, id="generate-string"),
    pytest.param({"generate_hls_stream": "missing"}, id="generate-missing"),
    pytest.param({"disabled": "missing"}, id="disabled-missing"),
])
def test_an_unreadable_flag_keeps_its_deployed_station(static_environ: dict[str, str], stations_dir: Path,
                                                       changed: dict[str, Any],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    # The backend's schema makes both flags non-null; a list from elsewhere (the inventory's file, another
    # backend version) may not, and such a record must not stop a running station.
    write_static(static_environ, [record("one"), record("two")])
    systemctl = FakeSystemctl()
    run(static_environ, systemctl)
    before = snapshot(stations_dir)
    two = {key: value for key, value in {**record("two"), **changed}.items() if value != "missing"}
    write_static(static_environ, [record("one"), two])
    systemctl.reset_calls()
    assert run(static_environ, systemctl).is_empty()
    assert systemctl.mutations() == []
    assert snapshot(stations_dir) == before
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("skipping station: two: ")
    assert errors[0].endswith(", not true or false")


def test_a_list_of_only_refused_deployed_records_stops_nothing_and_is_not_an_empty_list(
        deployed: FakeSystemctl, backend: FakeBackend, environ: dict[str, str], stations_dir: Path) -> None:
    before = snapshot(stations_dir)
    backend.set_state(stations=[record("one", "http://10.0.0.1/"), record("two", "http://10.0.0.2/")])
    assert run(environ, deployed).is_empty()  # nothing would stop: not the empty-list refusal
    assert snapshot(stations_dir) == before


def test_allowed_networks_let_the_local_icecast_in(backend: FakeBackend, environ: dict[str, str],
                                                   stations_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    backend.set_state(token="s3cret", stations=[record("local", "http://127.0.0.1:8000/demo", id=1),
                                                record("meta", "http://169.254.169.254/", id=2)])
    systemctl = FakeSystemctl()
    plan = run({**environ, "HLS_UPSTREAM_ALLOWED_NETWORKS": "127.0.0.1/32"}, systemctl)
    assert plan == Plan(start=["local"])
    assert env_values(stations_dir / "local.env")["HLS_STREAM_URL"] == "http://127.0.0.1:8000/demo"
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "skipping station: meta: stream_url host 169.254.169.254 is an internal address (link-local); "
        "list its network in hls_upstream_allowed_networks to allow it"]
    # Without the allow-list the same station is refused, and being deployed, it keeps running.
    assert run(environ, systemctl).is_empty()


def test_swapping_duplicates_restarts_nothing(backend: FakeBackend, environ: dict[str, str]) -> None:
    first, second = record("dup", "http://a.example/", id=4), record("dup", "http://b.example/", id=8)
    backend.set_state(token="s3cret", stations=[second, first])
    systemctl = FakeSystemctl()
    run(environ, systemctl)
    backend.set_state(stations=[first, second])
    systemctl.reset_calls()
    assert run(environ, systemctl).is_empty()
    assert systemctl.mutations() == []


def test_an_upper_case_url_deployed_before_is_rewritten_once(backend: FakeBackend, environ: dict[str, str],
                                                             stations_dir: Path) -> None:
    stations_dir.mkdir()
    old = hls_sync.station_env(hls_sync.Station("loud", "HTTP://LOUD.example/s", "Loud", 1),
                               {"HLS_SEGMENT_SECONDS": "6", "HLS_CODEC": "auto"})
    (stations_dir / "loud.env").write_text(old)
    backend.set_state(token="s3cret", stations=[record("loud", "HTTP://LOUD.example/s")])
    systemctl = FakeSystemctl(enabled=["loud"], loaded=["loud"])
    assert run(environ, systemctl) == Plan(restart=["loud"])
    assert env_values(stations_dir / "loud.env")["HLS_STREAM_URL"] == "http://loud.example/s"
    assert run(environ, systemctl).is_empty()


def test_unchanged_but_disabled_unit_is_enabled_again(deployed: FakeSystemctl, backend: FakeBackend,
                                                      environ: dict[str, str], stations_dir: Path) -> None:
    systemctl = deployed
    before = snapshot(stations_dir)
    systemctl.enabled.discard("one")  # someone ran `systemctl disable hls@one`

    plan = run(environ, systemctl)
    assert plan == Plan(enable=["one"])
    assert systemctl.mutations() == [["enable", "hls@one.service"]]  # it runs: enabled, not started again
    assert snapshot(stations_dir) == before


def test_unchanged_env_file_gets_its_mode_back(backend: FakeBackend, environ: dict[str, str],
                                               stations_dir: Path) -> None:
    backend.set_state(token="s3cret", stations=[record("one")])
    systemctl = FakeSystemctl()
    run(environ, systemctl)
    (stations_dir / "one.env").chmod(0o600)
    assert run(environ, systemctl).is_empty()
    assert stat.S_IMODE((stations_dir / "one.env").stat().st_mode) == 0o640


def test_orphan_unit_without_env_file_is_removed(backend: FakeBackend, environ: dict[str, str],
                                                 stations_dir: Path) -> None:
    backend.set_state(token="s3cret", stations=[record("one")])
    systemctl = FakeSystemctl(enabled=["orphan"], loaded=["orphan", "stray"])
    plan = run(environ, systemctl)
    assert plan == Plan(start=["one"], remove=["orphan", "stray"])
    assert systemctl.mutations() == [["enable", "hls@one.service"], ["start", "hls@one.service"],
                                     ["disable", "--now", "hls@orphan.service", "hls@stray.service"],
                                     ["reset-failed", "hls@orphan.service", "hls@stray.service"]]


def test_refused_station_that_is_deployed_is_kept_as_it_is(deployed: FakeSystemctl, backend: FakeBackend,
                                                           environ: dict[str, str], stations_dir: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    systemctl = deployed
    before = snapshot(stations_dir)

    backend.set_state(stations=[record("one"), record("two", "file:///etc/passwd")])
    plan = run(environ, systemctl)
    assert plan.is_empty()
    assert systemctl.mutations() == []
    assert snapshot(stations_dir) == before
    assert "skipping station: two: stream_url scheme 'file' is not http or https" in caplog.text


def test_hostile_records_never_reach_the_disk_or_systemctl(backend: FakeBackend, environ: dict[str, str],
                                                           stations_dir: Path) -> None:
    backend.set_state(token="s3cret", stations=[
        record("../../etc/cron.d/x"), record("-rf"), record("a b"), record("ok\n"), record("ok"),
        record("evil", "http://evil.example/\nHLS_CODEC=copy"), record("evil2", "concat:/etc/passwd|x"),
    ])
    systemctl = FakeSystemctl()
    plan = run(environ, systemctl)
    assert plan == Plan(start=["ok"])
    assert [p.name for p in stations_dir.parent.rglob("*") if p.is_file()] == ["ok.env"]
    assert systemctl.mutations() == [["enable", "hls@ok.service"], ["start", "hls@ok.service"]]


def test_systemctl_calls_are_chunked(backend: FakeBackend, environ: dict[str, str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hls_sync, "SYSTEMCTL_CHUNK", 2)
    slugs = ["s1", "s2", "s3", "s4", "s5"]
    backend.set_state(token="s3cret", stations=[record(slug) for slug in slugs])
    systemctl = FakeSystemctl(enabled=["s4"])
    run(environ, systemctl)
    assert [call for call in systemctl.calls if call[0] == "is-enabled"] == [
        ["is-enabled", "hls@s1.service", "hls@s2.service"],
        ["is-enabled", "hls@s3.service", "hls@s4.service"],
        ["is-enabled", "hls@s5.service"],
    ]
    assert systemctl.mutations() == [
        ["enable", "hls@s1.service", "hls@s2.service"],
        ["enable", "hls@s3.service", "hls@s4.service"],
        ["enable", "hls@s5.service"],
        ["start", "hls@s1.service", "hls@s2.service", "hls@s3.service", "hls@s4.service", "hls@s5.service"],
    ]

    # The answers of every chunk line up with its units: only s3 is not enabled now.
    systemctl.enabled.discard("s3")
    systemctl.reset_calls()
    assert run(environ, systemctl) == Plan(enable=["s3"])


BACKEND_FAILURES = [
    pytest.param({"fail": "500"}, "answered HTTP 500", id="500"),
    pytest.param({"fail": "malformed"}, "malformed JSON", id="malformed"),
    pytest.param({"fail": "errors"}, "GraphQL errors from", id="errors"),
    pytest.param({"fail": "close"}, "cannot reach", id="close"),
    pytest.param({"fail": "hang"}, "no answer from", id="hang"),
    pytest.param({"token": "another"}, "Unauthorized", id="wrong-token"),
]


def timeout_for(failure: dict[str, Any]) -> dict[str, str]:
    """The environment a backend failure is tested in: a hang (held, see conftest.HeldHang) is seen only through
    the client's timeout, so that one is short; the others keep the generous one of `environ`."""
    return {"GRAPHQL_TIMEOUT_SECONDS": str(SHORT_TIMEOUT)} if failure.get("fail") == "hang" else {}


@pytest.mark.parametrize(("failure", "message"), BACKEND_FAILURES)
def test_backend_failure_changes_nothing(deployed: FakeSystemctl, backend: FakeBackend, environ: dict[str, str],
                                         stations_dir: Path, held_hang: HeldHang, failure: dict[str, Any],
                                         message: str) -> None:
    systemctl = deployed
    before = snapshot(stations_dir)
    backend.set_state(stations=[record("one", "http://changed.example/")], **failure)

    with pytest.raises(BackendError, match=message):
        run({**environ, **timeout_for(failure)}, systemctl)
    assert systemctl.calls == []
    assert snapshot(stations_dir) == before


def test_empty_list_with_deployed_stations_is_refused(deployed: FakeSystemctl, backend: FakeBackend,
                                                      environ: dict[str, str], stations_dir: Path) -> None:
    systemctl = deployed
    before = snapshot(stations_dir)

    backend.set_state(stations=[record("one", generate_hls_stream=False)])
    with pytest.raises(SyncRefused, match=r"empty while 2 station\(s\) are deployed.*HLS_SYNC_ALLOW_EMPTY"):
        run(environ, systemctl)
    assert systemctl.calls == []
    assert snapshot(stations_dir) == before


def test_empty_list_allowed_removes_everything(deployed: FakeSystemctl, backend: FakeBackend, environ: dict[str, str],
                                               stations_dir: Path) -> None:
    systemctl = deployed

    backend.set_state(stations=[])
    plan = run({**environ, "HLS_SYNC_ALLOW_EMPTY": "true"}, systemctl)
    assert plan == Plan(remove=["one", "two"])
    assert systemctl.mutations() == [["disable", "--now", "hls@one.service", "hls@two.service"],
                                     ["reset-failed", "hls@one.service", "hls@two.service"]]
    assert list(stations_dir.iterdir()) == []


def test_a_list_longer_than_the_limit_is_refused(backend: FakeBackend, environ: dict[str, str],
                                                 stations_dir: Path) -> None:
    backend.set_state(token="s3cret", stations=[record("one")])
    systemctl = FakeSystemctl()
    run(environ, systemctl)
    before = {path.name: path.read_bytes() for path in stations_dir.iterdir()}

    backend.set_state(stations=[record(f"s{number}", id=number) for number in range(10_000)])
    systemctl.reset_calls()
    with pytest.raises(SyncRefused, match="wants 10000 stations, more than HLS_SYNC_MAX_STATIONS=1000"):
        run(environ, systemctl)
    assert systemctl.mutations() == []
    assert {path.name: path.read_bytes() for path in stations_dir.iterdir()} == before

    # Raised on purpose, the big list converges (the fake systemctl takes it in chunks).
    plan = run({**environ, "HLS_SYNC_MAX_STATIONS": "20000"}, systemctl)
    assert len(plan.start) == 10_000 and plan.remove == ["one"]
    assert len(list(stations_dir.iterdir())) == 10_000


def test_empty_list_with_nothing_deployed_is_fine(backend: FakeBackend, environ: dict[str, str],
                                                  stations_dir: Path) -> None:
    systemctl = FakeSystemctl()
    assert run(environ, systemctl).is_empty()
    assert systemctl.calls == [["list-units", "--all", "--plain", "--no-legend", "--type=service", "hls@*"]]


# --- the static file source --------------------------------------------------------------------------------

@pytest.fixture
def static_environ(tmp_path: Path, stations_dir: Path) -> dict[str, str]:
    return {"HLS_STATIONS_FILE": str(tmp_path / "stations.json"), "HLS_STATIONS_DIR": str(stations_dir),
            "HLS_CODEC": "copy"}


def write_static(environ: dict[str, str], stations: list[dict[str, Any]]) -> None:
    Path(environ["HLS_STATIONS_FILE"]).write_text(json.dumps({"data": {"stations": stations}}), encoding="utf-8")


def test_static_file_goes_through_the_same_path(static_environ: dict[str, str], stations_dir: Path) -> None:
    write_static(static_environ, [record("one"), record("two"), record("off", disabled=True),
                                  record("Bad Slug")])
    systemctl = FakeSystemctl()
    assert run(static_environ, systemctl) == Plan(start=["one", "two"])
    assert env_values(stations_dir / "two.env")["HLS_CODEC"] == "copy"

    write_static(static_environ, [record("one", "https://one.example/new")])
    systemctl.reset_calls()
    assert run(static_environ, systemctl) == Plan(restart=["one"], remove=["two"])
    assert systemctl.mutations() == [["enable", "hls@one.service"], ["restart", "--no-block", "hls@one.service"],
                                     ["disable", "--now", "hls@two.service"], ["reset-failed", "hls@two.service"]]
    assert sorted(p.name for p in stations_dir.iterdir()) == ["one.env"]


@pytest.mark.parametrize(("content", "message"), [
    pytest.param(None, "cannot read station list", id="missing"),
    pytest.param('{"data": {"stations": [', "cannot read station list", id="truncated"),
    pytest.param("", "cannot read station list", id="empty"),
    pytest.param(b"\xff\xfe", "cannot read station list", id="not-utf8"),
    pytest.param('{"stations": []}', "cannot read station list", id="no-data"),
    pytest.param("[1, 2]", "cannot read station list", id="top-level-list"),
    pytest.param('{"data": {"stations": {"slug": "one"}}}', "`stations` is missing or not a list", id="not-a-list"),
    pytest.param('{"data": {}}', "`stations` is missing or not a list", id="no-stations"),
    pytest.param('{"data": []}', "`stations` is missing or not a list", id="data-list"),
])
def test_bad_static_file_fails_static(static_environ: dict[str, str], stations_dir: Path,
                                      content: str | bytes | None, message: str) -> None:
    write_static(static_environ, [record("one")])
    systemctl = FakeSystemctl()
    run(static_environ, systemctl)
    before = snapshot(stations_dir)

    path = Path(static_environ["HLS_STATIONS_FILE"])
    if content is None:
        path.unlink()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    systemctl.reset_calls()
    with pytest.raises(BackendError, match=re.escape(message)):
        run(static_environ, systemctl)
    assert systemctl.calls == []
    assert snapshot(stations_dir) == before


def test_bad_static_file_message_names_the_file(static_environ: dict[str, str]) -> None:
    with pytest.raises(BackendError) as caught:
        run(static_environ, FakeSystemctl())
    assert str(caught.value).startswith(f"cannot read station list {static_environ['HLS_STATIONS_FILE']}: ")


# --- placement: an origin of a network runs only the stations placed on it --------------------------------------

ORIGINS = ("origin-a.example:80", "origin-b.example:80", "origin-c.example:80")
NETWORK_SLUGS = [f"net-{number}" for number in range(30)]


def on_origin(environ: dict[str, str], tmp_path: Path, origin: str, origins: Sequence[str] = ORIGINS,
              **settings: str) -> dict[str, str]:
    """`environ` as the role writes it on `origin` (a stations dir of its own), with 2 replicas unless told."""
    return {**environ, "HLS_STATIONS_DIR": str(tmp_path / origin), "HLS_ORIGINS": " ".join(origins),
            "HLS_ORIGIN_SELF": origin, "HLS_STATION_REPLICAS": "2", **settings}


def test_each_origin_starts_only_the_stations_placed_on_it(static_environ: dict[str, str], tmp_path: Path) -> None:
    write_static(static_environ, [record(slug, id=number) for number, slug in enumerate(NETWORK_SLUGS)])
    started = {origin: run(on_origin(static_environ, tmp_path, origin), FakeSystemctl()).start for origin in ORIGINS}
    placement = Placement(ORIGINS, ORIGINS[0], 2)
    for slug in NETWORK_SLUGS:
        assert {origin for origin in ORIGINS if slug in started[origin]} == set(placement.origins_of(slug))
    for origin in ORIGINS:
        assert 0 < len(started[origin]) < len(NETWORK_SLUGS)
        # hls-status lists the stations of the env files (snapshot.station_slugs): only those placed here, so
        # /health never calls a station down on an origin that is not meant to run it.
        assert station_slugs(tmp_path / origin) == sorted(started[origin])


def test_a_station_placed_elsewhere_after_a_change_is_stopped_and_disabled(static_environ: dict[str, str],
                                                                         tmp_path: Path) -> None:
    write_static(static_environ, [record(slug, id=number) for number, slug in enumerate(NETWORK_SLUGS)])
    here = ORIGINS[0]
    systemctl = FakeSystemctl()
    before = run(on_origin(static_environ, tmp_path, here), systemctl).start
    systemctl.reset_calls()

    bigger = (*ORIGINS, "origin-d.example:80")
    plan = run(on_origin(static_environ, tmp_path, here, bigger), systemctl)
    after = Placement(bigger, here, 2)
    gone = [slug for slug in before if not after.runs_here(slug)]
    assert gone and plan == Plan(remove=sorted(gone))  # a new origin only takes stations away from the others
    assert systemctl.mutations() == [["disable", "--now", *map(hls_sync.unit_name, sorted(gone))],
                                     ["reset-failed", *map(hls_sync.unit_name, sorted(gone))]]
    assert station_slugs(tmp_path / here) == sorted(set(before) - set(gone))


def test_an_origin_none_of_the_list_is_placed_on_stops_its_stations(static_environ: dict[str, str],
                                                                    tmp_path: Path) -> None:
    here = ORIGINS[0]
    write_static(static_environ, [record("one"), record("two")])
    pinned_here = on_origin(static_environ, tmp_path, here, HLS_STATION_PINS=f"one={here} two={here}")
    systemctl = FakeSystemctl()
    assert run(pinned_here, systemctl) == Plan(start=["one", "two"])

    elsewhere = on_origin(static_environ, tmp_path, here, HLS_STATION_PINS=f"one={ORIGINS[1]} two={ORIGINS[2]}")
    assert run(elsewhere, systemctl) == Plan(remove=["one", "two"])  # not refused: the list is not empty

    assert run(pinned_here, systemctl) == Plan(start=["one", "two"])
    write_static(static_environ, [])
    with pytest.raises(SyncRefused, match=r"empty while 2 station\(s\) are deployed"):
        run(pinned_here, systemctl)


def test_one_origin_runs_every_station_as_a_host_on_its_own(static_environ: dict[str, str], tmp_path: Path) -> None:
    write_static(static_environ, [record(slug, id=number) for number, slug in enumerate(NETWORK_SLUGS)])
    alone = on_origin(static_environ, tmp_path, ORIGINS[0], ORIGINS[:1], HLS_STATION_REPLICAS="1")
    assert run(alone, FakeSystemctl()) == run(static_environ, FakeSystemctl()) == Plan(start=sorted(NETWORK_SLUGS))


def test_main_refuses_a_bad_placement_setting(backend: FakeBackend, main_env: FakeSystemctl,
                                              monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    for key, value in {"HLS_ORIGINS": " ".join(ORIGINS), "HLS_ORIGIN_SELF": ORIGINS[0],
                       "HLS_STATION_REPLICAS": "4"}.items():
        monkeypatch.setenv(key, value)
    backend.set_state(token="s3cret", stations=[record("one")])
    assert hls_sync.main([]) == 1
    assert main_env.calls == []
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "no change made: HLS_STATION_REPLICAS '4' is not a whole number from 1 to 3, the number of origins"]


# --- run_systemctl -----------------------------------------------------------------------------------------

def completed(returncode: int, stdout: str = "", stderr: str = "") -> SimpleNamespace:
    return SimpleNamespace(returncode=returncode, stdout=stdout, stderr=stderr)


def test_run_systemctl_returns_stdout_and_raises_on_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    answers = iter([completed(0, "ok\n"), completed(1, "disabled\n"), completed(5, "", "Unit not found.\n")])

    def fake_run(command: list[str], **kwargs: Any) -> SimpleNamespace:
        seen.append(command)
        assert kwargs == {"capture_output": True, "text": True, "check": False}
        return next(answers)

    monkeypatch.setattr(hls_sync, "subprocess", SimpleNamespace(run=fake_run))
    assert hls_sync.run_systemctl(["list-units", "hls@*"]) == "ok\n"
    assert hls_sync.run_systemctl(["is-enabled", "hls@a.service"]) == "disabled\n"  # non-zero is an answer here
    with pytest.raises(RuntimeError, match=r"^systemctl enable --now \.\.\. failed: Unit not found\.$"):
        hls_sync.run_systemctl(["enable", "--now", "hls@a.service"])
    assert seen == [["systemctl", "list-units", "hls@*"], ["systemctl", "is-enabled", "hls@a.service"],
                    ["systemctl", "enable", "--now", "hls@a.service"]]


# --- main --------------------------------------------------------------------------------------------------

@pytest.fixture
def main_env(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str]) -> FakeSystemctl:
    """os.environ as hls-sync.service would set it, and the fake systemctl in place of the real one."""
    for key in ("HLS_STATIONS_GROUP", "HLS_SYNC_ALLOW_EMPTY", "HLS_SYNC_STATUS_FILE", "LOG_LEVEL", "HLS_ORIGINS",
                "HLS_ORIGIN_SELF", "HLS_STATION_REPLICAS", "HLS_STATION_PINS", *hls_sync.STATION_SETTINGS):
        monkeypatch.delenv(key, raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    systemctl = FakeSystemctl()
    monkeypatch.setattr(hls_sync, "run_systemctl", systemctl)
    return systemctl


def test_main_success_returns_0(backend: FakeBackend, main_env: FakeSystemctl, stations_dir: Path,
                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hls-sync")
    backend.set_state(token="s3cret", stations=[record("one")])
    assert hls_sync.main([]) == 0
    assert main_env.mutations() == [["enable", "hls@one.service"], ["start", "hls@one.service"]]
    assert "started 1 station(s): one" in caplog.text
    assert "in sync: 1 station(s) wanted, 0 refused, 1 changed" in caplog.text


@pytest.mark.parametrize(("failure", "message"), BACKEND_FAILURES)
def test_main_backend_failure_returns_1_and_changes_nothing(backend: FakeBackend, main_env: FakeSystemctl,
                                                            stations_dir: Path, caplog: pytest.LogCaptureFixture,
                                                            held_hang: HeldHang, monkeypatch: pytest.MonkeyPatch,
                                                            failure: dict[str, Any], message: str) -> None:
    backend.set_state(token="s3cret", stations=[record("one")])
    assert hls_sync.main([]) == 0
    before = snapshot(stations_dir)
    main_env.reset_calls()
    caplog.clear()

    for key, value in timeout_for(failure).items():
        monkeypatch.setenv(key, value)
    backend.set_state(stations=[], **failure)
    assert hls_sync.main([]) == 1
    assert main_env.calls == []
    assert snapshot(stations_dir) == before
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith("no change made: ")
    assert message in errors[0]


def test_main_sync_refused_returns_1(backend: FakeBackend, main_env: FakeSystemctl, stations_dir: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    backend.set_state(token="s3cret", stations=[record("one")])
    assert hls_sync.main([]) == 0
    backend.set_state(stations=[])
    main_env.reset_calls()
    assert hls_sync.main([]) == 1
    assert main_env.mutations() == []
    assert (stations_dir / "one.env").exists()
    assert "no change made: the station list is empty while 1 station(s) are deployed" in caplog.text


def test_main_systemctl_failure_returns_1(backend: FakeBackend, main_env: FakeSystemctl,
                                          caplog: pytest.LogCaptureFixture) -> None:
    backend.set_state(token="s3cret", stations=[record("one")])
    main_env.fail_on = "enable"
    assert hls_sync.main([]) == 1
    assert "sync failed part way: systemctl enable ... failed: injected" in caplog.text


def test_main_rejects_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        hls_sync.main(["--bogus"])
    assert caught.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_main_records_successes_and_failures_for_the_metrics(backend: FakeBackend, main_env: FakeSystemctl,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    status_file = tmp_path / "state" / "sync-status.json"
    monkeypatch.setenv("HLS_SYNC_STATUS_FILE", str(status_file))
    backend.set_state(token="s3cret", stations=[record("one")])
    assert hls_sync.main([]) == 0
    first = json.loads(status_file.read_text())
    assert first["last_run_ok"] is True and first["failures_total"] == 0
    assert first["last_success_at"] == first["last_run_at"]
    assert stat.S_IMODE(status_file.stat().st_mode) == 0o644

    backend.set_state(fail="500")
    assert hls_sync.main([]) == 1
    assert hls_sync.main([]) == 1
    failed = json.loads(status_file.read_text())
    assert (failed["last_run_ok"], failed["failures_total"]) == (False, 2)
    assert failed["last_success_at"] == first["last_success_at"]  # the last success is kept

    backend.set_state(fail=None)
    assert hls_sync.main([]) == 0
    assert json.loads(status_file.read_text())["failures_total"] == 2  # a counter: never goes down


def test_record_outcome_starts_over_from_a_broken_file(tmp_path: Path) -> None:
    status_file = tmp_path / "sync-status.json"
    status_file.write_text('["not", "an object"]')
    hls_sync.record_outcome(status_file, False, 1_700_000_000)
    assert json.loads(status_file.read_text()) == {"last_run_at": "2023-11-14T22:13:20+00:00", "last_run_ok": False,
                                                   "last_success_at": None, "failures_total": 1}


def test_main_refuses_a_bad_allow_list(backend: FakeBackend, main_env: FakeSystemctl, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("HLS_UPSTREAM_ALLOWED_NETWORKS", "127.0.0.1/32 not-a-network")
    backend.set_state(token="s3cret", stations=[record("one")])
    assert hls_sync.main([]) == 1
    assert main_env.calls == []
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "no change made: HLS_UPSTREAM_ALLOWED_NETWORKS: 'not-a-network' is not an IP network "
        "(like 127.0.0.1/32 or fd00::/8)"]


def test_main_logs_each_refused_record_on_one_line(backend: FakeBackend, main_env: FakeSystemctl,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hls-sync")
    backend.set_state(token="s3cret", stations=[record("one"), record("x" * 300), record("two", "HTTP://[v1.x]/")])
    assert hls_sync.main([]) == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all("\n" not in error and len(error) < 200 for error in errors)
    assert "in sync: 1 station(s) wanted, 1 refused, 1 changed" in caplog.text


def test_stations_start_a_few_at_a_time_and_a_refused_step_stops_none_of_the_rest(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(hls_sync, "STARTS_AT_ONCE", 2)
    systemctl = FakeSystemctl()
    systemctl.fail_on = "start"
    hls_sync.start_in_steps(systemctl, ["s1", "s2", "s3", "s4", "s5"])
    assert systemctl.calls == [["start", "hls@s1.service", "hls@s2.service"],
                               ["start", "hls@s3.service", "hls@s4.service"], ["start", "hls@s5.service"]]
    assert caplog.text.count("systemctl start ... failed: injected") == 3


def test_at_boot_the_enabled_stations_start_a_few_at_a_time_then_their_target(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hls_sync, "STARTS_AT_ONCE", 2)
    wanted = "hls@b.service hls@a.service hls@c.service other.service\n"
    systemctl = FakeSystemctl()
    answers = {"show": wanted}
    calls: list[list[str]] = []

    def boot_systemctl(args: Sequence[str]) -> str:
        calls.append(list(args))
        return answers.get(args[0]) or systemctl(args)

    assert startup.start_stations(boot_systemctl) == 3
    assert calls == [["show", "--property=Wants", "--value", "hls-stations.target"],
                     ["start", "hls@a.service", "hls@b.service"], ["start", "hls@c.service"],
                     ["start", "hls-stations.target"]]

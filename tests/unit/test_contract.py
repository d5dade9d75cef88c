"""Tests of radio_hls.common.contract: the programs take the slug pattern and the session log's fields from
contract.json, the file the roles read too, so nginx's log_format and the parser cannot disagree; and no program
has a default of its own for a path the role passes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from loglines import line

from radio_hls.analytics import run
from radio_hls.analytics.logparse import SESSION_ID, SESSION_LOG, Aggregator, LogFields
from radio_hls.common import contract
from radio_hls.nowplaying import service
from radio_hls.operations import health, metrics, status, watchdog
from radio_hls.stations import station, sync, variants, watch

CONTRACT_FILE = Path(__file__).resolve().parents[2] / "files" / "scripts" / "radio_hls" / "common" / "contract.json"


def test_the_programs_read_the_file_the_roles_read() -> None:
    committed = json.loads(CONTRACT_FILE.read_text(encoding="utf-8"))
    assert station.SLUG_PATTERN.pattern == contract.SLUG_PATTERN == committed["slug_pattern"]
    assert list(contract.SESSION_LOG_FIELDS) == committed["session_log_fields"]
    assert SESSION_ID.pattern == contract.SESSION_ID_PATTERN == committed["session_id_pattern"]
    assert variants.NAME.pattern == contract.RENDITION_NAME_PATTERN == committed["rendition_name_pattern"]
    assert LogFields.of(committed["session_log_fields"]) == SESSION_LOG


def test_the_slug_check_quotes_the_contracts_pattern() -> None:
    with pytest.raises(station.InvalidStation, match=re.escape(f"does not match ^{contract.SLUG_PATTERN}$")):
        station.validate_slug("Radio")


def swapped(names: tuple[str, ...], first: str, second: str) -> list[str]:
    reordered = list(names)
    i, j = reordered.index(first), reordered.index(second)
    reordered[i], reordered[j] = reordered[j], reordered[i]
    return reordered


def test_a_reordered_field_list_changes_the_parse() -> None:
    text = line(s="sess-1", slug="radio-joy", kind="segment")
    reordered = swapped(contract.SESSION_LOG_FIELDS, "hls_slug", "uri")

    as_written = Aggregator()
    as_written.feed(text)
    assert [key[:3] for key in as_written.by_session] == [("sess-1", "radio-joy", "segment_request")]

    # The same line read with the fields found by name in another order: the slug is now the URI's place.
    misread = Aggregator(log=LogFields.of(reordered))
    misread.feed(text)
    assert not misread.by_session and misread.counts["not_media"] == 1

    # A line nginx would write in that order parses as the original did.
    values = dict(zip(contract.SESSION_LOG_FIELDS, text.rstrip("\n").split("\t"), strict=True))
    follows = Aggregator(log=LogFields.of(reordered))
    follows.feed("\t".join(values[name] for name in reordered) + "\n")
    assert follows.by_session.keys() == as_written.by_session.keys()
    assert [aggregate[:4] for aggregate in follows.by_session.values()] == \
        [aggregate[:4] for aggregate in as_written.by_session.values()]


def test_a_field_list_without_a_field_the_parser_needs_is_refused() -> None:
    with pytest.raises(KeyError, match="arg_s"):
        LogFields.of([name for name in contract.SESSION_LOG_FIELDS if name != "arg_s"])


@pytest.mark.parametrize(("values", "message"), [({}, "HLS_X is not set"), ({"HLS_X": " "}, "HLS_X is not set")])
def test_a_setting_the_role_passes_has_no_default(values: dict[str, str], message: str) -> None:
    with pytest.raises(contract.BadSetting, match=message):
        contract.setting(values, "HLS_X")
    assert contract.setting({"HLS_X": "/srv/x"}, "HLS_X") == "/srv/x"


# --- no program guesses a path the role passes --------------------------------------------------------------------

SYNC_ENV = {"HLS_STATIONS_FILE": "/srv/hls/stations.json", "HLS_STATIONS_DIR": "/srv/hls/stations"}
ANALYTICS_ENV = {"STATE_DIRECTORY": "/srv/analytics", "HLS_ACCESS_LOG": "/srv/log/hls-access.log",
                 "HLS_LISTENERS_FILE": "/srv/run/listeners.json"}


@pytest.mark.parametrize(("config", "environ", "missing"), [
    *((sync.Config, SYNC_ENV, name) for name in SYNC_ENV),
    *((run.Config, ANALYTICS_ENV, name) for name in ANALYTICS_ENV),
])
def test_a_missing_path_is_an_error_that_names_it(config: Any, environ: dict[str, str], missing: str) -> None:
    assert config.from_env(environ)  # complete: accepted
    with pytest.raises(contract.BadSetting, match=f"^{missing} is not set"):
        config.from_env({key: value for key, value in environ.items() if key != missing})


@pytest.mark.parametrize(("main", "argv", "flag"), [
    (watch.main, ["--interval", "5"], "--request-file"),
    (watchdog.main, [], "--output-root"),
    (service.parse_args, ["--output-root", "/srv/run"], "--stations-dir"),
    (service.parse_args, ["--stations-dir", "/srv/stations"], "--output-root"),
    (health.main, [], "--config"),
    (metrics.main, [], "--config"),
    (status.main, ["--output-dir", "/srv/status"], "--config"),
])
def test_a_program_run_without_a_path_says_which_flag_it_needs(main: Any, argv: list[str], flag: str,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("HLS_OUTPUT_ROOT", "HLS_STATIONS_DIR"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert flag in capsys.readouterr().err


def test_only_the_contract_writes_the_patterns() -> None:
    """The roles, their templates and the package take the slug and session id patterns from contract.json; a
    copy written anywhere else could drift from it (the slug pattern was written 9 times before)."""
    repo = CONTRACT_FILE.parents[4]
    committed = json.loads(CONTRACT_FILE.read_text(encoding="utf-8"))
    patterns = (committed["slug_pattern"], committed["session_id_pattern"], committed["rendition_name_pattern"])
    places = [path for top in ("files", "roles", "templates") for path in sorted((repo / top).rglob("*"))
              if path.is_file() and not path.is_symlink() and path != CONTRACT_FILE
              and not any(part.startswith(".") or part.endswith(".egg-info") for part in path.relative_to(repo).parts)
              and path.suffix not in (".pyc", ".whl")]
    copies = [str(path.relative_to(repo)) for path in places
              if any(pattern in path.read_text(encoding="utf-8", errors="replace") for pattern in patterns)]
    assert places and copies == []

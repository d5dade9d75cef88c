"""Role hls's tasks/edge.yml, which role hls_edge runs on an edge with __hls_on_edge: an edge has no station, sync,
playlists or now playing, so every handler those tasks notify manages a unit the edge has, or does nothing there; and
hls-status there runs in edge mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "hls"
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
# What an edge runs of role hls: the analytics, hls-status and logrotate's timer (and systemd itself, unit None).
EDGE_UNITS = {None, "hls-analytics.timer", "hls-status.service", "logrotate.timer"}


def tasks_of(name: str) -> list[dict[str, Any]]:
    """The tasks of roles/hls/tasks/<name>, with the files it imports in their place."""
    tasks: list[dict[str, Any]] = []
    for task in yaml.safe_load((ROLE / "tasks" / name).read_text()):
        imported = task.get("ansible.builtin.import_tasks")
        tasks.extend(tasks_of(imported) if imported else [task])
    return tasks


def notified(tasks: list[dict[str, Any]]) -> set[str]:
    names: set[str] = set()
    for task in tasks:
        notify = task.get("notify", [])
        names.update([notify] if isinstance(notify, str) else notify)
    return names


def test_every_handler_an_edge_notifies_has_its_unit_or_does_nothing_there() -> None:
    handlers = {handler["name"]: handler for handler in yaml.safe_load((ROLE / "handlers" / "main.yml").read_text())}
    for name in sorted(notified(tasks_of("edge.yml"))):
        handler = handlers[name]
        unit = handler["ansible.builtin.systemd_service"].get("name")
        assert unit in EDGE_UNITS or "not __hls_on_edge" in str(handler.get("when", "")), (name, unit)


def test_an_edge_installs_no_station_unit() -> None:
    sources = [str(task["ansible.builtin.template"]["src"]) + " " + json.dumps(task.get("loop", []))
               for task in tasks_of("edge.yml") if "ansible.builtin.template" in task]
    text = " ".join(sources)
    for unit in ("hls@", "hls-sync", "hls-playlists", "hls-nowplaying", "hls-watchdog"):
        assert unit not in text


@pytest.mark.parametrize("on_edge", [True, False])
def test_hls_status_runs_in_edge_mode_on_an_edge_only(tmp_path: Path, on_edge: bool) -> None:
    (tmp_path / "templates").symlink_to(REPO / "templates")
    play = [{"hosts": "localhost", "gather_facts": False, "connection": "local", "tasks": [
        {"ansible.builtin.include_role": {"name": "hls_common", "public": True}},
        *({"ansible.builtin.include_vars": {"file": str(ROLE / part / "main.yml")}} for part in ("defaults", "vars")),
        {"ansible.builtin.template": {"src": "etc/hls/status.env.j2", "dest": str(tmp_path / "status.env"),
                                      "mode": "0644"}}]}]
    (tmp_path / "render.yml").write_text(json.dumps(play))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
           "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_NOCOLOR": "1"}
    variables = {"ansible_python_interpreter": sys.executable, **({"__hls_on_edge": True} if on_edge else {})}
    result = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-e", json.dumps(variables),
                             str(tmp_path / "render.yml")],
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stdout
    lines = (tmp_path / "status.env").read_text().splitlines()
    assert f"HLS_EDGE={'true' if on_edge else 'false'}" in lines

"""The roles' input checks, run by ansible-playbook on the controller: bad values stop the play before any change.

Only each role's tasks/assert.yml runs (include_role tasks_from), with the role's defaults, so nothing here can
install or touch anything even if a check were missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")


def check_input(tmp_path: Path, role: str, variables: dict[str, Any], inventory: str = "localhost,",
                then: Sequence[dict[str, Any]] = ()) -> subprocess.CompletedProcess[str]:
    """The role's checks on localhost, in `inventory` (a file, or a host list); the tasks `then` run after them
    with the role's variables."""
    play = [{"name": f"check {role}'s input", "hosts": "localhost", "gather_facts": False, "connection": "local",
             "tasks": [{"ansible.builtin.include_role": {"name": role, "tasks_from": "assert", "public": True}},
                       *then]}]
    playbook = tmp_path / "check.yml"
    playbook.write_text(json.dumps(play))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
           "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_NOCOLOR": "1",
           # Modules on localhost run in this Python, as on Ansible's implicit localhost (no discovery).
           "ANSIBLE_PYTHON_INTERPRETER": sys.executable}
    return subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", inventory, "-e", json.dumps(variables), str(playbook)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


EVERYONE = ["0.0.0.0/0", "::/0", "0.0.0.0", "::"]


@pytest.mark.parametrize("everyone", EVERYONE)
@pytest.mark.parametrize(("role", "variable"), [("hls_nginx", "hls_nginx_trusted_proxies"),
                                                ("hls", "hls_analytics_cloudflare_networks")])
def test_trusting_every_address_as_a_proxy_is_refused(tmp_path: Path, role: str, variable: str,
                                                      everyone: str) -> None:
    result = check_input(tmp_path, role, {variable: ["10.0.0.0/8", everyone]})
    assert result.returncode != 0, result.stdout
    assert f"assertion: {variable} | select('in', " in result.stdout, result.stdout  # refused by that very check


@pytest.mark.parametrize(("role", "variable"), [("hls_nginx", "hls_nginx_trusted_proxies"),
                                                ("hls", "hls_analytics_cloudflare_networks")])
def test_real_proxy_ranges_pass(tmp_path: Path, role: str, variable: str) -> None:
    result = check_input(tmp_path, role, {variable: ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"]})
    assert result.returncode == 0, result.stdout
    assert "failed=0" in result.stdout


def test_a_cloudflare_network_that_is_no_address_is_refused(tmp_path: Path) -> None:
    result = check_input(tmp_path, "hls", {"hls_analytics_cloudflare_networks": ["173.245.48.0/20", "cloudflare"]})
    assert result.returncode != 0, result.stdout
    assert "assertion: hls_analytics_cloudflare_networks | reject('match'" in result.stdout, result.stdout


def test_a_metrics_allow_list_entry_that_is_no_address_is_refused(tmp_path: Path) -> None:
    result = check_input(tmp_path, "hls_nginx", {"hls_nginx_metrics_allow": ["127.0.0.1", "all; allow all"]})
    assert result.returncode != 0, result.stdout
    assert "assertion: hls_nginx_metrics_allow | reject('match'" in result.stdout, result.stdout

"""A throwaway nginx on loopback ports: Debian's binary, a configuration of the caller's, its files in a directory.

Shared by the unit tests that run nginx for real (test_edge.py, test_placement.py) and by the edge benchmark
(benchmarks/edge.py), so all three start, wait for and stop nginx, and render the roles' templates, one way.
Standard library only (the benchmark runs without pytest): a failure raises NginxError, which a test reports as
it would any error. Waits are bounded polls whose limit only a broken nginx uses up, never a slow machine.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
START_LIMIT = 60.0  # seconds for nginx to answer after it starts: far more than it takes on a busy machine
STOP_LIMIT = 30.0


class NginxError(RuntimeError):
    """nginx could not be found, started, or exited on its own."""


def nginx_binary() -> str:
    # Debian's nginx is /usr/sbin/nginx, on root's PATH but not always on a user's.
    found = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if found is None:
        raise NginxError("no nginx: tools/ensure-packages.sh nginx installs Debian's (make unit, make bench-edge)")
    return found


def free_ports(count: int) -> list[int]:
    """Loopback ports nothing listens on now, all different (held open together while chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def inventory(directory: Path, groups: dict[str, Any]) -> Path:
    path = directory / "inventory.json"
    path.write_text(json.dumps({"all": {"children": groups}}))
    return path


def render(directory: Path, role: str, template: str, hosts: Path, host: str, variables: dict[str, Any]) -> str:
    """etc/nginx/<template> (and the CORS snippet it includes) as `role` renders it on `host` of the inventory
    `hosts`: the role's defaults and vars (below the inventory's, as in a deployment) through its input checks."""
    # The play finds the shared macros (templates/macros) where Ansible looks for a play's templates.
    (directory / "templates").symlink_to(REPO / "templates")
    play = [{"hosts": host, "gather_facts": False, "connection": "local", "tasks": [
        {"ansible.builtin.include_role": {"name": role, "tasks_from": "assert", "public": True}},
        *({"ansible.builtin.template": {"src": str(REPO / "templates/etc/nginx" / name),
                                        "dest": str(directory / name.removesuffix(".j2")), "mode": "0644"}}
          for name in (template, "hls-cors.conf.j2"))]}]
    (directory / "render.yml").write_text(json.dumps(play))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
           "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_NOCOLOR": "1"}
    result = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(hosts), "-e",
                             json.dumps({"ansible_python_interpreter": sys.executable, **variables}),
                             str(directory / "render.yml")],
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    if result.returncode != 0:
        raise NginxError(f"rendering {template} failed:\n{result.stdout}")
    return (directory / template.removesuffix(".j2")).read_text()


def temp_paths(directory: Path) -> list[str]:
    """The http block's directives that keep nginx's temporary files in `directory`."""
    return [f"{kind}_temp_path {directory}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")]


def for_a_throwaway_process(config: str, directory: Path, status_port: int) -> str:
    """A rendered configuration with the process's own files in `directory`, loopback only, and a stub_status
    server on `status_port`."""
    user = pwd.getpwuid(os.getuid()).pw_name
    replaced = {r"^user .*;$": f"user {user};", r"^pid .*;$": f"pid {directory}/nginx.pid;",
                r"^error_log .*;$": f"error_log {directory}/error.log info;",
                r"^ *listen \[::\]:.*;$": "", r"^( *listen )([0-9]+ default_server;)$": r"\g<1>127.0.0.1:\g<2>"}
    for pattern, replacement in replaced.items():
        config, count = re.subn(pattern, replacement, config, count=1, flags=re.MULTILINE)
        if count != 1:
            raise NginxError(f"the configuration has no line matching {pattern}")
    extra = temp_paths(directory)
    extra.append(f"server {{ listen 127.0.0.1:{status_port}; access_log off; location / {{ stub_status; }} }}")
    head, _, tail = config.rpartition("}")
    return head + "\n".join(extra) + "\n}" + tail


def check(directory: Path, config: str) -> None:
    """`nginx -t` of `config`, written to directory/nginx.conf."""
    (directory / "nginx.conf").write_text(config)
    result = subprocess.run([nginx_binary(), "-t", "-p", str(directory), "-c", str(directory / "nginx.conf"),
                             "-e", str(directory / "error.log")], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NginxError(result.stderr)


def start(directory: Path, config: str, ready: Callable[[], bool]) -> subprocess.Popen[bytes]:
    """nginx running `config` (written to directory/nginx.conf) in the foreground, once `ready()` says it
    answers; `ready` may raise OSError (requests' ConnectionError is one) while nginx is not listening yet."""
    (directory / "nginx.conf").write_text(config)
    with (directory / "stderr").open("wb") as stderr:
        process = subprocess.Popen([nginx_binary(), "-p", str(directory), "-c", str(directory / "nginx.conf"),
                                    "-e", str(directory / "error.log"), "-g", "daemon off;"],
                                   stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    deadline = time.monotonic() + START_LIMIT
    while True:
        if process.poll() is not None:
            log = directory / "error.log"
            raise NginxError(f"nginx exited: {(directory / 'stderr').read_text()}"
                             f"{log.read_text() if log.exists() else ''}")
        try:
            if ready():
                return process
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(process)
            raise NginxError(f"nginx did not answer within {START_LIMIT:g} s")
        time.sleep(0.02)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=STOP_LIMIT)

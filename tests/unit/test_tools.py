"""Tests of tools/: what a fresh machine gets installed, the image named after its recipe, one molecule
container and port per checkout.

The scripts run against fake `docker`, `apt-get`, `debootstrap`, `node`... on a PATH that holds nothing else
but a few coreutils, so no test installs, builds or starts anything: `apt-get` only records what it was asked
for (and "installs" a fake command), `docker` keeps its images as files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
# What the scripts need besides the commands under test.
COREUTILS = ["bash", "sha256sum", "cut", "dirname", "grep", "head", "tr", "mktemp", "rm", "cat", "ln", "tar",
             "seq", "sleep", "nohup", "tail", "mkdir", "touch", "env", "sed", "tee", "cp", "chmod"]

FAKE_DOCKER = r"""#!/bin/bash
# Images are files in $STATE/images holding their recipe label; every call is logged.
echo "docker $*" >>"$STATE/log"
file() { echo "$STATE/images/${1//[:\/]/_}"; }
case "$1 $2" in
  "info "*) [ -z "${FAKE_NO_ENGINE:-}" ] || [ -f "$STATE/dockerd-started" ] ;;
  "image inspect")
    shift 2
    if [ "$1" = -f ]; then fmt=$2; shift 2; fi
    [ -f "$(file "$1")" ] || { echo "Error: No such image: $1" >&2; exit 1; }
    if [ -n "${fmt:-}" ]; then cat "$(file "$1")"; else echo '[]'; fi ;;
  "import "*)
    label=
    while [ "$#" -gt 1 ]; do
      [ "$1" = --change ] && case "$2" in "LABEL org.radio-hls.recipe="*) label=${2#*=} ;; esac
      shift
    done
    cat >/dev/null
    mkdir -p "$STATE/images"; echo "$label" >"$(file "$1")" ;;
  *) exit 0 ;;
esac
"""

FAKE_APT_GET = r"""#!/bin/bash
# Records what it was asked for; an install puts a fake command for each package on PATH.
echo "apt-get $*" >>"$STATE/log"
[ "$1" = install ] || exit 0
for pkg in "$@"; do
  case "$pkg" in
    debootstrap) cp "$STATE/debootstrap" "$FAKEBIN/debootstrap" ;;
    docker.io) printf '#!/bin/bash\ntouch "$STATE/dockerd-started"\n' >"$FAKEBIN/dockerd" ;;
    nodejs) printf '#!/bin/bash\ncat >/dev/null\n' >"$FAKEBIN/node" ;;
    npm|chromium|nginx) printf '#!/bin/bash\n' >"$FAKEBIN/$pkg" ;;
  esac
done
chmod +x "$FAKEBIN"/*
"""

# The rootfs skeleton build-image.sh writes into.
FAKE_DEBOOTSTRAP = r"""#!/bin/bash
echo "debootstrap $*" >>"$STATE/log"
while [ "$1" != bookworm ]; do shift; done
mkdir -p "$2/etc/apt" "$2/etc/systemd/system" "$2/var/cache/apt/archives"
"""


class Machine:
    """A PATH of coreutils plus fakes; `run` a tool and read back the `log` of fake commands."""

    def __init__(self, tmp_path: Path):
        self.state = tmp_path / "state"
        self.fakebin = tmp_path / "fakebin"
        self.sysbin = tmp_path / "sysbin"
        for d in (self.state, self.fakebin, self.sysbin):
            d.mkdir()
        for name in COREUTILS:
            os.symlink(shutil.which(name), self.sysbin / name)
        (self.state / "debootstrap").write_text(FAKE_DEBOOTSTRAP)
        self.add("docker", FAKE_DOCKER)
        self.add("apt-get", FAKE_APT_GET)
        self.env = {"PATH": f"{self.fakebin}:{self.sysbin}", "STATE": str(self.state), "FAKEBIN": str(self.fakebin),
                    "HOME": str(tmp_path), "DOCKERD_LOG": str(tmp_path / "dockerd.log")}

    def add(self, name: str, script: str = "#!/bin/bash\n") -> None:
        path = self.fakebin / name
        path.write_text(script)
        path.chmod(0o755)

    def has_image(self, name: str, label: str) -> None:
        (self.state / "images").mkdir(exist_ok=True)
        (self.state / "images" / name.replace(":", "_").replace("/", "_")).write_text(label + "\n")

    def run(self, *command: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(command, cwd=REPO, env={**self.env, **env}, capture_output=True, text=True,
                                timeout=60)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def log(self) -> list[str]:
        path = self.state / "log"
        return path.read_text().splitlines() if path.exists() else []

    def installed(self) -> list[str]:
        """The packages of every `apt-get install`, in order."""
        return [word for line in self.log() if line.startswith("apt-get install")
                for word in line.split()[2:] if not word.startswith("-")]

    def make_image(self, image: str) -> None:
        """What `make image` runs."""
        self.run("bash", str(TOOLS / "ensure-docker.sh"))
        self.run("bash", str(TOOLS / "build-image.sh"), image)


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


def recipe() -> str:
    return hashlib.sha256((TOOLS / "build-image.sh").read_bytes()).hexdigest()[:12]


# --- debootstrap: installed when an image is to be built, even where Docker already runs


def test_a_running_docker_without_debootstrap_still_gets_its_image_built(machine):
    image = f"hls-debian-systemd:bookworm-{recipe()}"
    machine.make_image(image)
    assert machine.installed() == ["debootstrap"]
    assert any(line.startswith("debootstrap --variant=minbase") for line in machine.log())
    assert (machine.state / "images" / image.replace(":", "_")).read_text().strip() == recipe()


def test_a_reused_image_installs_nothing_and_builds_nothing(machine):
    image = f"hls-debian-systemd:bookworm-{recipe()}"
    machine.has_image(image, recipe())
    machine.make_image(image)
    assert machine.installed() == []
    assert not [line for line in machine.log() if line.startswith(("docker import", "debootstrap"))]


def test_a_missing_engine_installs_docker_io_alone_and_starts_dockerd(machine):
    # No engine answers and dockerd is absent: docker.io, not debootstrap (no image asked for yet).
    machine.run("bash", str(TOOLS / "ensure-docker.sh"), FAKE_NO_ENGINE="1")
    assert machine.installed() == ["docker.io"]
    assert (machine.state / "dockerd-started").exists()


def test_an_engine_that_answers_is_left_alone(machine):
    machine.run("bash", str(TOOLS / "ensure-docker.sh"))
    assert machine.log() == ["docker info"]


# --- the image follows its recipe


def test_the_image_name_is_the_hash_of_the_build_script(machine, tmp_path):
    name = machine.run("bash", str(TOOLS / "build-image.sh"), "--name").stdout.strip()
    assert name == f"hls-debian-systemd:bookworm-{recipe()}"
    edited = tmp_path / "build-image.sh"
    edited.write_text((TOOLS / "build-image.sh").read_text() + "# a comment changes the recipe\n")
    other = machine.run("bash", str(edited), "--name").stdout.strip()
    assert other.startswith("hls-debian-systemd:bookworm-") and other != name


@pytest.mark.parametrize("label", ["", "0123456789ab"], ids=["no label (an older script)", "another recipe"])
def test_an_image_of_that_name_from_another_recipe_is_built_again(machine, label):
    machine.has_image("hls-debian-systemd:bookworm", label)
    machine.add("debootstrap", FAKE_DEBOOTSTRAP)
    result = machine.run("bash", str(TOOLS / "build-image.sh"), "hls-debian-systemd:bookworm")
    assert "not from this recipe" in result.stderr
    assert any(line.startswith("docker import") and f"LABEL org.radio-hls.recipe={recipe()}" in line
               for line in machine.log())


# --- python3-venv, node and npm: each installed only when missing


@pytest.mark.parametrize(
    ("present", "needs", "expected"),
    [
        ({"node", "npm", "debootstrap", "chromium", "dockerd"}, ["node", "debootstrap", "chromium", "docker"], []),
        ({"node"}, ["node"], ["npm"]),
        ({"npm"}, ["node"], ["nodejs"]),
        (set(), ["node", "debootstrap"], ["nodejs", "npm", "debootstrap"]),
        ({"dockerd"}, ["debootstrap", "docker"], ["debootstrap"]),
        ({"debootstrap"}, ["debootstrap", "docker"], ["docker.io"]),
        ({"nginx"}, ["nginx", "debootstrap"], ["debootstrap"]),
        ({"debootstrap"}, ["nginx", "debootstrap"], ["nginx"]),
        ({"nginx"}, ["nginx", "wrk"], ["wrk"]),
        ({"wrk"}, ["wrk", "nginx"], ["nginx"]),
    ],
)
def test_each_need_installs_only_what_it_lacks(machine, present, needs, expected):
    for name in present:
        machine.add(name, "#!/bin/bash\ncat >/dev/null\n")
    machine.run("bash", str(TOOLS / "ensure-packages.sh"), *needs)
    assert machine.installed() == expected
    assert (["apt-get update -qq"] if expected else []) == [line for line in machine.log() if "update" in line]


@pytest.mark.parametrize(("has_ensurepip", "expected"), [(True, []), (False, ["python3-venv"])])
def test_python3_venv_is_installed_when_ensurepip_is_missing(machine, has_ensurepip, expected):
    # Debian's python3 lacks ensurepip (hence `python3 -m venv`) until python3-venv is installed.
    machine.add("python3", "#!/bin/bash\nexit 0\n" if has_ensurepip else "#!/bin/bash\nexit 1\n")
    machine.run("bash", str(TOOLS / "ensure-packages.sh"), "venv")
    assert machine.installed() == expected


def test_without_apt_get_a_missing_package_is_named_not_guessed(machine):
    (machine.fakebin / "apt-get").unlink()
    result = machine.run("bash", str(TOOLS / "ensure-packages.sh"), "debootstrap", check=False)
    assert result.returncode == 1 and "missing debootstrap" in result.stderr


@pytest.mark.skipif(not shutil.which("node"), reason="needs a real node to read package-lock.json")
def test_a_node_older_than_the_browser_test_needs_is_refused(machine, tmp_path):
    lock = (REPO / "tests" / "browser" / "package-lock.json").read_text()
    assert '"node": ">=20"' in lock  # playwright-core 1.65; Debian 12's nodejs is 18
    node = shutil.which("node")
    machine.add("npm")
    for major, code in (("18.20.4", 1), ("20.0.0", 0)):
        # The real node, reporting another version.
        machine.add("node", f"#!/bin/bash\nexec {node} -e 'Object.defineProperty(process.versions, \"node\", "
                            f"{{value: \"{major}\"}}); require(\"vm\").runInThisContext(require(\"fs\")"
                            f".readFileSync(0, \"utf8\"))' \"$@\"\n")
        result = machine.run("bash", str(TOOLS / "ensure-packages.sh"), "node", check=False)
        assert result.returncode == code, result.stderr
        if code:
            assert f"node {major} is older than node_modules/playwright-core needs (>=20)" in result.stderr


# --- one molecule container and port per checkout


def free_port(seed: str) -> int:
    out = subprocess.run([sys.executable, str(TOOLS / "free-port.py"), seed], capture_output=True, text=True,
                         check=True, timeout=30)
    return int(out.stdout)


def test_a_checkout_keeps_its_port_and_another_checkout_gets_another():
    first = free_port("a1b2c3d4")
    assert 20000 <= first < 32000
    assert free_port("a1b2c3d4") == first
    assert free_port("e5f6a7b8") != first


def test_a_port_in_use_is_passed_over():
    port = free_port("busy-seed")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        assert free_port("busy-seed") not in (port, 0)


def make_n_molecule(checkout: Path, **env: str) -> dict[str, str]:
    """The HLS_MOLECULE_* and MOLECULE_EPHEMERAL_DIRECTORY assignments of `make -n molecule` in `checkout`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HLS_")}
    out = subprocess.run(["make", "-n", "molecule"], cwd=checkout, capture_output=True, text=True, timeout=60,
                         env={**base, **env})
    assert out.returncode == 0, out.stderr
    return dict(word.split("=", 1) for word in out.stdout.split()
                if word.startswith(("HLS_MOLECULE_", "MOLECULE_EPHEMERAL_DIRECTORY=")))


@pytest.fixture
def two_checkouts(tmp_path: Path) -> list[Path]:
    paths = []
    for name in ("one", "two"):
        checkout = Path(os.path.realpath(tmp_path)) / name
        for rel in ("Makefile", "tools", "requirements-dev.txt", "files/scripts/requirements.txt",
                    "files/scripts/pyproject.toml",
                    "tests/browser/package.json", "tests/browser/package-lock.json"):
            (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
            copy = shutil.copytree if (REPO / rel).is_dir() else shutil.copy
            copy(REPO / rel, checkout / rel)
        paths.append(checkout)
    return paths


@pytest.mark.skipif(not shutil.which("make"), reason="needs make")
def test_two_checkouts_get_their_own_container_and_port_and_the_recipes_image(two_checkouts):
    one, two = (make_n_molecule(checkout) for checkout in two_checkouts)
    assert one["HLS_MOLECULE_ID"] != two["HLS_MOLECULE_ID"]
    assert one["HLS_MOLECULE_HTTP_PORT"] != two["HLS_MOLECULE_HTTP_PORT"]
    # molecule keys its state by the directory's basename alone: two clones named alike would share it.
    assert one["MOLECULE_EPHEMERAL_DIRECTORY"] != two["MOLECULE_EPHEMERAL_DIRECTORY"]
    assert one["HLS_MOLECULE_ID"] == hashlib.sha256(str(two_checkouts[0]).encode() + b"\n").hexdigest()[:8]
    assert one["HLS_MOLECULE_IMAGE"] == two["HLS_MOLECULE_IMAGE"] == f"hls-debian-systemd:bookworm-{recipe()}"
    chosen = make_n_molecule(two_checkouts[0], HLS_MOLECULE_ID="ci", HLS_MOLECULE_HTTP_PORT="18099")
    assert (chosen["HLS_MOLECULE_ID"], chosen["HLS_MOLECULE_HTTP_PORT"]) == ("ci", "18099")

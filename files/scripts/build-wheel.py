"""Build the radio_hls wheel the role installs, once per content: `build-wheel.py SOURCE CACHE_DIR`.

Run on the controller by roles/hls/tasks/install.yml. The wheel's version is pyproject.toml's plus a local label
of the source's hash (1.0+<hash>), so a host's pip installs it exactly when the programs changed, and the wheel is
kept in CACHE_DIR under that name: an unchanged tree is never built again. The build itself is reproducible (the
same tree gives the same bytes on any controller): a copy of the tree with fixed file modes, built with a fixed
SOURCE_DATE_EPOCH, in a directory of its own (setuptools would otherwise leave build/ and *.egg-info in the role).
Prints {"version": ..., "wheel": ..., "built": true|false} as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# What the wheel is made of; nothing else in SOURCE (this script, requirements.txt) changes it.
PACKAGE = "radio_hls"
PROJECT_FILE = "pyproject.toml"
# Zip files cannot hold times before 1980; any fixed time makes the archive's bytes depend on content alone.
SOURCE_DATE_EPOCH = "315532800"
VERSION = re.compile(r'^version = "([^"+]+)"$', re.MULTILINE)


def sources(root: Path) -> list[Path]:
    """The files of the wheel, relative to root, in a stable order."""
    files = [Path(PROJECT_FILE)]
    for path in sorted((root / PACKAGE).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.append(path.relative_to(root))
    return files


def content_key(root: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for relative in files:
        digest.update(f"{relative}\0".encode())
        digest.update(hashlib.sha256((root / relative).read_bytes()).digest())
    return digest.hexdigest()[:16]


def build(root: Path, files: list[Path], version: str, destination: Path) -> Path:
    """Build the wheel of `files` at `version` into destination; returns its path."""
    with tempfile.TemporaryDirectory(prefix="radio-hls-build.") as scratch:
        tree = Path(scratch) / "src"
        for relative in files:
            (tree / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / relative, tree / relative)
            (tree / relative).chmod(0o644)
        project = tree / PROJECT_FILE
        project.write_text(VERSION.sub(f'version = "{version}"', project.read_text(encoding="utf-8")),
                           encoding="utf-8")
        out = Path(scratch) / "out"
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "--quiet",
                        "--wheel-dir", str(out), str(tree)],
                       check=True, env={**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}, stdout=sys.stderr)
        [wheel] = out.glob("*.whl")
        destination.mkdir(parents=True, exist_ok=True)
        # Unique per build: two checkouts converging at once may build the same wheel side by side.
        partial = destination / f".{wheel.name}.{os.getpid()}.partial"
        shutil.copyfile(wheel, partial)
        return partial.replace(destination / wheel.name)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    root, cache = Path(argv[0]), Path(argv[1])
    files = sources(root)
    found = VERSION.search((root / PROJECT_FILE).read_text(encoding="utf-8"))
    if found is None:
        print(f"no plain version = \"...\" line in {root / PROJECT_FILE}", file=sys.stderr)
        return 1
    version = f"{found.group(1)}+{content_key(root, files)}"
    wheel = cache / f"{PACKAGE}-{version}-py3-none-any.whl"
    built = not wheel.is_file()
    if built:
        wheel = build(root, files, version, cache)
    print(json.dumps({"version": version, "wheel": str(wheel), "built": built}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env bash
# Install from Debian what a need lacks, and only that: `tools/ensure-packages.sh NEED...`, each NEED checked
# on its own (one already there never hides or triggers another). One `apt-get install` for all that is missing.
#   docker       the docker CLI and dockerd (docker.io)
#   debootstrap  debootstrap (tools/build-image.sh)
#   venv         `python3 -m venv` with pip, i.e. Debian's ensurepip (python3-venv; brings python3 if absent)
#   node         node and npm (nodejs, npm), then node against the engines of tests/browser/package-lock.json
#   chromium     Debian's chromium (the browser test)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
missing=()
node_check=

lacks() { ! command -v "$1" >/dev/null 2>&1; }

for need in "$@"; do
    case "$need" in
        docker)
            if lacks docker || lacks dockerd; then missing+=(docker.io); fi ;;
        debootstrap)
            if lacks debootstrap; then missing+=(debootstrap); fi ;;
        venv)
            # Debian ships ensurepip (hence venv's pip) in python3-venv; a python3 of its own (pyenv) has it.
            if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then missing+=(python3-venv); fi ;;
        node)
            if lacks node; then missing+=(nodejs); fi
            if lacks npm; then missing+=(npm); fi
            node_check=1 ;;
        chromium)
            if lacks chromium; then missing+=(chromium); fi ;;
        *)
            echo "ensure-packages: unknown need '$need'" >&2; exit 2 ;;
    esac
done

if [ "${#missing[@]}" -gt 0 ]; then
    if lacks apt-get; then
        echo "ensure-packages: missing ${missing[*]} and no apt-get to install them; install them yourself" >&2
        exit 1
    fi
    echo "ensure-packages: installing ${missing[*]} from Debian" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# npm ci only warns (EBADENGINE) when node is older than a package asks, and playwright-core then refuses to
# run: say it here. Debian 12's nodejs is 18, playwright-core 1.65 wants 20.
if [ -n "$node_check" ] && [ -f "$ROOT/tests/browser/package-lock.json" ]; then
    node - "$ROOT/tests/browser/package-lock.json" <<'CHECK'
const lock = JSON.parse(require("fs").readFileSync(process.argv[2], "utf8"));
const have = Number(process.versions.node.split(".")[0]);
for (const [name, pkg] of Object.entries(lock.packages || {})) {
  const want = /^>=\s*(\d+)/.exec((pkg.engines || {}).node || "");
  if (want && have < Number(want[1])) {
    console.error(`ensure-packages: node ${process.versions.node} is older than ${name || "the browser test"} ` +
      `needs (${pkg.engines.node}); Debian 12 has no newer nodejs: install one yourself (e.g. NodeSource's)`);
    process.exit(1);
  }
}
CHECK
fi

#!/usr/bin/env bash
# Install from Debian what a need lacks, and only that: `tools/ensure-packages.sh NEED...`, each NEED checked
# on its own (one already there never hides or triggers another). One `apt-get install` for all that is missing.
#   docker       the docker CLI and dockerd (docker.io)
#   debootstrap  debootstrap (tools/build-image.sh)
#   venv         `python3 -m venv` with pip, i.e. Debian's ensurepip (python3-venv; brings python3 if absent)
#   node         node and npm (nodejs, npm), then node against the engines of tests/browser/package-lock.json
#   chromium     Debian's chromium (the browser test)
#   ffmpeg, mpv  the players of the player matrix (molecule/default/tests/test_players.py; ffmpeg and ffprobe
#                also for the unit tests of the probe, the timed ID3 and the multivariant playlist), with
#   vlc          cvlc and its base plugins (HLS, the remote control interface, a dummy audio output), and
#   gstreamer    GStreamer 1.x: tools, plugins base/good/bad (hlsdemux, tsdemux, faad, mpg123) and python3-gi
#   nginx        Debian's nginx, for the unit test of the placement ring against nginx's own hash (a throwaway one
#                on loopback ports; the package's own service is none of the tests' business)
#   wrk          Debian's wrk, the load generator of `make bench-edge`
#   promtool     Prometheus's promtool, for the alert rules' tests (tests/unit/test_monitoring.py); Debian ships it
#                only in the package prometheus, whose server comes along (none of the tests' business either)
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
        nginx)
            if lacks nginx; then missing+=(nginx); fi ;;
        promtool)
            if lacks promtool; then missing+=(prometheus); fi ;;
        ffmpeg|mpv|wrk)
            if lacks "$need"; then missing+=("$need"); fi ;;
        vlc)
            if lacks cvlc || ! compgen -G '/usr/lib/*/vlc/plugins/demux/libadaptive_plugin.so' >/dev/null; then
                missing+=(vlc-bin vlc-plugin-base)
            fi ;;
        gstreamer)
            # The runner imports gi into Debian's python3 (never a venv's or pyenv's).
            if ! /usr/bin/python3 -c 'import gi; gi.require_version("Gst", "1.0")' >/dev/null 2>&1 \
                || ! { gst-inspect-1.0 --exists hlsdemux && gst-inspect-1.0 --exists tsdemux \
                       && gst-inspect-1.0 --exists faad && gst-inspect-1.0 --exists mpg123audiodec; } 2>/dev/null; then
                missing+=(gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
                          gstreamer1.0-plugins-bad python3-gi gir1.2-gstreamer-1.0)
            fi ;;
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

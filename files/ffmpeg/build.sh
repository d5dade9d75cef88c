#!/bin/sh
# Build the stations' FFmpeg from Debian's own source package of the FFmpeg installed on this host (its patches,
# its version, its hardening flags), configured with only what a station runs: a few demuxers, decoders and
# filters, the AAC encoder, the segment and MPEG-TS muxers, HTTP(S) through GnuTLS; plus the project's own patches
# (files/ffmpeg/patches, each says why). Debian's binary links 214
# libraries whose relocated data costs each station about 8 MiB and each start about 60 ms of CPU
# (docs/benchmarks.md, "A thousand stations").
#
# usage: build.sh VERSION OUTPUT SOURCES_LIST PATCHES [CONFIGURE_OPTION...]
#   VERSION       Debian's version of the source package, e.g. 5.1.9-0+deb12u1 (dpkg-query -W ffmpeg)
#   OUTPUT        where the ffmpeg binary goes (its directory is created)
#   SOURCES_LIST  one-line apt entries (deb-src ...) to fetch the source from; the host's own apt setup is not
#                 touched: the download uses an apt configuration and index of its own, removed afterwards
#   PATCHES       a directory of the project's own patches (*.patch, -p1), applied in name order after Debian's
set -eu

if [ "$#" -lt 4 ]; then
    echo "usage: $0 VERSION OUTPUT SOURCES_LIST PATCHES [CONFIGURE_OPTION...]" >&2
    exit 2
fi
version=$1 output=$2 sources=$3 patches=$4
shift 4
if [ ! -d "$patches" ]; then
    echo "build.sh: $patches is not a directory of patches" >&2
    exit 2
fi

work=$(mktemp -d /var/tmp/hls-ffmpeg-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial"
cp "$sources" "$work/sources.list"

# apt verifies the Sources index by its signature (the host's keyrings) and each source file by its hash in it.
apt_own() {
    apt-get -q -o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
        -o Dir::State::Lists="$work/lists" -o Dir::Cache::Archives="$work/archives" \
        -o APT::Sandbox::User=root "$@"
}
if ! apt_own update --error-on=any >"$work/apt.log" 2>&1; then
    cat "$work/apt.log" >&2
    echo "build.sh: cannot read the source repositories in $sources (hls_ffmpeg_source_repositories)" >&2
    exit 1
fi
cd "$work"
if ! apt_own source --download-only "ffmpeg=$version" >>"$work/apt.log" 2>&1; then
    cat "$work/apt.log" >&2
    echo "build.sh: Debian's source of ffmpeg $version is not on the mirrors (an older version than the" \
         "mirrors carry?): upgrade the host's ffmpeg package and deploy again" >&2
    exit 1
fi
# (The .dsc's own signature needs Debian's maintainer keyring; apt has checked its hash against the signed index.)
dpkg-source -x ffmpeg_*.dsc source >"$work/dpkg-source.log" 2>&1 || { cat "$work/dpkg-source.log" >&2; exit 1; }

cd source
for patch in "$patches"/*.patch; do
    [ -e "$patch" ] || continue
    if ! patch -p1 --forward --batch <"$patch" >"$work/patch.log" 2>&1; then
        cat "$work/patch.log" >&2
        echo "build.sh: $patch does not apply to Debian's ffmpeg $version: the patch needs updating for it" >&2
        exit 1
    fi
done
# The Debian revision in `ffmpeg -version` (5.1.9-0+deb12u1+radio-hls), so an operator sees what it was built from.
./configure --prefix=/usr/local --extra-version="${version#*-}+radio-hls" \
    --extra-cflags="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)" \
    --extra-ldflags="$(dpkg-buildflags --get LDFLAGS)" \
    "$@" >"$work/configure.log" 2>&1 || { tail -n 30 "$work/configure.log" >&2; exit 1; }
make -j"$(nproc)" ffmpeg >"$work/make.log" 2>&1 || { tail -n 30 "$work/make.log" >&2; exit 1; }
install -D -m 0755 ffmpeg "$output"

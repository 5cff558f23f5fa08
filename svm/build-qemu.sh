#!/bin/bash
# build-qemu.sh: Debian bookworm's qemu (7.2) with qemu-svm-fixes.patch (our fixes to
# its SVM emulation, see the patch), built for
# x86_64-softmmu only (TCG, no GUI, no docs, no tools), installed into
#   $SVM_CACHE/qemu-<version>-<sha256 of patch and configure flags>/
# and reused when that directory is complete. Prints the qemu-system-x86_64 path.
#
#   QEMU_VERSION=1:7.2+dfsg-7+deb12u18   pin the source version (default: newest known)
#   SVM_CACHE=dir                        cache (default ~/.cache/libkvm-test-svm)
#   JOBS=n                               ninja parallelism (default nproc)
set -euo pipefail
. "$(dirname "$0")/common.sh"

PATCH=$SVM_DIR/qemu-svm-fixes.patch
CONFIGURE_FLAGS=(
    --target-list=x86_64-softmmu --without-default-features
    --enable-tcg --enable-slirp --disable-docs --disable-tools --disable-werror
    --meson=/usr/bin/meson
    --firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu
)
# libfdt-dev: x86_64-softmmu needs libfdt (TARGET_NEED_FDT, for microvm), and
# Debian's source has no dtc/ to build it from.
BUILD_DEPS=(dpkg-dev build-essential python3 ninja-build meson pkg-config libglib2.0-dev
            libpixman-1-dev zlib1g-dev libslirp-dev libfdt-dev seabios qemu-system-data)

need_pkgs "${BUILD_DEPS[@]}"

# apt-get source needs a deb-src entry for bookworm.
if [ -z "$(apt-cache showsrc qemu 2>/dev/null)" ]; then
    log "adding a bookworm deb-src source"
    as_root tee /etc/apt/sources.list.d/libkvm-test-svm-src.sources > /dev/null <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    as_root apt-get update -q >&2
fi

version=${QEMU_VERSION:-$(apt-cache showsrc qemu | sed -n 's/^Version: //p' | sort -V | tail -n 1)}
[ -n "$version" ] || die "no qemu source package found"
key=$( { cat "$PATCH"; echo "${CONFIGURE_FLAGS[*]}"; } | sha256sum | cut -c1-12)
out=$SVM_CACHE/qemu-${version#*:}-$key
qemu=$out/bin/qemu-system-x86_64

if [ -x "$qemu" ] && [ -f "$out/.complete" ]; then
    log "qemu $version cached in $out"
    echo "$qemu"
    exit 0
fi

work=$SVM_CACHE/build/qemu-${version#*:}-$key
rm -rf "$work" "$out"
mkdir -p "$work"
start=$(date +%s)
log "fetching qemu $version source"
(cd "$work" && apt-get source -q --download-only "qemu=$version" >&2 &&
    dpkg-source -x -q ./*.dsc src >&2)
log "applying $(basename "$PATCH")"
patch -d "$work/src" -p1 -s < "$PATCH"
log "configuring and building x86_64-softmmu (about 5 minutes on 2 cores)"
mkdir -p "$work/src/build"
(cd "$work/src/build" && export PATH=/usr/bin:/bin:$PATH &&
    ../configure --prefix="$out" "${CONFIGURE_FLAGS[@]}" > "$work/configure.log" 2>&1 ||
        { tail -n 30 "$work/configure.log" >&2; exit 1; })
ninja -C "$work/src/build" -j "${JOBS:-$(nproc)}" qemu-system-x86_64 > "$work/build.log" 2>&1 ||
    { tail -n 40 "$work/build.log" >&2; die "build failed, log in $work/build.log"; }
mkdir -p "$out/bin"
install -m 755 "$work/src/build/qemu-system-x86_64" "$qemu"
cp "$PATCH" "$out/"
echo "$version" > "$out/.complete"
rm -rf "$work"
log "built in $(( $(date +%s) - start )) s: $qemu"
echo "$qemu"

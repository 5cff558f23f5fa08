# Sourced by the SVM test host scripts (make test-svm): cache location and
# small helpers.
# shellcheck shell=bash

SVM_DIR=${SVM_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
SVM_CACHE=${SVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/libkvm-test-svm}

log() { echo "test-svm: $*" >&2; }
die() { log "error: $*"; exit 1; }

# need_pkgs PKG...: apt-get install the Debian packages that are missing.
need_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    as_root apt-get update -q >&2 || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# as_root COMMAND...: runs COMMAND as root (through sudo when not root).
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "needs root: $*"; fi
}

# newest_version PKG: the newest version apt knows of a binary package.
newest_version() {
    apt-cache madison "$1" | awk '{print $3}' | sort -V | tail -n 1
}

# cache_key FILE...: short sha256 over the given files' contents.
cache_key() {
    cat "$@" | sha256sum | cut -c1-12
}

#!/bin/bash
# build-static-tests.sh [TREE]: builds the C test programs and gdb_vmm of a
# libkvm tree statically linked (for the SVM host's initramfs), with the
# Makefile's own rules: CC="gcc -static" and BUILD=c-tests/build-static, so the
# normal c-tests/build stays as it is. Prints the directory.
#   TREE   a libkvm checkout (default: the current directory)
set -euo pipefail
tree=$(realpath "${1:-.}")
build=c-tests/build-static
cd "$tree"
targets=$(for f in c-tests/test_*.c; do t=${f#c-tests/}; echo "$build/${t%.c}"; done)
# Static glibc warns about getaddrinfo/getpwuid_r in Rust's std; they are not
# reached by the tests (addresses are numeric, no home directory lookups).
make -s lib >&2
make -s CC="${CC:-gcc} -static" BUILD=$build $targets $build/gdb_vmm 2>&1 |
    grep -v -e "statically linked applications requires" -e "in function" >&2 || true
for t in $targets $build/gdb_vmm; do [ -x "$t" ] || { echo "$t not built" >&2; exit 1; }; done
echo "$tree/$build"

#!/bin/bash
# test-svm.sh [TREE]: `make test-svm`. Builds TREE's C tests and gdb_vmm
# statically, runs every C test in the SVM test host, then the gdb tests
# with the host's gdb (and the raw protocol tests) against gdb_vmm inside it. Ends with the sum of
# both "N passed, M failed" lines; exit status 0 only if both passed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tree=$(realpath "${1:-.}")
static=$("$here/build-static-tests.sh" "$tree") || exit 1
c_out=$(mktemp)
gdb_out=$(mktemp)
trap 'rm -f "$c_out" "$gdb_out"' EXIT
"$here/run-in-svm.sh" "$static"/test_* | tee "$c_out"
c_status=${PIPESTATUS[0]}
"$here/gdb/run-gdb-in-svm.sh" "$tree" | tee "$gdb_out"
gdb_status=${PIPESTATUS[0]}
sum() { grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -n 1; }
read -r p1 _ f1 _ <<< "$(sum "$c_out" | tr -d ,)"
read -r p2 _ f2 _ <<< "$(sum "$gdb_out" | tr -d ,)"
echo
echo "test-svm: C tests $(sum "$c_out"); gdb tests $(sum "$gdb_out")"
echo "$(( ${p1:-0} + ${p2:-0} )) passed, $(( ${f1:-1} + ${f2:-1} )) failed"
[ "$c_status" -eq 0 ] && [ "$gdb_status" -eq 0 ]

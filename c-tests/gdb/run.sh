#!/usr/bin/env bash
# Runs the gdb end-to-end tests (test_gdb.py inside the real gdb).
set -u
here=$(cd "$(dirname "$0")" && pwd)
export GDB_TEST_VMM=${GDB_TEST_VMM:-$here/../build/gdb_vmm}
exec timeout --signal=KILL 600 gdb -batch -nx -x "$here/test_gdb.py"

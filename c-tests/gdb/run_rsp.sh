#!/usr/bin/env bash
# Runs the remote-protocol tests of the GDB stub (test_rsp.py: a raw client,
# then the real gdb).
set -u
here=$(cd "$(dirname "$0")" && pwd)
export GDB_TEST_VMM=${GDB_TEST_VMM:-$here/../build/gdb_vmm}
exec timeout --signal=KILL 600 python3 "$here/test_rsp.py"

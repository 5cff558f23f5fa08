# gdb round trips through libkvm's stub, measured with the real gdb:
#   GDB_TEST_VMM=c-tests/build/gdb_vmm gdb -batch -nx -x bench/bench_gdb.py
# Prints bench lines like bench/exit_bench.c: stepi per second and
# breakpoint hits per second, medians of 9 rounds with their spread.

import os
import sys
import time

import gdb

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "c-tests", "gdb"))
from gdb_helpers import Vmm, release_guest, run, stop_event_after  # noqa: E402


def rates(action, count, rounds=9):
    per_second = []
    for _ in range(rounds):
        start = time.monotonic()
        for _ in range(count):
            action()
        per_second.append(count / (time.monotonic() - start))
    per_second.sort()
    return per_second[rounds // 2], per_second[0], per_second[-1]


def main():
    run("set confirm off")
    run("set pagination off")
    vmm = Vmm("env")
    try:
        vmm.connect()
        run("break *%#x" % vmm["step_loop"])
        stop_event_after("continue")
        run("delete")
        median, low, high = rates(lambda: run("stepi"), 50)
        print("bench gdb_stepi %.0f per_s spread=%.0f..%.0f" % (median, low, high))
        run("break *%#x" % vmm["second_func"])
        median, low, high = rates(lambda: stop_event_after("continue"), 30)
        print("bench gdb_breakpoint_hits %.0f per_s spread=%.0f..%.0f" % (median, low, high))
        run("delete")
        release_guest(vmm)
        run("detach")
        vmm.finish()
    finally:
        vmm.kill()


main()

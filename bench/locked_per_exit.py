#!/usr/bin/env python3
# Locked instructions (a `lock` prefix, or `xchg` with memory) that the
# library executes per exit, from a callgrind run with --dump-instr=yes
# and the binary it ran. One may cost up to some 8 ns on this project's
# machine (in a tight loop of them), far more than an instruction of
# another kind: BENCHMARKS.md weighs them.
#
#   bench/locked_per_exit.py CALLGRIND_OUT BINARY EXITS

import re
import subprocess
import sys


def executions_by_address(callgrind_out):
    """Executions of each instruction address. A line after `calls=` is a
    call's inclusive cost, not the call instruction's own count."""
    counts = {}
    after_call = False
    for line in open(callgrind_out):
        if line.startswith("calls="):
            after_call = True
            continue
        if after_call:
            after_call = False
            continue
        m = re.match(r"^0x([0-9a-f]+)\s+\d+\s+(\d+)", line)
        if m:
            address = int(m.group(1), 16)
            counts[address] = counts.get(address, 0) + int(m.group(2))
    return counts


def is_locked(instruction):
    """A `lock` prefix, or `xchg` with a memory operand (locked without
    one; `xchg` between two registers is not)."""
    return instruction.startswith("lock ") or (instruction.startswith("xchg ") and "(" in instruction)


def locked_addresses(binary):
    """Addresses of the binary's locked instructions."""
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", binary], capture_output=True, text=True,
                             check=True).stdout
    found = set()
    for line in listing.splitlines():
        m = re.match(r"^\s+([0-9a-f]+):\s+(.*)", line)
        if m and is_locked(m.group(2)):
            found.add(int(m.group(1), 16))
    return found


def main():
    callgrind_out, binary, exits = sys.argv[1], sys.argv[2], int(sys.argv[3])
    counts = executions_by_address(callgrind_out)
    locked_at = locked_addresses(binary)
    locked = sum(n for address, n in counts.items() if address in locked_at)
    print("%.1f" % (locked / exits))


main()

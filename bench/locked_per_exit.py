#!/usr/bin/env python3
# Locked instructions (a `lock` prefix, or `xchg` with memory) that the
# library executes per exit, from a callgrind run with --dump-instr=yes
# and the binary it ran. One may cost up to some 8 ns on this project's
# machine (in a tight loop of them), far more than an instruction of
# another kind: BENCHMARKS.md weighs them.
#
#   bench/locked_per_exit.py CALLGRIND_OUT BINARY EXITS [--by-function]
#
# With --by-function it also lists, per function of the binary, how many
# locked instructions per exit run there (where the locks of a step or a
# breakpoint hit are taken).

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
    """The binary's locked instructions: address to the (demangled)
    function that holds it."""
    listing = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", binary], capture_output=True, text=True,
                             check=True).stdout
    found = {}
    function = "?"
    for line in listing.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.*)>:", line)
        if m:
            function = m.group(1)
            continue
        m = re.match(r"^\s+([0-9a-f]+):\s+(.*)", line)
        if m and is_locked(m.group(2)):
            found[int(m.group(1), 16)] = function
    return found


def main():
    callgrind_out, binary, exits = sys.argv[1], sys.argv[2], int(sys.argv[3])
    counts = executions_by_address(callgrind_out)
    locked_at = locked_addresses(binary)
    by_function = {}
    for address, n in counts.items():
        if address in locked_at:
            by_function[locked_at[address]] = by_function.get(locked_at[address], 0) + n
    print("%.1f" % (sum(by_function.values()) / exits))
    if "--by-function" in sys.argv[4:]:
        for function, n in sorted(by_function.items(), key=lambda item: -item[1]):
            if n / exits >= 0.05:
                print("  %5.1f %s" % (n / exits, function))

main()

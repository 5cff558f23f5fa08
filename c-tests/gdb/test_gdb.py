# End-to-end tests of libkvm's GDB stub with the real gdb, run inside gdb:
#   gdb -batch -nx -x c-tests/gdb/test_gdb.py
# GDB_TEST_VMM names the test VMM (c-tests/gdb/gdb_vmm.c). Each test starts
# a VMM, connects, checks what a gdb user relies on, and leaves; the last
# line is "N passed, M failed". GDB_TEST_FILTER runs the tests whose name
# contains it.

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import gdb

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gdb_helpers import (  # noqa: E402
    REMOTE_VMM,
    Vmm,
    check,
    debugged_vmm,
    expect_clean_exit,
    release_guest,
    run,
    stop_event_after,
    value,
)

passed, failed, skipped = [], [], []
measurements = {}


class Skip(Exception):
    pass


def run_to_once(vmm, label):
    """Continues to the guest's `label` with a breakpoint deleted there."""
    run("break *%#x" % vmm[label])
    stop_event_after("continue")
    run("delete")


def test_break_at_an_address_stops_there_with_the_right_rip():
    with debugged_vmm() as vmm:
        check(value("$rip") == vmm["main"], "LIBKVM_GDB: not held before the first instruction")
        run("break *%#x" % vmm["regs_set"])
        event = stop_event_after("continue")
        check(isinstance(event, gdb.BreakpointEvent), "stop was %r" % event)
        check(value("$rip") == vmm["regs_set"], "rip %#x" % value("$rip"))
        check(gdb.selected_thread().num == 1, "stopped in thread %d" % gdb.selected_thread().num)


def test_100_stepi_give_the_exact_rip_sequence():
    with debugged_vmm() as vmm:
        run_to_once(vmm, "step_loop")
        cycle = [vmm[l] for l in ("step_add", "step_xor", "step_cmp", "step_jne", "step_loop")]
        seen = []
        start = time.monotonic()
        for _ in range(100):
            run("stepi")
            seen.append(value("$rip"))
        elapsed = time.monotonic() - start
        measurements["gdb stepi per second"] = 100 / elapsed
        expected = [cycle[i % 5] for i in range(100)]
        if seen != expected:
            first = next(i for i in range(100) if seen[i] != expected[i])
            raise AssertionError("step %d went to %#x, expected %#x" % (first + 1, seen[first], expected[first]))
        check(value("$rbx") == 20, "rbx %d after 20 loop turns" % value("$rbx"))


def test_stepi_after_a_register_write_steps_one_instruction():
    # KVM_SET_REGS takes away the trap flag of KVM's single step on VMX and
    # SVM: a stepi after `set` must still stop after one instruction.
    with debugged_vmm() as vmm:
        run_to_once(vmm, "step_loop")
        run("stepi")
        run("stepi")
        check(value("$rip") == vmm["step_xor"], "rip %#x after two stepi" % value("$rip"))
        run("set $rcx = 40")
        run("stepi")
        check(value("$rip") == vmm["step_cmp"], "rip %#x after set $rcx and stepi" % value("$rip"))
        run("set $pc = %#x" % vmm["step_add"])
        run("stepi")
        check(value("$rip") == vmm["step_xor"], "rip %#x after set $pc and stepi" % value("$rip"))
        check(value("$rcx") == 42, "rcx %d: the written value, plus 2" % value("$rcx"))


def test_info_registers_show_what_the_guest_set():
    with debugged_vmm() as vmm:
        run("break *%#x" % vmm["regs_set"])
        stop_event_after("continue")
        check(value("$r8") == 0x1111111111111111, "r8")
        check(value("$r15") == 0xFEDCBA9876543210, "r15")
        text = run("info registers")
        check(re.search(r"r12\s+0x3333333333333333", text), "info registers:\n" + text)
        check(re.search(r"rip\s+0x%x" % vmm["regs_set"], text), "rip in info registers")
        check(value("$cr3") == 0x1000, "cr3 %#x" % value("$cr3"))
        check(value("$cr0") == 0x80050033, "cr0 %#x" % value("$cr0"))
        check(value("$efer") & 0x500 == 0x500, "efer %#x" % value("$efer"))
        check(value("$cs") == 8 and value("$cs_base") == 0, "cs")
        check(value("$fs_base") == 0, "fs_base")
        system = run("info registers cr4 efer cr2")
        check(re.search(r"cr4\s+0x20\b", system) and "efer" in system, "info registers cr4 efer cr2:\n" + system)
        check("cr3" in run("info all-registers"), "info all-registers lists the control registers")
        # A register written in gdb reaches the vcpu.
        run("set $r13 = 0x5151")
        check("r13 0000000000005151" in run("monitor regs 0"), "monitor regs after set $r13")


def test_x_over_a_breakpoint_shows_the_original_bytes():
    with debugged_vmm() as vmm:
        run("set breakpoint always-inserted on")
        run("break *%#x" % vmm["write_var"])
        text = run("x/16xb %#x" % vmm["write_var"])
        shown = [int(b, 16) for b in re.findall(r"0x([0-9a-f]{2})\b", text.split(":", 1)[1])]
        check(shown == vmm.write_var_bytes, "x/16xb shows %s, code is %s" % (shown, vmm.write_var_bytes))
        check("int3 at gpa %#x" % vmm["write_var"] in run("monitor breakpoints"), "breakpoint is in memory")
        run("delete")
        run("set breakpoint always-inserted off")


def test_restore_and_dump_move_more_than_a_packet_byte_for_byte():
    # gdb cuts both into packets of the stub's PacketSize: 20,000 bytes are
    # several `X` writes and `m` reads, each as large as the stub allows.
    directory = tempfile.mkdtemp(prefix="libkvm-gdb-bulk.")
    try:
        with debugged_vmm():
            data = os.urandom(20000)
            address = 0x200000  # RAM the guest does not use
            sent, back = os.path.join(directory, "sent"), os.path.join(directory, "back")
            with open(sent, "wb") as f:
                f.write(data)
            run("restore %s binary %#x" % (sent, address))
            run("dump binary memory %s %#x %#x" % (back, address, address + len(data)))
            with open(back, "rb") as f:
                check(f.read() == data, "the bytes read back differ from those written")
            check(value("{unsigned char}%#x" % (address + 12345)) == data[12345], "one byte read alone")
    finally:
        shutil.rmtree(directory)


def test_hbreak_stops_with_a_hardware_breakpoint():
    vmm = Vmm("env")
    log = "/tmp/libkvm-gdb-remote-%d.log" % os.getpid()
    try:
        run("set remotelogfile " + log)  # records the session from the connection on
        vmm.connect()
        run("hbreak *%#x" % vmm["after_write"])
        stop_event_after("continue")
        check(value("$rip") == vmm["after_write"], "rip %#x" % value("$rip"))
        check(value("*(long *)%#x" % vmm["variable"]) == 0xABCDEF, "store before the breakpoint ran")
        run("delete")
        run_to_once(vmm, "step_loop")
        release_guest(vmm)
        run("detach")
        expect_clean_exit(vmm)
        with open(log, errors="replace") as f:
            traffic = f.read()
        check("hwbreak:;" in traffic, "no hwbreak stop reason")
        check("swbreak:;" in traffic, "no swbreak stop reason")
    finally:
        run("set remotelogfile /dev/null")
        if os.path.exists(log):
            os.unlink(log)
        vmm.kill()


def test_watch_stops_at_the_store():
    with debugged_vmm() as vmm:
        run("watch *(long *)%#x" % vmm["variable"])
        run("break *%#x" % vmm["step_loop"])  # guard: reached only if the watchpoint did not fire
        event = stop_event_after("continue")
        if value("$rip") == vmm["step_loop"]:
            raise Skip("host KVM does not report data breakpoints")
        check(isinstance(event, gdb.BreakpointEvent) and isinstance(event.breakpoint, gdb.Breakpoint)
              and event.breakpoint.type == gdb.BP_HARDWARE_WATCHPOINT, "stop was %r" % event)
        check(value("$rip") == vmm["after_write"], "rip %#x" % value("$rip"))
        check(value("*(long *)%#x" % vmm["variable"]) == 0xABCDEF, "stored value")


def test_rwatch_stops_after_the_load_with_the_value_read():
    with debugged_vmm() as vmm:
        run("rwatch *(long *)%#x" % vmm["variable"])
        event = stop_event_after("continue")
        check(isinstance(event, gdb.BreakpointEvent) and event.breakpoint.type == gdb.BP_READ_WATCHPOINT,
              "stop was %r" % event)
        check(value("$rip") == vmm["after_read"], "rip %#x, the load is at %#x" % (value("$rip"), vmm["read_var"]))
        check(value("$rax") == 0xABCDEF, "rax %#x: the guest read the stored value" % value("$rax"))


def test_awatch_stops_at_the_store_and_at_the_load():
    with debugged_vmm() as vmm:
        run("awatch *(long *)%#x" % vmm["variable"])
        stop_event_after("continue")
        check(value("$rip") == vmm["after_write"], "first stop at %#x" % value("$rip"))
        stop_event_after("continue")
        check(value("$rip") == vmm["after_read"], "second stop at %#x" % value("$rip"))


def test_threads_are_vcpus_and_a_breakpoint_on_the_second_stops_it():
    with debugged_vmm() as vmm:
        threads = sorted(t.num for t in gdb.selected_inferior().threads())
        check(threads == [1, 2], "threads %s" % threads)
        run("break *%#x" % vmm["second_func"])
        stop_event_after("continue")
        check(gdb.selected_thread().num == 2, "stopped in thread %d" % gdb.selected_thread().num)
        check(value("$rip") == vmm["second_func"], "rip %#x" % value("$rip"))
        # Breakpoint hits per second, driven by gdb.
        start = time.monotonic()
        for _ in range(30):
            stop_event_after("continue")
        measurements["gdb breakpoint hits per second"] = 30 / (time.monotonic() - start)
        check(gdb.selected_thread().num == 2 and value("$rip") == vmm["second_func"], "repeat hits")


def test_scheduler_locking_steps_one_vcpu_while_the_other_stays():
    with debugged_vmm() as vmm:
        run_to_once(vmm, "step_loop")
        run("thread 2")
        other_rip = value("$rip")
        run("thread 1")
        run("set scheduler-locking on")
        for _ in range(5):
            run("stepi")
        check(value("$rip") == vmm["step_loop"], "thread 1 stepped around the loop")
        run("thread 2")
        check(value("$rip") == other_rip, "thread 2 moved from %#x to %#x" % (other_rip, value("$rip")))
        run("set scheduler-locking off")


def interrupt_gdb_after(seconds):
    """Sends gdb itself a SIGINT later, as Ctrl-C in a terminal does."""
    return subprocess.Popen(["sh", "-c", "sleep %s; kill -INT %d" % (seconds, os.getpid())])


def test_interrupt_stops_a_spinning_guest():
    vmm = Vmm("api")
    try:
        time.sleep(0.3)  # let the guest reach its spin loop
        vmm.connect()
        kicker = interrupt_gdb_after(1)
        event = stop_event_after("continue")
        kicker.wait()
        check(isinstance(event, gdb.SignalEvent) and event.stop_signal == "SIGINT", "stop was %r" % event)
        check(vmm["spin"] <= value("$rip") < vmm["spin"] + 16 or vmm["second"] <= value("$rip") < vmm["variable"],
              "rip %#x not in a spin loop" % value("$rip"))
        release_guest(vmm)
        run("detach")
        expect_clean_exit(vmm)
    finally:
        vmm.kill()


def test_detach_leaves_the_guest_running_with_memory_restored():
    vmm = Vmm("env")
    try:
        vmm.connect()
        run("set breakpoint always-inserted on")
        run("break *%#x" % vmm["step_loop"])
        run("break *%#x" % vmm["second_func"])
        release_guest(vmm)
        run("detach")  # with both breakpoints still in guest memory
        out = expect_clean_exit(vmm)
        check("vcpu 0 halted" in out and "vcpu 1 halted" in out, out)
        run("delete")
        run("set breakpoint always-inserted off")
    finally:
        vmm.kill()


def test_reconnecting_after_a_detach_works():
    vmm = Vmm("api")
    try:
        vmm.connect()
        run("detach")
        time.sleep(0.2)
        vmm.connect()
        threads = sorted(t.num for t in gdb.selected_inferior().threads())
        check(threads == [1, 2], "threads %s" % threads)
        release_guest(vmm)
        run("detach")
        expect_clean_exit(vmm)
    finally:
        vmm.kill()


def test_kill_ends_the_vmm_through_its_shutdown_callback():
    vmm = Vmm("env")
    try:
        vmm.connect()
        run("kill")
        status, out = vmm.finish()
        check("vcpu 0 shut down" in out and "kvm_run returned 2 and 2" in out, out)
    finally:
        vmm.kill()


def test_monitor_commands_dump_state_and_switch_address_spaces():
    with debugged_vmm() as vmm:
        check("phys" in run("monitor help"), "monitor help")
        regs = run("monitor regs")
        check("rip 0000000000%06x" % vmm["main"] in regs, regs)
        check("exception: injected" in run("monitor dump 1"), "monitor dump 1")
        # Map virtual 0x40000000 to physical 0 in the guest's page tables
        # (PD 1, entry 0) so that virtual and physical views differ.
        pde = 0x4000  # GUEST_PD + 0x1000
        run("monitor phys")
        run("set {long}%#x = 0x83" % pde)
        phys = run("x/2xg %#x" % vmm["main"])
        run("monitor virt")
        virt = run("x/2xg %#x" % (0x40000000 + vmm["main"]))
        check(phys.split(":")[1] == virt.split(":")[1], "phys %s virt %s" % (phys, virt))
        run("monitor phys")
        run("set {long}%#x = 0" % pde)
        run("monitor virt")
        check("no breakpoints" in run("monitor breakpoints"), "monitor breakpoints")


def open_core(path):
    """What a second gdb shows of a core file: threads, registers of each
    thread, and eight bytes at every address in `addresses`."""
    out = subprocess.run(
        ["gdb", "-batch", "-nx", "-ex", "core-file " + path, "-ex", "info threads",
         "-ex", "thread 1", "-ex", "info registers rip rsp r8", "-ex", "thread 2", "-ex", "info registers rip"],
        capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def check_core(path, vmm, live_code):
    text = open_core(path)
    threads = re.findall(r"^\*?\s+\d+\s+LWP (\d+)", text, re.M)
    check(threads == ["1", "2"], "threads of %s: %r\n%s" % (path, threads, text))
    rips = [int(v, 16) for v in re.findall(r"^rip\s+(0x[0-9a-f]+)", text, re.M)]
    check(rips[:1] == [vmm["regs_set"]] and len(rips) == 2, "rips %r\n%s" % (rips, text))
    check(re.search(r"^r8\s+0x1111111111111111", text, re.M), "r8 in the core:\n" + text)
    code = subprocess.run(["gdb", "-batch", "-nx", "-ex", "core-file " + path, "-ex", "x/2xg %#x" % vmm["main"]],
                          capture_output=True, text=True, timeout=60).stdout
    check(code.split(":")[-1].split() == live_code, "code in the core %r, live %r" % (code, live_code))


def test_gcore_and_monitor_core_write_cores_that_gdb_opens():
    directory = tempfile.mkdtemp(prefix="libkvm-gdb-core.")
    try:
        with debugged_vmm() as vmm:
            run("break *%#x" % vmm["regs_set"])
            stop_event_after("continue")
            live_code = run("x/2xg %#x" % vmm["main"]).split(":")[-1].split()
            if REMOTE_VMM:
                # The VMM writes in its own host's file system, out of reach.
                check("written" in run("monitor core /tmp/libkvm-monitor.core"), "monitor core")
                print("  skipped: the VMM runs in the SVM test host: the core monitor core wrote is not opened here")
            else:
                ours = os.path.join(directory, "monitor.core")
                check("written" in run("monitor core " + ours), "monitor core")
                check_core(ours, vmm, live_code)
            theirs = os.path.join(directory, "gcore.core")
            check("Saved corefile" in run("gcore " + theirs), "gcore")
            check_core(theirs, vmm, live_code)
            check("usage" in run("monitor core"), "monitor core without a path")
            check("cannot write" in run("monitor core /nonexistent/dir/core"), "monitor core to a bad path")
            check(value("$rip") == vmm["regs_set"], "the vcpu stayed where it stopped")
    finally:
        shutil.rmtree(directory)


def main():
    run("set confirm off")
    run("set pagination off")
    only = os.environ.get("GDB_TEST_FILTER", "")
    tests = [(name, f) for name, f in sorted(globals().items()) if name.startswith("test_") and only in name]
    for name, test in tests:
        try:
            test()
            passed.append(name)
            print("ok   " + name)
        except Skip as reason:
            skipped.append(name)
            print("  skipped: %s" % reason)
            print("skip " + name)
        except Exception:
            failed.append(name)
            print("FAIL " + name)
            print("  " + traceback.format_exc().replace("\n", "\n  "))
        # Whatever a failed test left behind must not leak into the next.
        for command in ("delete", "set scheduler-locking off", "set breakpoint always-inserted off", "disconnect"):
            try:
                run(command)
            except gdb.error:
                pass
    for name, rate in sorted(measurements.items()):
        print("measured: %s: %.0f" % (name, rate))
    if skipped:
        print("(%d skipped)" % len(skipped))
    print("%d passed, %d failed" % (len(passed), len(failed)))
    gdb.execute("quit %d" % (1 if failed else 0))


main()

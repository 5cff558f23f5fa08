# Shared by the gdb tests (test_gdb.py) and benchmarks (bench/bench_gdb.py),
# which run inside gdb: a test VMM process (gdb_vmm.c) to connect to, and
# small helpers over gdb's Python API.

import os
import subprocess
import time
from contextlib import contextmanager

import gdb

VMM = os.environ["GDB_TEST_VMM"]
# Set when GDB_TEST_VMM stands in for a VMM that runs elsewhere (the SVM
# test host): files it writes are in that host's file system.
REMOTE_VMM = os.environ.get("GDB_TEST_REMOTE_VMM") == "1"
# Below the ephemeral range (32768 up), where connections of earlier tests
# could hold a port.
PORT_BASE = 20000 + (os.getpid() % 5000)
next_port = [PORT_BASE]


def run(command):
    return gdb.execute(command, to_string=True)


def value(expression):
    return int(gdb.parse_and_eval(expression)) & 0xFFFFFFFFFFFFFFFF


class Vmm:
    """A test VMM process and its guest's label addresses."""

    def __init__(self, mode):
        self.port = next_port[0]
        next_port[0] += 1
        self.address = "127.0.0.1:%d" % self.port
        env = dict(os.environ)
        env.pop("LIBKVM_GDB", None)
        if mode == "env":
            env["LIBKVM_GDB"] = self.address
            args = [VMM, "env"]
        else:
            args = [VMM, "api", self.address]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        self.labels = {}
        self.write_var_bytes = []
        for line in self.process.stdout:
            words = line.split()
            if words[:1] == ["label"]:
                self.labels[words[1]] = int(words[2], 16)
            elif words[:2] == ["bytes", "write_var"]:
                self.write_var_bytes = [int(w, 16) for w in words[2:]]
            elif words == ["ready"]:
                break
        else:
            raise AssertionError("VMM ended before it was ready: " + self.process.stderr.read())

    def __getitem__(self, label):
        return self.labels[label]

    def connect(self):
        for _ in range(50):
            try:
                run("target remote " + self.address)
                return
            except gdb.error:
                time.sleep(0.1)
        raise AssertionError("cannot connect to " + self.address)

    def finish(self, timeout=60):
        """Waits for the VMM to end; returns (exit status, its stdout)."""
        out, _ = self.process.communicate(timeout=timeout)
        return self.process.returncode, out

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def release_guest(vmm):
    """Sets the guest's quit flag, so that both vcpus halt when resumed."""
    run("set {int}%#x = 1" % vmm["quit"])


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def expect_clean_exit(vmm):
    status, out = vmm.finish()
    check(status == 0, "VMM exit status %s, output:\n%s" % (status, out))
    check("code intact" in out, "guest code not restored:\n" + out)
    return out


def stop_event_after(command):
    """Runs `command` (continue, stepi) and returns the stop event gdb saw."""
    events = []
    handler = events.append
    gdb.events.stop.connect(handler)
    try:
        run(command)
    finally:
        gdb.events.stop.disconnect(handler)
    check(events, "no stop after " + command)
    return events[-1]


@contextmanager
def debugged_vmm(mode="env"):
    """A connected VMM; afterwards the guest is let go, gdb detaches, and
    the VMM must end cleanly with its code intact."""
    vmm = Vmm(mode)
    try:
        vmm.connect()
        yield vmm
        run("delete")
        release_guest(vmm)
        run("detach")
        expect_clean_exit(vmm)
    finally:
        vmm.kill()

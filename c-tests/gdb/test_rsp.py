#!/usr/bin/env python3
# The GDB stub against a raw remote-protocol client (and, at the end, the
# real gdb): packets while the guest runs, disconnects at every point,
# a huge memory read, an all-or-nothing G, many connections, random and
# malformed packets, and the doors (listen address policy, unix sockets).
#
#   GDB_TEST_VMM=c-tests/build/gdb_vmm python3 c-tests/gdb/test_rsp.py
#
# Loopback only; every wait is bounded. The last line is "N passed, M failed".

import os
import random
import select
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback

VMM = os.environ.get("GDB_TEST_VMM", os.path.join(os.path.dirname(__file__), "..", "build", "gdb_vmm"))
# Below the ephemeral range (32768 up), apart from test_gdb.py's ports.
PORT_BASE = 26000 + (os.getpid() % 5000)
next_port = [PORT_BASE]
CR0_OFFSET = 0x218 + 2 * 8  # after the core and SSE registers: fs_base, gs_base, cr0
# Set when GDB_TEST_VMM stands in for a VMM that runs elsewhere (the SVM
# test host): its /proc, its environment and its sockets are not here.
REMOTE_VMM = os.environ.get("GDB_TEST_REMOTE_VMM") == "1"


def needs_local_vmm(what):
    if REMOTE_VMM:
        raise Skip("the VMM runs in the SVM test host, where this test cannot see its " + what)


class Skip(Exception):
    pass


def check(condition, message):
    if not condition:
        raise AssertionError(message)


class Vmm:
    """A gdb_vmm process and what it printed about its guest."""

    def __init__(self, mode="api", ram_mib=None, env_address=None, extra_env=None, expect_ready=True):
        self.port = next_port[0]
        next_port[0] += 1
        self.address = "127.0.0.1:%d" % self.port
        env = dict(os.environ)
        env.pop("LIBKVM_GDB", None)
        env.pop("LIBKVM_GDB_ALLOW_REMOTE", None)
        env.update(extra_env or {})
        if mode == "env":
            env["LIBKVM_GDB"] = env_address or self.address
            args = [VMM, "env"]
        else:
            args = [VMM, "api", self.address] + ([str(ram_mib)] if ram_mib else [])
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        self.labels = {}
        self.code = b""
        self.code_at = 0
        if not expect_ready:
            return
        for line in self.process.stdout:
            words = line.split()
            if words[:1] == ["label"]:
                self.labels[words[1]] = int(words[2], 16)
            elif words[:1] == ["code"]:
                self.code_at, self.code = int(words[1], 16), bytes.fromhex(words[2])
            elif words == ["ready"]:
                break
        else:
            raise AssertionError("VMM ended before it was ready: " + self.process.stderr.read())

    def __getitem__(self, label):
        return self.labels[label]

    def status(self, field):
        with open("/proc/%d/status" % self.process.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError("no %s" % field)

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.process.pid))

    def alive(self):
        return self.process.poll() is None

    def finish(self, timeout=60):
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


class Rsp:
    """A minimal remote-protocol client: packets, acks, run-length decoding."""

    def __init__(self, address, timeout=10.0):
        host, port = address.rsplit(":", 1)
        # The SVM test host's port forward once refused connections for the
        # whole 10 s after its VMM said "ready" (a clean-clone CI run of
        # 2026-12-02; the same tests passed twice in a row after it).
        deadline = time.monotonic() + (30 if REMOTE_VMM else 10)
        while True:
            try:
                self.sock = socket.create_connection((host, int(port)), timeout=timeout)
                if REMOTE_VMM and self._closed_at_once():
                    self.sock.close()
                    raise OSError("the port forward closed the connection")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.buffer = b""

    def _closed_at_once(self):
        """True when the connection ends before anything was sent on it.
        QEMU's port forward to the SVM test host accepts at once and closes
        when its own connection inside fails (seen once in test-svm, on a
        VMM that had printed "ready"); a stub says nothing before a packet."""
        readable, _, _ = select.select([self.sock], [], [], 0.2)
        return bool(readable) and self.sock.recv(1, socket.MSG_PEEK) == b""

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, payload):
        data = payload.encode("latin-1") if isinstance(payload, str) else payload
        self.send_raw(b"$" + data + b"#%02x" % (sum(data) % 256))

    def _byte(self):
        while not self.buffer:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer = chunk
        b, self.buffer = self.buffer[:1], self.buffer[1:]
        return b

    def read_packet(self):
        """The next packet's payload (acks skipped), run-length decoded."""
        while self._byte() != b"$":
            pass
        body = bytearray()
        while True:
            b = self._byte()
            if b == b"#":
                break
            body += b
        self._byte()
        self._byte()
        self.send_raw(b"+")
        out = bytearray()
        i = 0
        while i < len(body):
            if body[i : i + 1] == b"*" and out:
                out += out[-1:] * (body[i + 1] - 29)
                i += 2
            else:
                out.append(body[i])
                i += 1
        return out.decode("latin-1")

    def ask(self, payload):
        self.send(payload)
        return self.read_packet()

    def monitor(self, command):
        """qRcmd: the console output, then the final reply."""
        self.send("qRcmd," + command.encode().hex())
        text = ""
        while True:
            reply = self.read_packet()
            if reply.startswith("O") and reply != "OK":
                text += bytes.fromhex(reply[1:]).decode()
            else:
                return text, reply

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def read_code(rsp, vmm):
    reply = rsp.ask("m%x,%x" % (vmm.code_at, len(vmm.code)))
    check(not reply.startswith("E"), "m of the code: %s" % reply)
    return bytes.fromhex(reply)


def finish_cleanly(vmm):
    """Sets the guest's quit flag, detaches, and checks the VMM's ending."""
    rsp = Rsp(vmm.address)
    check(rsp.ask("?").startswith("T"), "no stop reply")
    check(rsp.ask("M%x,4:01000000" % vmm["quit"]) == "OK", "quit flag")
    check(rsp.ask("D") == "OK", "detach")
    rsp.close()
    status, out, err = vmm.finish()
    check(status == 0, "VMM exit %s:\n%s\n%s" % (status, out, err))
    check("code intact" in out, "code modified:\n" + out)
    check(out.count("guest says O") == 1, "guest output:\n" + out)
    check("kvm_run returned 1 and 1" in out, "vcpus did not halt:\n" + out)
    return out, err


def interrupt_detach_and_finish(rsp, vmm):
    """Stops the running guest with Ctrl-C, detaches, and checks the VMM's
    ending (`finish_cleanly`)."""
    rsp.send_raw(b"\x03")
    check(rsp.read_packet().startswith("T"), "no stop after Ctrl-C")
    check(rsp.ask("D") == "OK", "detach")
    rsp.close()
    finish_cleanly(vmm)


def test_packets_while_the_guest_runs_get_answers():
    vmm = Vmm()
    try:
        rsp = Rsp(vmm.address)
        check(rsp.ask("?").startswith("T"), "no stop reply at connect")
        rsp.send("vCont;c")
        time.sleep(0.2)
        for _ in range(20):
            regs = rsp.ask("g")
            check(len(regs) == 2 * (0x218 + 12 * 8 + 8), "g while running: %r" % regs[:40])
            check(read_code(rsp, vmm) == vmm.code, "code read while running differs")
            text, reply = rsp.monitor("regs")
            check(reply == "OK" and "rip" in text, "monitor while running: %r %r" % (text, reply))
            check(rsp.ask("Z0,%x,1" % vmm["regs_set"]) == "OK", "Z0 while running")
            check(read_code(rsp, vmm) == vmm.code, "a read shows the int3")
            check(rsp.ask("z0,%x,1" % vmm["regs_set"]) == "OK", "z0 while running")
        interrupt_detach_and_finish(rsp, vmm)
    finally:
        vmm.kill()


def test_disconnects_at_every_point_leave_the_guest_running_with_memory_restored():
    vmm = Vmm()
    try:
        second_func, quit_flag, variable = vmm["second_func"], vmm["quit"], vmm["variable"]
        scenarios = {
            "right after connecting": [],
            "mid-packet": [("raw", b"$m%x,10" % vmm.code_at)],
            "stopped with breakpoints": [("ok", "Z0,%x,1" % second_func), ("ok", "Z1,%x,1" % vmm["spin"])],
            "running with a breakpoint being hit": [("ok", "Z0,%x,1" % second_func), ("send", "vCont;c")],
            "running with watchpoints": [
                ("ok", "Z2,%x,4" % quit_flag),
                ("ok", "Z3,%x,8" % variable),
                ("send", "vCont;c"),
            ],
            "while stepping": [("send", "vCont;s:2;c")],
            "in a monitor command": [("send", "qRcmd," + "dump".encode().hex())],
        }
        for name, steps in scenarios.items():
            for _ in range(3):
                rsp = Rsp(vmm.address)
                for kind, what in steps:
                    if kind == "raw":
                        rsp.send_raw(what)
                    elif kind == "send":
                        rsp.send(what)
                    else:
                        check(rsp.ask(what) == "OK", "%s: %s" % (name, what))
                rsp.close()
                # The next client is served, and sees the guest's own code.
                rsp = Rsp(vmm.address)
                check(rsp.ask("?").startswith("T"), "%s: no stop reply for the next client" % name)
                check(read_code(rsp, vmm) == vmm.code, "%s: code not restored" % name)
                check(rsp.ask("D") == "OK", "%s: detach" % name)
                rsp.close()
                check(vmm.alive(), "VMM died after a disconnect %s" % name)
        finish_cleanly(vmm)
    finally:
        vmm.kill()


def test_a_1gib_memory_read_streams_with_flat_rss():
    needs_local_vmm("RSS")
    vmm = Vmm(ram_mib=1100)
    try:
        rsp = Rsp(vmm.address, timeout=60)
        check(rsp.ask("?").startswith("T"), "no stop reply")
        before = vmm.status("VmRSS")
        peak = [before]
        done = threading.Event()

        def sample():
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], vmm.status("VmRSS"))
                except (OSError, AssertionError):
                    return
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        length = 1 << 30
        start = time.monotonic()
        rsp.send("m%x,%x" % (0x100000, length))
        # Stream the reply through without keeping it, counting the hex
        # digits it stands for ("X*n" is X repeated n - 29 more times).
        while rsp._byte() != b"$":
            pass
        hex_chars = 0
        tail = b""
        while True:
            if not rsp.buffer:
                rsp.buffer = rsp.sock.recv(1 << 20)
                check(rsp.buffer, "connection closed mid-reply")
            end = rsp.buffer.find(b"#")
            chunk = tail + (rsp.buffer if end < 0 else rsp.buffer[:end])
            rsp.buffer = b"" if end < 0 else rsp.buffer[end + 1 :]
            # A run marker split from its count waits for the next piece.
            tail = b"*" if chunk.endswith(b"*") and end < 0 else b""
            if tail:
                chunk = chunk[:-1]
            hex_chars += len(chunk)
            at = chunk.find(b"*")
            while at >= 0:
                hex_chars += chunk[at + 1] - 29 - 2
                at = chunk.find(b"*", at + 2)
            if end >= 0:
                break
        rsp._byte()
        rsp._byte()
        rsp.send_raw(b"+")
        elapsed = time.monotonic() - start
        done.set()
        sampler.join()
        print("  1 GiB read in %.1f s; VMM RSS %d KiB before, %d KiB at most" % (elapsed, before, peak[0]))
        check(hex_chars == 2 * length, "reply of %d hex digits" % hex_chars)
        check(peak[0] - before < 64 * 1024, "RSS grew by %d KiB" % (peak[0] - before))
        check(rsp.ask("D") == "OK", "detach")
        rsp.close()
        finish_cleanly(vmm)
    finally:
        vmm.kill()


def test_a_packet_longer_than_packetsize_ends_its_session_and_nothing_else():
    vmm = Vmm()
    try:
        rsp = Rsp(vmm.address)
        check(rsp.ask("?").startswith("T"), "no stop reply")
        supported = rsp.ask("qSupported:multiprocess+")
        size = int(next(f for f in supported.split(";") if f.startswith("PacketSize=")).split("=")[1], 16)
        scratch = 0x200000  # RAM the guest does not use

        def write(data):
            """An M packet of `data`: its length on the wire, and the packet."""
            body = b"M%x,%x:" % (scratch, len(data)) + data.hex().encode()
            return len(body) + 4, b"$" + body + b"#%02x" % (sum(body) % 256)

        # The longest packet the stub advertises, '$' and checksum included.
        n = size // 2
        while write(bytes(n))[0] > size:
            n -= 1
        fits = os.urandom(n)
        length, packet = write(fits)
        check(length <= size and length >= size - 1, "a packet of %d bytes for PacketSize %d" % (length, size))
        rsp.send_raw(packet)
        check(rsp.read_packet() == "OK", "the advertised size refused")
        # One byte more: the stub ends the session without carrying it out.
        length, packet = write(os.urandom(len(fits) + 1))
        check(length > size, "the long packet is %d bytes" % length)
        rsp.send_raw(packet)
        try:
            answer = rsp.read_packet()
        except (ConnectionError, OSError):
            answer = None
        check(answer is None, "a packet over PacketSize answered %r" % answer)
        rsp.close()
        # A packet that never ends: the stub reads no more than its buffer.
        before = None if REMOTE_VMM else vmm.status("VmRSS")
        flood = Rsp(vmm.address)
        try:
            flood.send_raw(b"$" + b"a" * (32 << 20))
        except OSError:
            pass  # the stub closed its end
        flood.close()
        if before is not None:
            grew = vmm.status("VmRSS") - before
            check(grew < 4096, "RSS grew by %d KiB for a packet without end" % grew)
        rsp = Rsp(vmm.address)
        check(rsp.ask("?").startswith("T"), "no stop reply for the next client")
        back = rsp.ask("m%x,%x" % (scratch, len(fits) + 1))
        check(bytes.fromhex(back)[: len(fits)] == fits, "the packet that fitted was not written")
        check(read_code(rsp, vmm) == vmm.code, "code changed")
        rsp.close()
        finish_cleanly(vmm)
    finally:
        vmm.kill()


def test_g_that_the_vcpu_refuses_changes_no_register():
    vmm = Vmm()
    try:
        rsp = Rsp(vmm.address)
        check(rsp.ask("?").startswith("T"), "no stop reply")
        check(rsp.ask("Hg1") == "OK", "Hg1")
        before = rsp.ask("g")
        blob = bytearray(bytes.fromhex(before))
        blob[0:8] = (0x1234567812345678).to_bytes(8, "little")  # rax
        blob[CR0_OFFSET : CR0_OFFSET + 8] = (0x80000000).to_bytes(8, "little")  # PG without PE
        reply = rsp.ask("G" + blob.hex())
        check(reply.startswith("E"), "G with an invalid CR0 answered %r" % reply)
        check(rsp.ask("g") == before, "registers changed by a refused G")
        # A valid G still works, all of it.
        blob[CR0_OFFSET : CR0_OFFSET + 8] = before_cr0 = bytes.fromhex(before)[CR0_OFFSET : CR0_OFFSET + 8]
        check(rsp.ask("G" + blob.hex()) == "OK", "valid G")
        check(bytes.fromhex(rsp.ask("g"))[0:8] == (0x1234567812345678).to_bytes(8, "little"), "rax not written")
        check(bytes.fromhex(rsp.ask("g"))[CR0_OFFSET : CR0_OFFSET + 8] == before_cr0, "cr0")
        check(rsp.ask("G" + before) == "OK", "restoring the registers")
        check(rsp.ask("D") == "OK", "detach")
        rsp.close()
        finish_cleanly(vmm)
    finally:
        vmm.kill()


def test_a_stop_reply_carries_rbp_rsp_and_rip():
    """gdb need not ask for the registers (g) to place a stop."""
    vmm = Vmm()
    try:
        rsp = Rsp(vmm.address)
        check(rsp.ask("?").startswith("T"), "no stop reply")
        reply = rsp.ask("vCont;s:1")
        check(reply.startswith("T05"), "step reply %r" % reply)
        carried = {}
        for field in reply[3:].split(";"):
            name, _, value = field.partition(":")
            if value and all(c in "0123456789abcdef" for c in name):
                carried[int(name, 16)] = value
        check(rsp.ask("Hg1") == "OK", "Hg1")
        g = bytes.fromhex(rsp.ask("g"))
        # In the g block: rbp and rsp are the 7th and 8th qwords, rip follows the 16 general registers.
        for number, offset in ((6, 48), (7, 56), (16, 128)):
            check(carried.get(number) == g[offset : offset + 8].hex(), "register %d: %r, g has %s" %
                  (number, carried.get(number), g[offset : offset + 8].hex()))
        check(rsp.ask("D") == "OK", "detach")
        rsp.close()
        finish_cleanly(vmm)
    finally:
        vmm.kill()


def cpu_ticks(vmm, thread_name=None):
    """User and system time, in clock ticks, of the VMM process or of its
    thread named `thread_name`."""
    stats = ["/proc/%d/stat" % vmm.process.pid]
    if thread_name:
        task_dir = "/proc/%d/task" % vmm.process.pid
        stats = []
        for tid in os.listdir(task_dir):
            with open("%s/%s/comm" % (task_dir, tid)) as f:
                if f.read().strip() == thread_name:
                    stats.append("%s/%s/stat" % (task_dir, tid))
        check(len(stats) == 1, "threads named %s: %d" % (thread_name, len(stats)))
    with open(stats[0]) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def test_the_stub_and_the_vcpu_poll_only_for_a_moment_then_sleep():
    """Between gdb's packets the stub, and the vcpu that stopped, may wait
    without sleeping, but only briefly: a connected gdb that sends nothing
    costs the VMM no CPU while the guest is stopped, and the stub none
    while it runs."""
    needs_local_vmm("threads' CPU time")
    vmm = Vmm()
    try:
        rsp = Rsp(vmm.address)
        check(rsp.ask("?").startswith("T"), "no stop reply")
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        for state, thread in (("stopped", None), ("running", "libkvm-gdbstub")):
            if state == "running":
                rsp.send("vCont;c")
            else:
                check(rsp.ask("vCont;s:1").startswith("T05"), "step")
            for _ in range(50):
                check(read_code(rsp, vmm) == vmm.code, "code read while %s" % state)
            before = cpu_ticks(vmm, thread)
            time.sleep(1.0)
            used = cpu_ticks(vmm, thread) - before
            who = thread or "the VMM"
            print("  CPU time of %s in 1 s of silence, guest %s: %d ms" % (who, state, used * 1000 // ticks_per_s))
            check(used * 10 < ticks_per_s, "%s used %d of %d ticks in 1 s with the guest %s" %
                  (who, used, ticks_per_s, state))
        interrupt_detach_and_finish(rsp, vmm)
    finally:
        vmm.kill()


def test_thread_ids_beyond_the_vcpus_are_refused():
    vmm = Vmm()
    try:
        rsp = Rsp(vmm.address)
        check(rsp.ask("?").startswith("T"), "no stop reply")
        check(rsp.ask("Hg2") == "OK", "Hg2")
        for tid in ("3", "100000001", "ffffffff", "7fffffffffffffff"):
            rsp.ask("Hg" + tid)
            reply = rsp.ask("g")
            check(reply.startswith("E"), "g of thread %s gave %r" % (tid, reply[:20]))
            reply = rsp.ask("T" + tid)
            check(reply.startswith("E"), "thread %s is alive: %r" % (tid, reply))
        check(rsp.ask("Hg1") == "OK", "Hg1")
        check(rsp.ask("D") == "OK", "detach")
        rsp.close()
        finish_cleanly(vmm)
    finally:
        vmm.kill()


def test_500_connections_leave_fds_rss_and_threads_flat():
    needs_local_vmm("fds, RSS and threads")
    vmm = Vmm()
    try:
        rsp = Rsp(vmm.address)
        rsp.ask("?")
        rsp.close()
        time.sleep(0.2)
        before = (vmm.fds(), vmm.status("VmRSS"), vmm.status("Threads"))
        for i in range(500):
            rsp = Rsp(vmm.address)
            check(rsp.ask("?").startswith("T"), "connection %d: no stop reply" % i)
            if i % 2:
                rsp.send("vCont;c")
            rsp.close()
        rsp = Rsp(vmm.address)
        rsp.ask("?")
        rsp.close()
        time.sleep(0.2)
        after = (vmm.fds(), vmm.status("VmRSS"), vmm.status("Threads"))
        print("  fds, RSS (KiB), threads: before %s, after 500 connections %s" % (before, after))
        check(after[0] == before[0], "fds %d -> %d" % (before[0], after[0]))
        check(after[2] == before[2], "threads %d -> %d" % (before[2], after[2]))
        check(after[1] - before[1] < 4096, "RSS grew %d KiB" % (after[1] - before[1]))
        finish_cleanly(vmm)
    finally:
        vmm.kill()


def random_packet(rng, vmm):
    """A packet a confused or hostile client might send. Left out: what
    rightly changes the guest's result (`k`, writes to its memory or
    registers); writes go to a scratch word or outside RAM."""
    while True:
        packet = any_packet(rng, vmm)
        if not packet.startswith("k") and "vKill" not in packet:
            return packet


def any_packet(rng, vmm):
    addr = rng.choice([0, vmm.code_at, vmm["quit"], 0xffffffffffffffff, rng.getrandbits(64), 0xa0000])
    scratch = rng.choice([vmm["variable"] + 0x800, 0xffffffffffffff00, 0xa0000, 1 << 40])
    length = rng.choice([0, 1, 8, 4096, 0x10000, 0xffffffff, rng.getrandbits(32)])
    register_bytes = 0x218 + 12 * 8 + 8  # core and SSE, ours, orig_rax
    commands = [
        "m%x,%x" % (addr, length % 0x20000),
        "M%x,%x:%s" % (scratch, length % 64, os.urandom(rng.randrange(0, 8)).hex()),
        "X%x,%x:" % (scratch, length % 64),
        "g",
        "G" + os.urandom(rng.choice([0, 1, 100, register_bytes - 1, register_bytes + 1, 700])).hex(),
        "p%x" % rng.randrange(0, 200),
        "P%x=%s" % (rng.randrange(100, 400), os.urandom(8).hex()),
        "Hg%x" % rng.randrange(-1, 10),
        "Hc%x" % rng.randrange(-1, 10),
        "T%x" % rng.randrange(0, 1 << 40),
        "Z%d,%x,%x" % (rng.randrange(0, 6), addr, rng.choice([1, 2, 4, 8, 3, 0x100000])),
        "z%d,%x,%x" % (rng.randrange(0, 6), addr, rng.choice([1, 2, 4, 8, 3])),
        "qRcmd," + rng.choice([b"help", b"regs 7", b"dump", b"phys", b"virt", b"breakpoints", b"\xff\xfe"]).hex(),
        "qXfer:features:read:target.xml:%x,%x" % (rng.randrange(0, 0x4000), rng.choice([0, 1, 0x1000, 0xffffff])),
        "qSupported:" + ";".join(rng.choice(["multiprocess+", "swbreak+", "xmlRegisters=i386", "junk"]) for _ in range(3)),
        "qfThreadInfo",
        "qsThreadInfo",
        "?",
        "vCont;s:%x" % rng.randrange(0, 4),
        "vCont?",
        "QStartNoAckMode",
        rng.choice(["", "$", "#", "}", "*"]) * rng.randrange(1, 50),
        "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randrange(1, 200))),
    ]
    return rng.choice(commands)


def test_random_and_malformed_packets_leave_the_vmm_and_its_guest_intact():
    vmm = Vmm()
    rng = random.Random(20261201)
    try:
        sent = 0
        sessions = 0
        while sent < 3000:
            rsp = Rsp(vmm.address, timeout=2)
            sessions += 1
            try:
                for _ in range(rng.randrange(1, 60)):
                    roll = rng.random()
                    if roll < 0.1:
                        rsp.send_raw(os.urandom(rng.randrange(1, 64)))
                    elif roll < 0.15:
                        data = random_packet(rng, vmm).encode("latin-1")
                        rsp.send_raw(b"$" + data + b"#00")  # bad checksum
                    else:
                        rsp.send(random_packet(rng, vmm))
                    sent += 1
                    # Take what the stub says, without waiting for it.
                    rsp.sock.settimeout(0.01)
                    try:
                        while rsp.sock.recv(1 << 16):
                            pass
                    except socket.timeout:
                        pass
                    rsp.sock.settimeout(2)
            except (ConnectionError, OSError):
                pass
            rsp.close()
            check(vmm.alive(), "VMM died after %d packets" % sent)
        print("  %d random packets over %d sessions" % (sent, sessions))
        # A real gdb session still works.
        gdb = subprocess.run(
            ["gdb", "-batch", "-nx", "-ex", "target remote " + vmm.address, "-ex", "info registers rip",
             "-ex", "x/4xb %#x" % vmm.code_at, "-ex", "detach"],
            capture_output=True, text=True, timeout=120,
        )
        check(gdb.returncode == 0 and "rip" in gdb.stdout, "gdb after the noise:\n%s\n%s" % (gdb.stdout, gdb.stderr))
        shown = [line.split(":", 1)[1].split() for line in gdb.stdout.splitlines() if line.startswith("0x%x:" % vmm.code_at)]
        check(shown and [int(b, 16) for b in shown[0]] == list(vmm.code[:4]), "gdb saw other code bytes:\n" + gdb.stdout)
        rsp = Rsp(vmm.address)
        rsp.ask("?")
        check(read_code(rsp, vmm) == vmm.code, "code changed by the noise")
        rsp.close()
        finish_cleanly(vmm)
    finally:
        vmm.kill()


def test_libkvm_gdb_refuses_other_hosts_without_the_opt_in():
    needs_local_vmm("environment (the stand-in rewrites LIBKVM_GDB)")
    port = next_port[0]
    next_port[0] += 1
    vmm = Vmm("env", env_address="0.0.0.0:%d" % port, expect_ready=False)
    try:
        status, out, err = vmm.finish()
        check(status != 0, "the VMM ran with a remote listen address and no opt-in")
        check("LIBKVM_GDB" in err and "LIBKVM_GDB_ALLOW_REMOTE=1" in err, "message:\n" + err)
    finally:
        vmm.kill()
    vmm = Vmm("env", env_address="0.0.0.0:%d" % port, extra_env={"LIBKVM_GDB_ALLOW_REMOTE": "1"})
    try:
        vmm.address = "127.0.0.1:%d" % port
        out, err = finish_cleanly(vmm)
        check("warning" in err and "0.0.0.0:%d" % port in err, "no warning naming the address:\n" + err)
    finally:
        vmm.kill()


def test_a_bad_libkvm_gdb_value_is_named_in_the_error():
    needs_local_vmm("environment (the stand-in rewrites LIBKVM_GDB)")
    vmm = Vmm("env", env_address="not-an-address", expect_ready=False)
    try:
        status, out, err = vmm.finish()
        check(status != 0, "the VMM ran with a bad LIBKVM_GDB")
        check("LIBKVM_GDB" in err and "not-an-address" in err, "message:\n" + err)
    finally:
        vmm.kill()


def test_a_unix_socket_is_private_and_never_replaces_a_file():
    needs_local_vmm("unix sockets")
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "gdb.sock")
        old_umask = os.umask(0)
        try:
            vmm = Vmm("env", env_address="unix:" + path)
        finally:
            os.umask(old_umask)
        try:
            mode = os.stat(path).st_mode
            check(stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600, "socket mode %o" % mode)
            client = socket.socket(socket.AF_UNIX)
            client.connect(path)
            client.close()
        finally:
            vmm.kill()
        regular = os.path.join(scratch, "notes.txt")
        with open(regular, "w") as f:
            f.write("keep me")
        vmm = Vmm("env", env_address="unix:" + regular, expect_ready=False)
        try:
            status, out, err = vmm.finish()
            check(status != 0, "the VMM listened over a regular file")
            with open(regular) as f:
                check(f.read() == "keep me", "the file was replaced")
            check("LIBKVM_GDB" in err, "message:\n" + err)
        finally:
            vmm.kill()


def main():
    only = os.environ.get("GDB_TEST_FILTER", "")
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and only in n]
    passed = failed = skipped = 0
    for name, test in tests:
        try:
            test()
            print("ok   " + name)
            passed += 1
        except Skip as s:
            print("  skipped: %s\nskip %s" % (s, name))
            skipped += 1
        except Exception:
            print("FAIL " + name)
            traceback.print_exc(file=sys.stdout)
            failed += 1
        sys.stdout.flush()
    if skipped:
        print("(%d skipped)" % skipped)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

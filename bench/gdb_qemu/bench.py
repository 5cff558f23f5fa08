# gdb against QEMU+KVM's gdbstub and against a libkvm VMM, on the same
# guest with the same gdb commands, run inside the real gdb:
#
#   BENCH_GUEST=guest.elf BENCH_LIBKVM_VMM=libkvm_vmm \
#       gdb -batch -nx -x bench/gdb_qemu/bench.py
#
# Optional: BENCH_QEMU (default qemu-system-x86_64), BENCH_ROUNDS (rounds
# per side, default 9), BENCH_STEPS and BENCH_HITS (stops per round,
# default 200 and 100), BENCH_VERBOSE=1 (every round's rate).
#
# For each figure the sides take turns, qemu, libkvm, qemu, ..., and the
# figure prints one line in BENCHMARKS.md's form, libkvm's median first:
#
#   bench <name> <value> per_s ratio=<libkvm/qemu> spread=<min>..<max> qemu=<median> qemu_spread=<min>..<max>
#
# or `ratio=n/a ... qemu=n/a (why)` where QEMU cannot do it on this host
# (found out at run time, under a time limit), then a `packets` line: what
# gdb sends each side for one step or one hit.
#
# One gdb inferior, connected to one side at a time: a round connects
# (`target remote`), measures and detaches, and the side not measured is
# held with SIGSTOP meanwhile, so that its guest takes no CPU from the one
# measured. (Two inferiors would keep both connected, but gdb then asks the
# idle one for its threads at every stop of the other.)

import collections
import ctypes
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import traceback

import gdb

GUEST = os.environ["BENCH_GUEST"]
LIBKVM_VMM = os.environ["BENCH_LIBKVM_VMM"]
QEMU = os.environ.get("BENCH_QEMU", "qemu-system-x86_64")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "9"))
# Steps stay inside the guest's straight stretch of 2,000 instructions.
STEPS = min(int(os.environ.get("BENCH_STEPS", "200")), 1999)
HITS = int(os.environ.get("BENCH_HITS", "100"))
VERBOSE = os.environ.get("BENCH_VERBOSE") == "1"
# How long the guest runs free in a round of the guest-loop figure.
LOOP_SECONDS = 0.5

# Time limits, in seconds. QEMU boots through SeaBIOS, which this host's
# instruction emulator runs in about 4 s.
BOOT_LIMIT = 60
CONNECT_LIMIT = 10
STOP_LIMIT = 10
ROUND_LIMIT = 30

# Results go to gdb's standard output, kept aside here; what gdb itself
# prints there (each stop's location, a watchpoint's old and new values)
# goes to /dev/null: gdb still does all the work of printing it, as for a
# user, without flooding the benchmark's output.
OUT = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)


def report(line):
    OUT.write(line + "\n")


def run(command):
    return gdb.execute(command, to_string=True)


def value(expression):
    return int(gdb.parse_and_eval(expression)) & 0xFFFFFFFFFFFFFFFF


def symbol(name):
    # The guest has no debug info, and its 32-bit symbols do not cast to
    # the x86-64 pointers of the stubs' architecture: take the number.
    return value("(long)&%s" % name)


def counter():
    return value("{int}&bench_counter")


def describe(address):
    text = run("info symbol %#x" % address).strip()
    return "%#x" % address if text.startswith("No symbol") else text.split(" in section")[0].replace(" + ", "+")


stops = []
gdb.events.stop.connect(stops.append)


class SideFailed(Exception):
    """A side cannot do what a figure measures. The message is a phrase
    that follows "its breakpoints", "its single steps" and the like."""


class Unusable(Exception):
    """QEMU cannot run a KVM guest here: the benchmark is skipped."""


class Deadline:
    """Interrupts gdb the way Ctrl-C does when the commands inside take
    longer than `seconds`: the first SIGINT makes gdb ask the stub to stop
    the guest; the next ones, a second apart, make a gdb waiting on a stub
    that does not answer give up the connection."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.fired = False
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        # Blocked here, the signal goes to gdb's main thread.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        if self.done.wait(self.seconds):
            return
        self.fired = True
        while not self.done.is_set():
            os.kill(os.getpid(), signal.SIGINT)
            self.done.wait(1)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        return False


def die_with_gdb():
    """In the child before exec: SIGKILL when gdb goes, however it goes
    (the Makefile's `timeout` kills gdb with SIGKILL)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Side:
    """One target running the guest, QEMU or the libkvm VMM: started once
    (again after a figure it failed), connected for a round, held stopped
    between rounds."""

    def __init__(self, name):
        self.name = name
        self.process = None
        self.connected = False
        self.broken = None  # why it could not start: no later figure tries
        self.log = tempfile.NamedTemporaryFile(prefix="bench-gdb-qemu-%s-" % name, suffix=".log")

    def command(self, port):
        raise NotImplementedError

    def start(self):
        """Starts the process and runs the guest to the top of its loop
        once: QEMU starts at the reset vector, the libkvm VMM at the ELF
        entry."""
        self.port = free_port()
        args, env = self.command(self.port)
        self.log.seek(0)
        self.log.truncate()
        self.process = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                        stderr=self.log, preexec_fn=die_with_gdb)
        try:
            self.connect()
            run("hbreak *bench_loop")
            self.expect_stop("continue", BOOT_LIMIT, "bench_loop")
            run("delete")
            self.release()
        except SideFailed as e:
            self.broken = "cannot be measured: %s did not boot the guest (it would %s)" % (self.name, e)
            self.kill()
            raise SideFailed(self.broken)

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def connect(self):
        if self.broken:
            raise SideFailed(self.broken)
        if not self.alive():
            self.start()
        self.process.send_signal(signal.SIGCONT)
        # Until the stub listens; a stub that takes the connection but does
        # not answer is interrupted like a command.
        with Deadline(CONNECT_LIMIT) as deadline:
            while not (self.connected or deadline.fired or not self.alive()):
                try:
                    run("target remote 127.0.0.1:%d" % self.port)
                    self.connected = True
                except (gdb.error, KeyboardInterrupt) as e:
                    error = e
                    time.sleep(0.1)
        if not self.connected:
            if not self.alive():
                raise SideFailed("exit with %s%s" % (self.process.returncode, self.said()))
            self.kill()
            raise SideFailed("take no gdb connection within %d s (%s)" % (CONNECT_LIMIT, error))

    def detach(self):
        """gdb's breakpoints come out and the guest runs on."""
        self.connected = False
        with Deadline(STOP_LIMIT):
            run("detach")

    def release(self):
        """Detaches and holds the process until its next round."""
        if self.connected:
            try:
                self.detach()
            except (gdb.error, KeyboardInterrupt):
                self.kill()  # a stub that does not answer
        if self.alive():
            self.process.send_signal(signal.SIGSTOP)

    def kill(self):
        if self.connected:
            self.connected = False
            try:
                with Deadline(STOP_LIMIT):
                    run("kill")
            except (gdb.error, KeyboardInterrupt):
                pass
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # also when stopped
        if self.process is not None:
            self.process.wait()

    def output(self):
        self.log.flush()
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def said(self):
        """What the process said that is worth quoting, as a clause: its
        first error line (such as QEMU's KVM error), if any."""
        for line in self.output().splitlines():
            if re.search(r"KVM internal error|failed|error|could not|cannot", line, re.I):
                return ', %s said "%s"' % (self.name, line.strip())
        return ""

    def lost(self, e, deadline, what):
        """The SideFailed for gdb losing the connection during `what`
        (under `deadline`, if not None)."""
        self.connected = False
        self.kill()
        if deadline is not None and deadline.fired:
            return SideFailed("do not stop within %d s of %s (gdb gave up: %s)%s"
                              % (deadline.seconds, what, e, self.said()))
        return SideFailed("lose gdb's connection in %s (%s)%s" % (what, e, self.said()))

    def expect_stop(self, command, limit, where, counting=False, guard=None):
        """Runs `command` (stepi, continue) and checks that gdb stopped at
        `where` (a symbol or an address), else raises SideFailed saying
        what happened. `guard` is (address, phrase): a stop there means
        that. With `counting`, returns the packets gdb sent."""
        expected = where if isinstance(where, int) else symbol(where)
        del stops[:]
        try:
            with Deadline(limit) as deadline:
                if counting:
                    run("set debug remote 1")
                try:
                    out = run(command)
                finally:
                    if counting:
                        run("set debug remote 0")
        except (gdb.error, KeyboardInterrupt) as e:
            raise self.lost(e, deadline, "`%s`" % command)
        if deadline.fired:
            raise SideFailed("do not stop within %d s of `%s`" % (limit, command))
        pc = value("$pc")
        event = stops[-1] if stops else None
        if isinstance(event, gdb.SignalEvent):
            # QEMU's stub reports a VM that KVM failed to run as SIGABRT.
            raise SideFailed("end the VM on this host: gdb got %s at %s%s"
                             % (event.stop_signal, describe(pc), self.said()))
        if guard and pc == guard[0]:
            raise SideFailed(guard[1])
        if pc != expected:
            raise SideFailed("stop at %s instead of %s" % (describe(pc), describe(expected)))
        return packet_counts(out) if counting else None


class Qemu(Side):
    def command(self, port):
        args = [QEMU, "-enable-kvm", "-cpu", "qemu64", "-m", "64", "-kernel", GUEST, "-nodefaults",
                "-display", "none", "-serial", "none", "-monitor", "none", "-no-reboot", "-S",
                "-gdb", "tcp:127.0.0.1:%d" % port]
        return args, dict(os.environ)

    def start(self):
        try:
            Side.start(self)
        except SideFailed:
            # A QEMU that cannot open /dev/kvm or create a VM ends at once, saying so.
            said = self.output()
            if re.search(r"kvm", said, re.I) and not re.search(r"KVM internal error", said):
                raise Unusable("skipped: %s cannot use KVM here%s" % (QEMU, self.said()))
            raise


class Libkvm(Side):
    def command(self, port):
        env = dict(os.environ)
        env["LIBKVM_GDB"] = "127.0.0.1:%d" % port  # kvm_create starts the stub
        return [LIBKVM_VMM, GUEST], env


# Packets, named as the remote protocol names them: the letters of a
# v/q/Q packet (vCont, qfThreadInfo), Z and z with their type, H with its
# operation, else the first letter (m, g, c...).
PACKET_ORDER = ["vCont", "c", "s", "g", "p", "G", "P", "m", "M", "X", "Z0", "z0", "Z1", "z1", "Z2", "z2",
                "qfThreadInfo", "qsThreadInfo", "T", "Hg", "Hc"]


def packet_kind(packet):
    if packet[0] in "vqQ":
        return re.match(r"[A-Za-z]+", packet).group(0)
    if packet[0] in "ZzH":
        return packet[:2]
    return packet[0]


def packet_counts(debug_output):
    """The packets in `set debug remote 1` output: one line each,
    "[remote] Sending packet: $m100fc4,1#58"."""
    return collections.Counter(packet_kind(m.group(1))
                               for m in re.finditer(r"Sending packet: \$([^#]*)#", debug_output))


def format_packets(name, counts):
    """`packets NAME qemu: vCont=1 g=1 ... libkvm: ...`, the same kinds on
    both sides (0 where one side sent none)."""
    kinds = set()
    for c in counts.values():
        kinds.update(c or ())
    ordered = [k for k in PACKET_ORDER if k in kinds] + sorted(kinds - set(PACKET_ORDER))
    parts = ["packets", name]
    for side, c in counts.items():
        if c is None:
            parts.append("%s: n/a" % side)
        else:
            parts.append("%s: %s total=%d" % (side, " ".join("%s=%d" % (k, c[k]) for k in ordered), sum(c.values())))
    return " ".join(parts)


class Figure:
    """A rate measured in rounds on each side in turn. `noun` starts the
    phrase that says why a side cannot do it ("its watchpoints ...")."""

    counts_packets = False

    def __init__(self, name, noun):
        self.name, self.noun = name, noun

    def probe(self, side):
        """Checks that `side` can do it; returns the packets of one stop
        where the figure counts them."""
        return None

    def round(self, side):
        raise NotImplementedError


class Stops(Figure):
    """Stops per second: `setup` (gdb commands that put breakpoints in),
    an untimed first stop, then rounds of `count` timed `command`s, each
    stopping at `where` (None for steps: the next instruction). `check`
    reads a counter that goes up by one a stop; `guard` is a symbol that
    the first stop reaches only if this figure's stops never come."""

    counts_packets = True

    def __init__(self, name, noun, setup, command, count, where=None, check=None, guard=None):
        Figure.__init__(self, name, noun)
        self.setup, self.command, self.count, self.where = setup, command, count, where
        self.check, self.guard = check, guard

    def stop_addresses(self):
        """Where each stop of a round must be."""
        if self.command != "stepi":
            return [symbol(self.where)] * self.count
        # The stretch repeats add $3 (3 bytes), xor, sub (2 each), inc (1).
        sizes, pc, out = [3, 2, 2, 1], symbol("bench_loop"), []
        for i in range(self.count):
            pc += sizes[i % 4]
            out.append(pc)
        return out

    def begin(self, side, probing=False):
        """Connects, sets up and makes the untimed first stop, so that each
        timed stop starts where a timed stop ended; when probing, with the
        guard breakpoint in for that stop."""
        side.connect()
        for command in self.setup:
            run(command)
        if self.command == "stepi":
            run("hbreak *bench_loop")  # steps start at the top of the stretch
            side.expect_stop("continue", STOP_LIMIT, "bench_loop")
            gdb.breakpoints()[-1].delete()
        elif probing and self.guard:
            run("hbreak *" + self.guard)
            phrase = "never fire on this host: the guard breakpoint past the store stopped the guest"
            side.expect_stop(self.command, STOP_LIMIT, self.where, guard=(symbol(self.guard), phrase))
            gdb.breakpoints()[-1].delete()
        else:
            side.expect_stop(self.command, STOP_LIMIT, self.where)

    def end(self, side):
        if side.connected:
            run("delete")
        side.release()

    def probe(self, side):
        """Whether `side` can do it at all, and the packets of one stop: the
        second, when gdb's caches are as for the stops of a round."""
        try:
            self.begin(side, probing=True)
            first, second = self.stop_addresses()[:2]
            side.expect_stop(self.command, STOP_LIMIT, first)
            return side.expect_stop(self.command, STOP_LIMIT, second, counting=True)
        finally:
            self.end(side)

    def round(self, side):
        """One round's stops per second."""
        deadline = Deadline(ROUND_LIMIT)
        try:
            self.begin(side)
            before = self.check() if self.check else 0
            with deadline:
                start = time.monotonic()
                for _ in range(self.count):
                    run(self.command)
                elapsed = time.monotonic() - start
            if deadline.fired:
                raise SideFailed("do not make %d stops within %d s" % (self.count, ROUND_LIMIT))
            # Once the clock has stopped: were all the stops this figure's?
            pc, last = value("$pc"), self.stop_addresses()[-1]
            if pc != last:
                raise SideFailed("end a round at %s instead of %s" % (describe(pc), describe(last)))
            if self.check and self.check() - before != self.count:
                raise SideFailed("make %d stops for %d counts" % (self.count, self.check() - before))
            return self.count / elapsed
        except (gdb.error, KeyboardInterrupt) as e:
            raise side.lost(e, deadline, "a round's %d `%s`" % (self.count, self.command))
        finally:
            self.end(side)


class GuestLoop(Figure):
    """The guest alone: turns of its loop per second with gdb detached,
    from bench_counter before and after. It is the ceiling of the hit
    rates (one hit a turn), and tells whether the guest itself runs at the
    same speed on both sides."""

    def round(self, side):
        try:
            side.connect()
            before = counter()
            side.detach()
            start = time.monotonic()
            time.sleep(LOOP_SECONDS)
            elapsed = time.monotonic() - start
            side.connect()  # the stub stops the guest
            return (counter() - before) / elapsed
        except (gdb.error, KeyboardInterrupt) as e:
            raise side.lost(e, None, "a round")
        finally:
            side.release()


class RoundTrip(Figure):
    """One packet there and back, the unit of every stop's cost: a 4-byte
    memory read sent as it is (`maintenance packet`), per second."""

    def __init__(self, name, noun, count):
        Figure.__init__(self, name, noun)
        self.count = count

    def read(self):
        reply = run("maintenance packet m%x,4" % symbol("bench_counter"))
        if not re.search(r'received: "[0-9a-f]{8}"', reply):
            raise SideFailed("answer a memory read with %r" % reply.strip())

    def probe(self, side):
        try:
            side.connect()
            self.read()
        finally:
            side.release()
        return None

    def round(self, side):
        deadline = Deadline(ROUND_LIMIT)
        try:
            side.connect()
            with deadline:
                start = time.monotonic()
                for _ in range(self.count):
                    self.read()
                elapsed = time.monotonic() - start
            if deadline.fired:
                raise SideFailed("do not answer %d reads within %d s" % (self.count, ROUND_LIMIT))
            return self.count / elapsed
        except (gdb.error, KeyboardInterrupt) as e:
            raise side.lost(e, deadline, "a round's %d reads" % self.count)
        finally:
            side.release()


def median_and_spread(rates):
    rates = sorted(rates)
    return rates[len(rates) // 2], rates[0], rates[-1]


def measure(figure, sides):
    """Probes each side, then alternates rounds; prints the figure's lines.
    A side that fails is killed: its next figure starts it again."""
    failures, packets, rates = {}, {}, {side.name: [] for side in sides}

    def failed(side, e):
        failures[side.name] = str(e) if isinstance(e, SideFailed) else "fail (%r)" % e
        side.kill()

    # KeyboardInterrupt: a deadline's SIGINT that came between two gdb
    # commands; gdb.error: one not foreseen. Either fails the side.
    for side in sides:
        try:
            packets[side.name] = figure.probe(side)
        except (SideFailed, KeyboardInterrupt, gdb.error) as e:
            failed(side, e)
            packets[side.name] = None
    for _ in range(ROUNDS):
        for side in sides:
            if side.name in failures:
                continue
            try:
                rates[side.name].append(figure.round(side))
            except (SideFailed, KeyboardInterrupt, gdb.error) as e:
                failed(side, e)
                continue
            if VERBOSE:
                report("round %s %s %.0f" % (figure.name, side.name, rates[side.name][-1]))
    qemu, libkvm = sides
    line = ["bench", figure.name]
    if libkvm.name in failures:
        line += ["n/a", "per_s", "ratio=n/a", "libkvm=n/a (%s %s)" % (figure.noun, failures[libkvm.name])]
    else:
        median, low, high = median_and_spread(rates[libkvm.name])
        ratio = "n/a" if qemu.name in failures else "%.2f" % (median / median_and_spread(rates[qemu.name])[0])
        line += ["%.0f" % median, "per_s", "ratio=" + ratio, "spread=%.0f..%.0f" % (low, high)]
    if qemu.name in failures:
        line.append("qemu=n/a (%s %s)" % (figure.noun, failures[qemu.name]))
    else:
        line.append("qemu=%.0f qemu_spread=%.0f..%.0f" % median_and_spread(rates[qemu.name]))
    report(" ".join(line))
    if figure.counts_packets:
        report(format_packets(figure.name, packets))


def main():
    for command in ["set confirm off", "set pagination off", "set height 0", "set width 0",
                    "set tcp auto-retry off", "file " + GUEST,
                    # Both stubs describe an x86-64 CPU; the ELF says i386.
                    "set architecture i386:x86-64"]:
        run(command)
    func = "bench_func"
    figures = [
        GuestLoop("gdb_qemu_guest_loop", "its guest"),
        RoundTrip("gdb_qemu_round_trip", "its packets", STEPS),
        Stops("gdb_qemu_stepi", "its single steps", [], "stepi", STEPS),
        Stops("gdb_qemu_hbreak", "its hardware breakpoints", ["hbreak *" + func], "continue", HITS, func),
        # A write watchpoint stops after the store.
        Stops("gdb_qemu_watch", "its watchpoints", ["watch {int}&bench_counter"], "continue", HITS,
              "bench_func_stored", check=counter, guard="bench_func_ret"),
        # Last: QEMU's software breakpoints may end its VM (a side that
        # failed is started again for a later figure, QEMU in 4 s).
        Stops("gdb_qemu_break", "its software breakpoints", ["break *" + func], "continue", HITS, func),
    ]
    sides = [Qemu("qemu"), Libkvm("libkvm")]
    started = time.monotonic()
    try:
        for side in sides:
            try:
                side.start()
            except SideFailed:
                pass  # its figures say why
        for figure in figures:
            measure(figure, sides)
    finally:
        for side in sides:
            side.kill()
    report("bench gdb_qemu_run_time %.0f s" % (time.monotonic() - started))


status = 0
try:
    main()
except Unusable as e:
    report(str(e))
except Exception:
    OUT.write(traceback.format_exc())
    status = 1
OUT.flush()
gdb.execute("quit %d" % status)

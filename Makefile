# libkvm: the 2008 libkvm C API, in Rust. See README.md.
#
#   make              release library (libkvm.a, libkvm.so) and include/libkvm.h
#   make test         cargo tests and every C test
#   make c-tests      the C tests only
#   make demo         build and run examples/hello.c
#   make debug-demo   the same VMM waiting for gdb on 127.0.0.1:1234
#   make test-svm     every C and gdb test again on a second host: kvm_amd in a
#                     QEMU TCG guest (svm/, docs/hosts.md)
#   make bench        benchmarks against raw KVM ioctls (BENCHMARKS.md)
#   make bench-gdb-qemu  gdb on QEMU+KVM against gdb on libkvm, same guest
#                     (optional: needs qemu-system-x86_64)
#   make install      PREFIX=/usr/local: library, header, libkvm.pc
#   make clean

CARGO ?= cargo
CC ?= gcc
CXX ?= g++
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

RELEASE := target/release
STATIC_LIB := $(RELEASE)/libkvm.a
SHARED_LIB := $(RELEASE)/libkvm.so
HEADER := include/libkvm.h
# What a C program needs besides libkvm.a (Rust's std runtime).
LDLIBS := -lpthread -ldl -lm

WARNINGS := -Wall -Wextra -Werror
C_STRICT := -std=c99 $(WARNINGS) -pedantic
TEST_CFLAGS := $(C_STRICT) -g -O1 -D_GNU_SOURCE -Iinclude -Ic-tests -Ic-tests/guests
BUILD := c-tests/build
EXAMPLES_BUILD := examples/build

C_TEST_SOURCES := $(wildcard c-tests/test_*.c)
C_TESTS := $(patsubst c-tests/%.c,$(BUILD)/%,$(C_TEST_SOURCES))
HEADER_TESTS := $(BUILD)/header_c99 $(BUILD)/header_newer_kernel $(BUILD)/header_cxx
GUEST_OBJS := $(patsubst c-tests/guests/%.S,$(BUILD)/guests/%.o,$(wildcard c-tests/guests/*.S))
TEST_SUPPORT := $(BUILD)/guest.o $(BUILD)/guests.a

.PHONY: all header lib hooks-lib test test-svm cargo-test c-tests check-leaks check-install demo debug-demo bench bench-instructions bench-gdb-qemu install clean FORCE

all: header

# Builds the release library and refreshes the committed header.
header:
	LIBKVM_WRITE_HEADER=1 $(CARGO) build --release --lib

# Builds the release library; the header is only compared (by cargo test).
lib:
	$(CARGO) build --release --lib

# A recipe (even an empty one) makes make look at the files' times again
# after cargo ran, so programs linked against them are relinked.
$(STATIC_LIB) $(SHARED_LIB): lib
	@:

test: cargo-test c-tests check-leaks check-install

# The C tests (statically linked) and the gdb tests on the SVM test host:
# Debian's kvm_amd inside QEMU 7.2 TCG with our SVM fixes (svm/README.md).
test-svm: lib
	svm/test-svm.sh $(CURDIR)

cargo-test:
	$(CARGO) test --release --features test-hooks

c-tests: lib $(C_TESTS) $(HEADER_TESTS) $(BUILD)/gdb_vmm
	c-tests/run.sh $(HEADER_TESTS) $(C_TESTS) c-tests/gdb/run.sh c-tests/gdb/run_rsp.sh

# Every C test program under valgrind: no byte definitely lost, no invalid
# access (c-tests/valgrind.supp lists valgrind's false positives on KVM).
VALGRIND := valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1 \
    --suppressions=c-tests/valgrind.supp
check-leaks: lib $(C_TESTS)
	LAUNCHER="$(VALGRIND)" c-tests/run.sh $(C_TESTS)

# The VMM that c-tests/gdb/test_gdb.py debugs with the real gdb.
$(BUILD)/gdb_vmm: c-tests/gdb/gdb_vmm.c $(TEST_SUPPORT) $(HEADER) $(STATIC_LIB) | $(BUILD)
	$(CC) $(TEST_CFLAGS) -o $@ $< $(TEST_SUPPORT) $(STATIC_LIB) $(LDLIBS)

$(BUILD) $(BUILD)/guests $(EXAMPLES_BUILD):
	mkdir -p $@

$(BUILD)/guests/%.o: c-tests/guests/%.S $(wildcard c-tests/guests/*.inc c-tests/guests/*.h) | $(BUILD)/guests
	$(CC) -c -Ic-tests/guests -o $@ $<

$(BUILD)/guests.a: $(GUEST_OBJS)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/guest.o: c-tests/guest.c c-tests/guest.h $(HEADER) | $(BUILD)
	$(CC) $(TEST_CFLAGS) -c -o $@ $<

$(BUILD)/test_%: c-tests/test_%.c c-tests/check.h $(TEST_SUPPORT) $(HEADER) $(STATIC_LIB) | $(BUILD)
	$(CC) $(TEST_CFLAGS) -o $@ $< $(TEST_SUPPORT) $(STATIC_LIB) $(LDLIBS)

# The library's test build (feature test-hooks, in its own target
# directory), for the C tests that put another thread's call at a point of
# the library's own (libkvm_test_call_at): test_races.
HOOKS_LIB := target/hooks/release/libkvm.a
hooks-lib:
	$(CARGO) build --release --lib --features test-hooks --target-dir target/hooks

$(HOOKS_LIB): hooks-lib
	@:

$(BUILD)/test_races: c-tests/test_races.c c-tests/check.h $(TEST_SUPPORT) $(HEADER) $(HOOKS_LIB) | $(BUILD)
	$(CC) $(TEST_CFLAGS) -DLIBKVM_TEST_HOOKS -o $@ $< $(TEST_SUPPORT) $(HOOKS_LIB) $(LDLIBS)

# test_core's guest: a freestanding C kernel with symbols, in the higher
# half, carried inside the test program.
KERNEL_CFLAGS := -ffreestanding -nostdlib -fno-pic -fno-pie -mcmodel=kernel -mno-red-zone -mgeneral-regs-only \
    -fno-stack-protector -fno-omit-frame-pointer -g -O1 -static -no-pie
$(BUILD)/core_kernel.elf: c-tests/core/kernel.c c-tests/core/entry.S c-tests/core/kernel.ld | $(BUILD)
	$(CC) $(KERNEL_CFLAGS) -Wl,-T,c-tests/core/kernel.ld -Wl,--build-id=none -Wl,-z,noexecstack -o $@ \
	    c-tests/core/entry.S c-tests/core/kernel.c

$(BUILD)/core_kernel_blob.o: c-tests/core/blob.S $(BUILD)/core_kernel.elf
	$(CC) -c -DKERNEL_ELF='"$(BUILD)/core_kernel.elf"' -o $@ $<

$(BUILD)/test_core: c-tests/test_core.c c-tests/check.h $(TEST_SUPPORT) $(BUILD)/core_kernel_blob.o $(HEADER) $(STATIC_LIB)
	$(CC) $(TEST_CFLAGS) -o $@ $< $(TEST_SUPPORT) $(BUILD)/core_kernel_blob.o $(STATIC_LIB) $(LDLIBS)

# The header must compile as strict C99, as C++11, and against kernel
# headers new enough to have dropped struct kvm_debug_guest (made here
# from the system's linux/kvm.h by deleting those definitions).
$(BUILD)/header_c99: c-tests/header/header_check.c $(HEADER) $(STATIC_LIB) | $(BUILD)
	$(CC) $(C_STRICT) -Iinclude -Ic-tests -o $@ $< $(STATIC_LIB) $(LDLIBS)

$(BUILD)/newer-kernel/linux/kvm.h: /usr/include/linux/kvm.h
	mkdir -p $(dir $@)
	sed -e '/^struct kvm_breakpoint {/,/^};/d' -e '/^struct kvm_debug_guest {/,/^};/d' \
	    -e '/__KVM_DEPRECATED_VCPU_W_0x87/d' $< > $@

$(BUILD)/header_newer_kernel: c-tests/header/header_check.c $(HEADER) $(STATIC_LIB) $(BUILD)/newer-kernel/linux/kvm.h
	$(CC) $(C_STRICT) -DEXPECT_NEWER_KERNEL_HEADERS -isystem $(BUILD)/newer-kernel -Iinclude -Ic-tests -o $@ $< \
	    $(STATIC_LIB) $(LDLIBS)

$(BUILD)/header_cxx: c-tests/header/header_check.cpp c-tests/header/header_check.c $(HEADER) $(STATIC_LIB) | $(BUILD)
	$(CXX) -std=c++11 -Wall -Werror -Iinclude -Ic-tests -o $@ $< $(STATIC_LIB) $(LDLIBS)

$(EXAMPLES_BUILD)/hello: examples/hello.c examples/hello-bios.S $(HEADER) $(STATIC_LIB) | $(EXAMPLES_BUILD)
	$(CC) $(C_STRICT) -O2 -Iinclude -o $@ examples/hello.c examples/hello-bios.S $(STATIC_LIB) $(LDLIBS)

demo: lib $(EXAMPLES_BUILD)/hello
	$(EXAMPLES_BUILD)/hello

# Benchmarks: libkvm against raw KVM ioctls in the same process, rates of
# the debugging calls, the page walker, and gdb round trips (BENCHMARKS.md).
$(BUILD)/exit_bench: bench/exit_bench.c $(TEST_SUPPORT) $(HEADER) $(STATIC_LIB) | $(BUILD)
	$(CC) $(TEST_CFLAGS) -O2 -o $@ $< $(TEST_SUPPORT) $(STATIC_LIB) $(LDLIBS)

$(BUILD)/exit_instructions: bench/exit_instructions.c $(TEST_SUPPORT) $(HEADER) $(STATIC_LIB) | $(BUILD)
	$(CC) $(TEST_CFLAGS) -O2 -o $@ $< $(TEST_SUPPORT) $(STATIC_LIB) $(LDLIBS)

# User-space instructions per exit, counted by callgrind (exact, unlike
# times), and of them the locked ones (bench/locked_per_exit.py), which
# cost far more than their count.
bench-instructions: lib $(BUILD)/exit_instructions
	@for kind in pio mmio hlt step step_breakpoint breakpoint breakpoints64; do \
	    out=$(BUILD)/callgrind.$$kind; \
	    valgrind --tool=callgrind --toggle-collect=kvm_run --dump-instr=yes --compress-pos=no \
	        --callgrind-out-file=$$out $(BUILD)/exit_instructions $$kind > $$out.log 2>&1 || { cat $$out.log; exit 1; }; \
	    n=$$(awk '/Collected/ { print $$4 }' $$out.log); \
	    exits=$$(awk '/ after [0-9]+ exits/ { print $$(NF - 1) }' $$out.log); \
	    awk -v kind=$$kind -v n=$$n -v exits=$$exits \
	        'BEGIN { printf "bench %s_exit_instructions %.0f per_exit\n", kind, n / exits }'; \
	    echo "bench $${kind}_exit_locked_instructions $$(python3 bench/locked_per_exit.py $$out $(BUILD)/exit_instructions $$exits) per_exit"; \
	    rm -f $$out $$out.log; \
	done

bench: lib $(BUILD)/exit_bench $(BUILD)/gdb_vmm bench-instructions
	$(BUILD)/exit_bench
	$(CARGO) bench --bench pagewalk --quiet
	GDB_TEST_VMM=$(CURDIR)/$(BUILD)/gdb_vmm timeout 300 gdb -batch -nx -x bench/bench_gdb.py

# gdb against QEMU+KVM's gdbstub and against a libkvm VMM on one multiboot
# guest, with one gdb script, in alternating rounds (bench/gdb_qemu/bench.py,
# about 30 s). Optional: skipped, with a line saying so, without gdb,
# qemu-system-x86_64 (apt-get install qemu-system-x86) or a usable /dev/kvm.
# QEMU_SYSTEM names another QEMU binary.
QEMU_SYSTEM ?= qemu-system-x86_64
GDB_QEMU_BUILD := $(BUILD)/gdb_qemu

$(GDB_QEMU_BUILD):
	mkdir -p $@

# The guest keeps its symbols: gdb loads it on both sides (`file`).
$(GDB_QEMU_BUILD)/guest.elf: bench/gdb_qemu/guest.S bench/gdb_qemu/guest.ld | $(GDB_QEMU_BUILD)
	$(CC) -m32 -c -o $(GDB_QEMU_BUILD)/guest.o bench/gdb_qemu/guest.S
	$(LD) -m elf_i386 -T bench/gdb_qemu/guest.ld --build-id=none -o $@ $(GDB_QEMU_BUILD)/guest.o

$(GDB_QEMU_BUILD)/libkvm_vmm: bench/gdb_qemu/libkvm_vmm.c $(TEST_SUPPORT) $(HEADER) $(STATIC_LIB) | $(GDB_QEMU_BUILD)
	$(CC) $(TEST_CFLAGS) -O2 -o $@ $< $(TEST_SUPPORT) $(STATIC_LIB) $(LDLIBS)

# timeout: a wedged target must not hang make (the script's children die with gdb).
bench-gdb-qemu: lib $(GDB_QEMU_BUILD)/guest.elf $(GDB_QEMU_BUILD)/libkvm_vmm
	@if ! command -v $(QEMU_SYSTEM) >/dev/null 2>&1; then \
	    echo "skipped: $(QEMU_SYSTEM) is not installed (apt-get install qemu-system-x86)"; \
	elif ! command -v gdb >/dev/null 2>&1; then \
	    echo "skipped: gdb is not installed"; \
	elif [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then \
	    echo "skipped: /dev/kvm is missing or not readable and writable"; \
	else \
	    BENCH_QEMU=$(QEMU_SYSTEM) BENCH_GUEST=$(CURDIR)/$(GDB_QEMU_BUILD)/guest.elf \
	    BENCH_LIBKVM_VMM=$(CURDIR)/$(GDB_QEMU_BUILD)/libkvm_vmm \
	        timeout --signal=KILL 300 gdb -batch -nx -x bench/gdb_qemu/bench.py; \
	fi

# The demo VMM, unmodified, waiting for gdb (LIBKVM_GDB makes kvm_create start the stub).
GDB_LISTEN ?= 127.0.0.1:1234
debug-demo: lib $(EXAMPLES_BUILD)/hello
	@echo "The demo VMM waits for gdb. In another terminal, run:"
	@echo "    gdb -ex 'target remote $(GDB_LISTEN)' -ex 'break *0xf0005' -ex continue"
	LIBKVM_GDB=$(GDB_LISTEN) $(EXAMPLES_BUILD)/hello

libkvm.pc: FORCE
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCLUDEDIR)' '' \
	    'Name: libkvm' 'Description: The 2008 libkvm API for KVM VMMs, with guest debugging' \
	    'Version: $(VERSION)' 'Cflags: -I$${includedir}' 'Libs: -L$${libdir} -lkvm' \
	    'Libs.private: $(LDLIBS)' > $@

install: lib libkvm.pc
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)
	install -m 644 $(STATIC_LIB) $(DESTDIR)$(LIBDIR)/libkvm.a
	install -m 755 $(SHARED_LIB) $(DESTDIR)$(LIBDIR)/libkvm.so
	install -m 644 $(HEADER) $(DESTDIR)$(INCLUDEDIR)/libkvm.h
	install -m 644 libkvm.pc $(DESTDIR)$(LIBDIR)/pkgconfig/libkvm.pc

# Installs into a scratch prefix, then builds and runs the demo the way a
# user would: compiler flags from pkg-config, against the shared library.
check-install: lib
	rm -rf $(BUILD)/prefix
	$(MAKE) --no-print-directory install PREFIX=$(CURDIR)/$(BUILD)/prefix >/dev/null
	$(CC) $(C_STRICT) -o $(BUILD)/hello-installed examples/hello.c examples/hello-bios.S \
	    $$(PKG_CONFIG_PATH=$(BUILD)/prefix/lib/pkgconfig pkg-config --cflags --libs libkvm) \
	    -Wl,-rpath,$(CURDIR)/$(BUILD)/prefix/lib
	$(BUILD)/hello-installed | grep -q 'Hello from a real-mode guest'
	@echo "check-install: pkg-config build against the installed libkvm.so runs the demo"

clean:
	$(CARGO) clean
	rm -rf $(BUILD) c-tests/build-static $(EXAMPLES_BUILD) libkvm.pc

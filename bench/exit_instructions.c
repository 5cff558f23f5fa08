/*
 * Port exits, MMIO exits, halts, single steps or breakpoint hits, each through
 * kvm_run with a callback that only counts. Run under callgrind, which
 * counts what the library executes independently of the machine's load:
 *
 *   valgrind --tool=callgrind --toggle-collect=kvm_run c-tests/build/exit_instructions pio
 *
 * "Collected" divided by the count the program prints is the user-space
 * instructions per exit (`make bench-instructions` prints them all). A
 * breakpoint hit is the hit and its resume: the exit, the step over the
 * breakpoint that the library makes, and the callback. `breakpoints64` is
 * the same hit with 63 more software breakpoints inserted, each on a page
 * of its own, which every stop re-arms. `step_breakpoint` is the single
 * step with one software breakpoint inserted elsewhere (as under gdb with
 * a breakpoint set), which every step re-arms.
 */
#include <stdio.h>
#include <string.h>

#include "guest.h"

DECLARE_GUEST(pio_forever);
DECLARE_GUEST(mmio_forever);
DECLARE_GUEST(hlt_forever);
DECLARE_GUEST(nops_forever);
DECLARE_GUEST_LABEL(nops_forever, spot);

enum { RAM = 8 << 20 };

/* Exits to count before kvm_run ends (fewer for steps and hits). */
static long exits, wanted = 100000;

static int count_outb(void *opaque, uint16_t port, uint8_t value)
{
    (void)opaque, (void)port, (void)value;
    return ++exits >= wanted;
}

static int count_mmio_write(void *opaque, uint64_t addr, uint8_t *data, int len)
{
    (void)opaque, (void)addr, (void)data, (void)len;
    return ++exits >= wanted;
}

static int count_halt(void *opaque, int vcpu)
{
    (void)opaque, (void)vcpu;
    return ++exits >= wanted;
}

static int count_debug(void *opaque, int vcpu, int break_type, uint64_t watchpoint)
{
    (void)opaque, (void)vcpu, (void)break_type, (void)watchpoint;
    return ++exits >= wanted;
}

int main(int argc, char **argv)
{
    const char *kind = argc > 1 ? argv[1] : "pio";
    const int steps = strncmp(kind, "step", 4) == 0;
    struct kvm_callbacks cb;
    struct test_vm vm;
    int r;

    memset(&cb, 0, sizeof(cb));
    cb.outb = count_outb;
    cb.mmio_write = count_mmio_write;
    cb.halt = count_halt;
    cb.debug = count_debug;
    if (test_vm_create(&vm, &cb, NULL, RAM, 0) < 0)
        return 1;
    if (strcmp(kind, "mmio") == 0) {
        TEST_VM_LOAD_GUEST(&vm, mmio_forever);
    } else if (strcmp(kind, "hlt") == 0) {
        TEST_VM_LOAD_GUEST(&vm, hlt_forever);
    } else if (steps || strncmp(kind, "breakpoint", 10) == 0) {
        /* Each costs thousands of instructions: fewer do. */
        wanted = 10000;
        TEST_VM_LOAD_GUEST(&vm, nops_forever);
    } else {
        TEST_VM_LOAD_GUEST(&vm, pio_forever);
    }
    if (test_vcpu_long_mode(&vm, 0, GUEST_CODE) < 0)
        return 1;
    if (steps && kvm_set_singlestep(vm.kvm, 0, 1) < 0)
        return 1;
    if (strcmp(kind, "step_breakpoint") == 0 &&
        kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, GUEST_DATA + 0x10000, 1) < 0)
        return 1;
    if (strncmp(kind, "breakpoint", 10) == 0 &&
        kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, GUEST_LABEL_ADDR(nops_forever, spot), 1) < 0)
        return 1;
    if (strcmp(kind, "breakpoints64") == 0) {
        uint64_t page;
        for (page = 0; page < 63; page++)
            if (kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, GUEST_DATA + 0x10000 + page * 4096, 1) < 0)
                return 1;
    }
    r = kvm_run(vm.kvm, 0);
    test_vm_destroy(&vm);
    printf("%s: kvm_run returned %d after %ld exits\n", kind, r, exits);
    return r == 1 && exits == wanted ? 0 : 1;
}

/*
 * 100,000 port exits, then 100,000 MMIO exits, each through kvm_run with a
 * callback that only counts. Run under callgrind, which counts what the
 * library executes independently of the machine's load:
 *
 *   valgrind --tool=callgrind --toggle-collect=kvm_run c-tests/build/exit_instructions pio
 *
 * "Collected" divided by 100,000 is the user-space instructions per exit
 * (`make bench-instructions` prints both).
 */
#include <stdio.h>
#include <string.h>

#include "guest.h"

DECLARE_GUEST(pio_forever);
DECLARE_GUEST(mmio_forever);

enum { EXITS = 100000, RAM = 8 << 20 };

static long exits;

static int count_outb(void *opaque, uint16_t port, uint8_t value)
{
    (void)opaque, (void)port, (void)value;
    return ++exits >= EXITS;
}

static int count_mmio_write(void *opaque, uint64_t addr, uint8_t *data, int len)
{
    (void)opaque, (void)addr, (void)data, (void)len;
    return ++exits >= EXITS;
}

int main(int argc, char **argv)
{
    int mmio = argc > 1 && strcmp(argv[1], "mmio") == 0;
    struct kvm_callbacks cb;
    struct test_vm vm;
    int r;

    memset(&cb, 0, sizeof(cb));
    cb.outb = count_outb;
    cb.mmio_write = count_mmio_write;
    if (test_vm_create(&vm, &cb, NULL, RAM, 0) < 0)
        return 1;
    if (mmio)
        TEST_VM_LOAD_GUEST(&vm, mmio_forever);
    else
        TEST_VM_LOAD_GUEST(&vm, pio_forever);
    if (test_vcpu_long_mode(&vm, 0, GUEST_CODE) < 0)
        return 1;
    r = kvm_run(vm.kvm, 0);
    test_vm_destroy(&vm);
    printf("%s: kvm_run returned %d after %ld exits\n", mmio ? "mmio" : "pio", r, exits);
    return r == 1 && exits == EXITS ? 0 : 1;
}

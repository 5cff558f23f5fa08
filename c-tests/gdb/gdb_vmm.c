/*
 * The VMM the gdb tests debug: two vcpus in two threads running
 * guests/gdbguest.S until the guest's `quit` flag is set.
 *
 *   gdb_vmm env         relies on LIBKVM_GDB in the environment (no stub
 *                       call in this program: the "unmodified VMM" case)
 *   gdb_vmm api ADDR [MIB]
 *                       calls kvm_gdbstub_start(kvm, ADDR) itself and
 *                       lets the guest run at once; MIB sets the RAM size
 *                       (default 4 MiB)
 *
 * It prints the guest's label addresses, then "ready", then what happens;
 * at the end it checks that the guest code is exactly as loaded
 * ("code intact") and exits 0.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "guest.h"

DECLARE_GUEST(gdbguest);
#define LABELS(X)                                                                                  \
    X(main) X(regs_set) X(write_var) X(after_write) X(step_loop) X(step_add) X(step_xor) X(step_cmp) \
    X(step_jne) X(spin) X(second) X(second_func) X(variable) X(quit) X(read_var) X(after_read)
#define DECLARE(label) DECLARE_GUEST_LABEL(gdbguest, label);
LABELS(DECLARE)

struct vcpu_thread {
    kvm_context_t kvm;
    int vcpu, result;
};

static int guest_outb(void *opaque, uint16_t port, uint8_t value)
{
    (void)opaque;
    printf("guest says %c on port %#x\n", value, port);
    fflush(stdout);
    return 0;
}

static int guest_halted(void *opaque, int vcpu)
{
    (void)opaque;
    printf("vcpu %d halted\n", vcpu);
    fflush(stdout);
    return 1;
}

static int guest_shutdown(void *opaque, int vcpu)
{
    (void)opaque;
    printf("vcpu %d shut down\n", vcpu);
    fflush(stdout);
    return 2;
}

static void *run_vcpu(void *arg)
{
    struct vcpu_thread *t = arg;
    t->result = kvm_run(t->kvm, t->vcpu);
    return NULL;
}

int main(int argc, char **argv)
{
    struct vcpu_thread threads[2];
    struct kvm_callbacks cb;
    struct test_vm vm;
    pthread_t ids[2];
    unsigned long ram_mib = 4;
    int i, r, intact;

    if (argc < 2 || (strcmp(argv[1], "env") != 0 && (strcmp(argv[1], "api") != 0 || argc < 3))) {
        fprintf(stderr, "usage: %s env | api ADDRESS [RAM_MIB]\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "api") == 0 && argc > 3)
        ram_mib = strtoul(argv[3], NULL, 0);
    alarm(300);
    memset(&cb, 0, sizeof(cb));
    cb.outb = guest_outb;
    cb.halt = guest_halted;
    cb.shutdown = guest_shutdown;
    r = test_vm_create(&vm, &cb, NULL, ram_mib << 20, 0);
    if (r < 0) {
        fprintf(stderr, "kvm_create: %s\n", strerror(-r));
        return 1;
    }
    if (kvm_create_vcpu(vm.kvm, 1) < 0)
        return 1;
    TEST_VM_LOAD_GUEST(&vm, gdbguest);
    if (test_vcpu_long_mode(&vm, 0, GUEST_LABEL_ADDR(gdbguest, main)) < 0 ||
        test_vcpu_long_mode(&vm, 1, GUEST_LABEL_ADDR(gdbguest, second)) < 0)
        return 1;
#define PRINT(label) printf("label %s %#llx\n", #label, (unsigned long long)GUEST_LABEL_ADDR(gdbguest, label));
    LABELS(PRINT)
    printf("bytes write_var");
    for (i = 0; i < 16; i++)
        printf(" %02x", gdbguest_write_var[i]);
    printf("\n");
    /* The code as loaded, for clients that check it is restored. */
    printf("code %#x ", GUEST_CODE);
    for (i = 0; i < gdbguest_variable - gdbguest_start; i++)
        printf("%02x", gdbguest_start[i]);
    printf("\n");
    if (strcmp(argv[1], "api") == 0 && (r = kvm_gdbstub_start(vm.kvm, argv[2])) < 0) {
        fprintf(stderr, "kvm_gdbstub_start: %s\n", strerror(-r));
        return 1;
    }
    printf("ready\n");
    fflush(stdout);

    for (i = 0; i < 2; i++) {
        threads[i].kvm = vm.kvm;
        threads[i].vcpu = i;
        pthread_create(&ids[i], NULL, run_vcpu, &threads[i]);
    }
    for (i = 0; i < 2; i++)
        pthread_join(ids[i], NULL);
    /* Everything but the two data words must be as loaded. */
    intact = memcmp(vm.mem + GUEST_CODE, gdbguest_start, (size_t)(gdbguest_variable - gdbguest_start)) == 0;
    printf("kvm_run returned %d and %d\n", threads[0].result, threads[1].result);
    printf("code %s\n", intact ? "intact" : "modified");
    fflush(stdout);
    test_vm_destroy(&vm);
    return intact ? 0 : 1;
}

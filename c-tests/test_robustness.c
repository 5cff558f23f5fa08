/*
 * What a VMM survives: guests that fault in every way, a thousand contexts
 * created and finalized, and four vcpus running while another thread
 * changes breakpoints and reads registers.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "guest.h"

DECLARE_GUEST(triple_fault);
DECLARE_GUEST(undefined_instruction);
DECLARE_GUEST(mmio_forever_store);
DECLARE_GUEST(execute_mmio);
DECLARE_GUEST(out_forever);

enum { RAM = 4 << 20, VCPUS = 4, EXITS_PER_VCPU = 20000 };

struct fault_log {
    int shutdowns, halts;
    long mmio_writes;
};

static int log_shutdown(void *opaque, int vcpu)
{
    (void)vcpu;
    ((struct fault_log *)opaque)->shutdowns++;
    return 2;
}

static int log_halt(void *opaque, int vcpu)
{
    (void)vcpu;
    ((struct fault_log *)opaque)->halts++;
    return 1;
}

static int count_mmio_writes(void *opaque, uint64_t addr, uint8_t *data, int len)
{
    struct fault_log *log = opaque;
    (void)addr, (void)data, (void)len;
    return ++log->mmio_writes >= 100000;
}

static int run_faulting_guest(const uint8_t *start, const uint8_t *end, struct fault_log *log)
{
    struct kvm_callbacks cb;
    struct test_vm vm;
    int r;

    memset(&cb, 0, sizeof(cb));
    memset(log, 0, sizeof(*log));
    cb.shutdown = log_shutdown;
    cb.halt = log_halt;
    cb.mmio_write = count_mmio_writes;
    if (test_vm_create(&vm, &cb, log, RAM, 0) < 0)
        return -9999;
    test_vm_load(&vm, GUEST_CODE, start, end);
    if (test_vcpu_long_mode(&vm, 0, GUEST_CODE) < 0)
        return -9998;
    r = kvm_run(vm.kvm, 0);
    test_vm_destroy(&vm);
    return r;
}

static void triple_fault_ends_in_the_shutdown_callback(void)
{
    struct fault_log log;
    CHECK_EQ(run_faulting_guest(triple_fault_start, triple_fault_end, &log), 2);
    CHECK_EQ(log.shutdowns, 1);
}

/* #UD with no IDT escalates to a triple fault (or, on hosts whose emulator
 * gives up on it, to an error return): either way the VMM is in control. */
static void undefined_instruction_returns_control_to_the_vmm(void)
{
    struct fault_log log;
    int r = run_faulting_guest(undefined_instruction_start, undefined_instruction_end, &log);
    CHECK(r == 2 || r < 0);
    CHECK_EQ(log.halts, 0);
    if (r == 2)
        CHECK_EQ(log.shutdowns, 1);
}

static void endless_mmio_stores_reach_the_callback_until_it_stops_them(void)
{
    struct fault_log log;
    CHECK_EQ(run_faulting_guest(mmio_forever_store_start, mmio_forever_store_end, &log), 1);
    CHECK_EQ(log.mmio_writes, 100000);
}

static void executing_unbacked_memory_returns_an_error(void)
{
    struct fault_log log;
    int r = run_faulting_guest(execute_mmio_start, execute_mmio_end, &log);
    CHECK(r < 0 || r == 2);
    CHECK_EQ(log.halts, 0);
}

static void a_thousand_contexts_leave_fds_and_memory_flat(void)
{
    struct kvm_callbacks cb;
    long rss_after_100 = 0, rss_after_1000;
    int fds_before = test_count_fds(), i;

    memset(&cb, 0, sizeof(cb));
    for (i = 1; i <= 1000; i++) {
        kvm_context_t kvm = kvm_init(&cb, NULL);
        void *ram;
        REQUIRE(kvm != NULL);
        kvm_disable_irqchip_creation(kvm);
        REQUIRE(kvm_create(kvm, 2 << 20, &ram) == 0);
        kvm_finalize(kvm);
        if (i == 100)
            rss_after_100 = test_rss_kib();
    }
    rss_after_1000 = test_rss_kib();
    printf("  fds before %d, after 1000 contexts %d; RSS after 100 %ld KiB, after 1000 %ld KiB\n", fds_before,
           test_count_fds(), rss_after_100, rss_after_1000);
    CHECK_EQ(test_count_fds(), fds_before);
    /* valgrind keeps freed memory in quarantine (20 MB by default): RSS
     * means nothing there, and its leak check covers memory instead. */
    if (test_under_valgrind())
        printf("  under valgrind: RSS not compared\n");
    else
        CHECK(rss_after_1000 - rss_after_100 < 1024);
}

/* Four vcpus doing port exits while a fifth thread changes breakpoints (at
 * addresses the guest never executes) and reads registers. */
struct busy_vm {
    struct test_vm vm;
    long exits[VCPUS];
    long meddle_rounds;
    volatile int done;
};

static __thread int my_vcpu;

static int count_port_exit(void *opaque, uint16_t port, uint8_t value)
{
    struct busy_vm *b = opaque;
    (void)port;
    if (value != my_vcpu)
        return -1000; /* a vcpu ran another's code: stop with an error */
    return ++b->exits[my_vcpu] >= EXITS_PER_VCPU;
}

struct runner {
    struct busy_vm *b;
    int vcpu, result;
};

static void *run_vcpu(void *arg)
{
    struct runner *r = arg;
    my_vcpu = r->vcpu;
    r->result = kvm_run(r->b->vm.kvm, r->vcpu);
    return NULL;
}

static void *meddle(void *arg)
{
    struct busy_vm *b = arg;
    struct kvm_regs regs;
    long rounds = 0, errors = 0;

    while (!b->done) {
        uint64_t addr = 0x200000 + (uint64_t)(rounds % 1000) * 24;
        int v = (int)(rounds % VCPUS);
        errors += kvm_insert_breakpoint(b->vm.kvm, v, KVM_GDB_BREAKPOINT_SW, addr, 1) != 0;
        errors += kvm_get_regs(b->vm.kvm, v, &regs) != 0;
        errors += kvm_remove_breakpoint(b->vm.kvm, v, KVM_GDB_BREAKPOINT_SW, addr, 1) != 0;
        rounds++;
    }
    b->meddle_rounds = rounds;
    return (void *)errors;
}

static void four_busy_vcpus_and_a_meddling_thread(void)
{
    struct runner runners[VCPUS];
    pthread_t threads[VCPUS], meddler;
    static struct busy_vm b;
    struct kvm_callbacks cb;
    struct kvm_regs regs;
    uint64_t before;
    void *meddle_errors;
    int i, round;

    for (round = 0; round < 3; round++) {
        memset(&b, 0, sizeof(b));
        memset(&cb, 0, sizeof(cb));
        cb.outb = count_port_exit;
        REQUIRE(test_vm_create(&b.vm, &cb, &b, RAM, 0) == 0);
        TEST_VM_LOAD_GUEST(&b.vm, out_forever);
        for (i = 0; i < VCPUS; i++) {
            if (i > 0)
                REQUIRE(kvm_create_vcpu(b.vm.kvm, i) == 0);
            REQUIRE(test_vcpu_long_mode(&b.vm, i, GUEST_CODE) == 0);
            REQUIRE(kvm_get_regs(b.vm.kvm, i, &regs) == 0);
            regs.rbx = (uint64_t)i;
            REQUIRE(kvm_set_regs(b.vm.kvm, i, &regs) == 0);
        }
        /* From the code up: below it, the CPU sets accessed bits in the page tables. */
        before = test_checksum(b.vm.mem + GUEST_CODE, RAM - GUEST_CODE);
        pthread_create(&meddler, NULL, meddle, &b);
        for (i = 0; i < VCPUS; i++) {
            runners[i].b = &b;
            runners[i].vcpu = i;
            pthread_create(&threads[i], NULL, run_vcpu, &runners[i]);
        }
        for (i = 0; i < VCPUS; i++)
            pthread_join(threads[i], NULL);
        b.done = 1;
        pthread_join(meddler, &meddle_errors);
        for (i = 0; i < VCPUS; i++) {
            CHECK_EQ(runners[i].result, 1);
            CHECK_EQ(b.exits[i], EXITS_PER_VCPU);
        }
        CHECK_EQ((long)meddle_errors, 0);
        printf("  round %d: %d x %d exits while another thread did %ld insert/read/remove rounds\n", round + 1, VCPUS,
               EXITS_PER_VCPU, b.meddle_rounds);
        CHECK(test_checksum(b.vm.mem + GUEST_CODE, RAM - GUEST_CODE) == before);
        test_vm_destroy(&b.vm);
    }
}

int main(void)
{
    check_set_timeout(300);
    RUN(triple_fault_ends_in_the_shutdown_callback);
    RUN(undefined_instruction_returns_control_to_the_vmm);
    RUN(endless_mmio_stores_reach_the_callback_until_it_stops_them);
    RUN(executing_unbacked_memory_returns_an_error);
    RUN(a_thousand_contexts_leave_fds_and_memory_flat);
    RUN(four_busy_vcpus_and_a_meddling_thread);
    return check_summary();
}

/*
 * Several vcpus: two threads running two vcpus at the same time, each
 * callback told its own vcpu, one thread per vcpu enforced, and vcpu
 * indices checked against the host's limit.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "guest.h"

DECLARE_GUEST(two_vcpus);
DECLARE_GUEST_LABEL(two_vcpus, waiter);
DECLARE_GUEST_LABEL(two_vcpus, setter);

enum { RAM = 4 << 20 };

struct per_vcpu {
    int outs[2];
    uint16_t port[2];
    int halted[2];
};

struct vcpu_thread {
    kvm_context_t kvm;
    int vcpu;
    int result;
};

static __thread int thread_vcpu = -1;

static int note_out(void *opaque, uint16_t port, uint8_t value)
{
    struct per_vcpu *p = opaque;
    (void)value;
    p->outs[thread_vcpu]++;
    p->port[thread_vcpu] = port;
    return 0;
}

static int note_halt(void *opaque, int vcpu)
{
    struct per_vcpu *p = opaque;
    p->halted[vcpu] += vcpu == thread_vcpu ? 1 : 100; /* 100: told the wrong vcpu */
    return 1;
}

static void *run_vcpu(void *arg)
{
    struct vcpu_thread *t = arg;
    thread_vcpu = t->vcpu;
    t->result = kvm_run(t->kvm, t->vcpu);
    return NULL;
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&t, NULL);
}

static void two_vcpus_run_at_once_in_two_threads(void)
{
    struct vcpu_thread t0, t1;
    struct kvm_callbacks cb;
    struct per_vcpu seen;
    struct test_vm vm;
    pthread_t a, b;

    memset(&cb, 0, sizeof(cb));
    memset(&seen, 0, sizeof(seen));
    cb.outb = note_out;
    cb.halt = note_halt;
    REQUIRE(test_vm_create(&vm, &cb, &seen, RAM, 0) == 0);
    REQUIRE(kvm_create_vcpu(vm.kvm, 1) == 0);
    TEST_VM_LOAD_GUEST(&vm, two_vcpus);
    REQUIRE(test_vcpu_long_mode(&vm, 0, GUEST_LABEL_ADDR(two_vcpus, waiter)) == 0);
    REQUIRE(test_vcpu_long_mode(&vm, 1, GUEST_LABEL_ADDR(two_vcpus, setter)) == 0);
    t0.kvm = t1.kvm = vm.kvm;
    t0.vcpu = 0;
    t1.vcpu = 1;
    /* vcpu 0 spins until vcpu 1 runs: this only ends if both run at once. */
    pthread_create(&a, NULL, run_vcpu, &t0);
    sleep_ms(50);
    pthread_create(&b, NULL, run_vcpu, &t1);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    CHECK_EQ(t0.result, 1);
    CHECK_EQ(t1.result, 1);
    CHECK_EQ(seen.outs[0], 1);
    CHECK_EQ(seen.port[0], 0x10);
    CHECK_EQ(seen.outs[1], 1);
    CHECK_EQ(seen.port[1], 0x11);
    CHECK_EQ(seen.halted[0], 1);
    CHECK_EQ(seen.halted[1], 1);
    test_vm_destroy(&vm);
}

static void a_vcpu_runs_in_one_thread_at_a_time(void)
{
    struct kvm_callbacks cb;
    struct per_vcpu seen;
    struct vcpu_thread t0;
    struct test_vm vm;
    pthread_t a;

    memset(&cb, 0, sizeof(cb));
    memset(&seen, 0, sizeof(seen));
    cb.outb = note_out;
    cb.halt = note_halt;
    REQUIRE(test_vm_create(&vm, &cb, &seen, RAM, 0) == 0);
    TEST_VM_LOAD_GUEST(&vm, two_vcpus);
    REQUIRE(test_vcpu_long_mode(&vm, 0, GUEST_LABEL_ADDR(two_vcpus, waiter)) == 0);
    t0.kvm = vm.kvm;
    t0.vcpu = 0;
    pthread_create(&a, NULL, run_vcpu, &t0);
    sleep_ms(50);
    CHECK_EQ(kvm_run(vm.kvm, 0), -EBUSY);
    *(volatile uint32_t *)(vm.mem + GUEST_DATA) = 1; /* release the waiter */
    pthread_join(a, NULL);
    CHECK_EQ(t0.result, 1);
    CHECK_EQ(seen.halted[0], 1);
    test_vm_destroy(&vm);
}

static void vcpu_indices_are_checked(void)
{
    struct kvm_callbacks cb;
    struct kvm_regs regs;
    struct test_vm vm;
    int max;

    memset(&cb, 0, sizeof(cb));
    REQUIRE(test_vm_create(&vm, &cb, NULL, RAM, 0) == 0);
    max = test_host_extension(KVM_CAP_MAX_VCPUS);
    REQUIRE(max > 1);
    CHECK_EQ(kvm_create_vcpu(vm.kvm, 0), -EEXIST);
    CHECK_EQ(kvm_create_vcpu(vm.kvm, -1), -EINVAL);
    CHECK_EQ(kvm_create_vcpu(vm.kvm, 1 << 20), -EINVAL);
    CHECK_EQ(kvm_create_vcpu(vm.kvm, max), -EINVAL);
    CHECK_EQ(kvm_get_regs(vm.kvm, 5, &regs), -ENOENT);
    CHECK_EQ(kvm_get_regs(vm.kvm, -1, &regs), -EINVAL);
    CHECK_EQ(kvm_run(vm.kvm, 5), -ENOENT);
    /* No fixed 16-vcpu table: the highest index works. */
    CHECK_EQ(kvm_create_vcpu(vm.kvm, max - 1), 0);
    CHECK_EQ(kvm_get_regs(vm.kvm, max - 1, &regs), 0);
    test_vm_destroy(&vm);
}

int main(void)
{
    check_set_timeout(120);
    RUN(two_vcpus_run_at_once_in_two_threads);
    RUN(a_vcpu_runs_in_one_thread_at_a_time);
    RUN(vcpu_indices_are_checked);
    return check_summary();
}

/*
 * Nothing waits on a running guest: four vcpus compute without a single
 * exit while other threads call every register, memory and debug function
 * on them. Each call returns within 100 ms (it kicks the vcpu out of the
 * guest, does its work and lets it go on), what it reads agrees with what
 * the guest computes, and the guest's own result shows that no instruction
 * was lost or run twice.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "guest.h"

DECLARE_GUEST(count);
DECLARE_GUEST_LABEL(count, add);
DECLARE_GUEST_LABEL(count, inc);
DECLARE_GUEST_LABEL(count, halt);
DECLARE_GUEST_LABEL(count, unused);

enum { RAM = 8 << 20, VCPUS = 4, MEDDLERS = 2, SECONDS = 3, LATENCY_LIMIT_US = 100000 };
/* A page the guests never touch, for watchpoints and debugger writes. */
#define SPARE_PAGE 0x300000UL
#define MSR_KERNEL_GS_BASE 0xc0000102

struct running {
    struct test_vm vm;
    int results[VCPUS];
    volatile int meddling;
    pthread_mutex_t lock;
    /* Under lock: */
    long calls, slow_calls, max_latency_us, failures, inconsistent, debug_events;
    const char *slowest;
};

struct vcpu_arg {
    struct running *r;
    int vcpu;
};

static int count_debug(void *opaque, int vcpu, int type, uint64_t watch)
{
    struct running *r = opaque;
    (void)vcpu;
    (void)type;
    (void)watch;
    pthread_mutex_lock(&r->lock);
    r->debug_events++;
    pthread_mutex_unlock(&r->lock);
    return 0;
}

/* A triple fault: the library made the guest take an exception it never asked for. */
static int note_shutdown(void *opaque, int vcpu)
{
    (void)opaque;
    printf("  vcpu %d triple-faulted\n", vcpu);
    return 3;
}

static void *run_vcpu(void *arg)
{
    struct vcpu_arg *a = arg;
    a->r->results[a->vcpu] = kvm_run(a->r->vm.kvm, a->vcpu);
    return NULL;
}

static long now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000L + t.tv_nsec / 1000;
}

/* Runs one library call, timing it, and counts a non-zero result as a failure. */
#define TIMED(r, call)                                                     \
    do {                                                                   \
        long start_ = now_us(), took_;                                     \
        long result_ = (long)(call);                                       \
        took_ = now_us() - start_;                                         \
        pthread_mutex_lock(&(r)->lock);                                    \
        (r)->calls++;                                                      \
        if (took_ > (r)->max_latency_us) {                                 \
            (r)->max_latency_us = took_;                                   \
            (r)->slowest = #call;                                          \
        }                                                                  \
        (r)->slow_calls += took_ > LATENCY_LIMIT_US;                       \
        if (result_ < 0) {                                                 \
            (r)->failures++;                                               \
            printf("  %s returned %ld\n", #call, result_);                 \
        }                                                                  \
        pthread_mutex_unlock(&(r)->lock);                                  \
    } while (0)

/* The counting guest's invariant (see running.S). */
static int consistent(const struct kvm_regs *regs)
{
    uint64_t n = regs->rax;
    if (regs->rip == GUEST_LABEL_ADDR(count, inc))
        return regs->rbx == n * (n + 1) / 2;
    return regs->rbx == n * (n - 1) / 2;
}

static void note_inconsistent(struct running *r, int vcpu, const struct kvm_regs *regs)
{
    pthread_mutex_lock(&r->lock);
    r->inconsistent++;
    printf("  vcpu %d: rip %#llx rax %llu rbx %llu do not fit the guest's loop\n", vcpu,
           (unsigned long long)regs->rip, (unsigned long long)regs->rax, (unsigned long long)regs->rbx);
    pthread_mutex_unlock(&r->lock);
}

static void meddle_with_vcpu(struct running *r, int v)
{
    kvm_context_t kvm = r->vm.kvm;
    size_t code_len = (size_t)(count_end - count_start);
    uint8_t code[64];
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_fpu fpu;
    struct kvm_mp_state mp;
    struct kvm_debug_exit_info info;
    struct {
        struct kvm_msr_entry entry;
    } msr;
    uint64_t gpa = 0, stored = 0x1122334455667700ULL + (uint64_t)v, loaded = 0;

    TIMED(r, kvm_get_regs(kvm, v, &regs));
    if (!consistent(&regs))
        note_inconsistent(r, v, &regs);
    TIMED(r, kvm_get_sregs(kvm, v, &sregs));
    TIMED(r, kvm_set_sregs(kvm, v, &sregs));
    TIMED(r, kvm_get_fpu(kvm, v, &fpu));
    TIMED(r, kvm_set_fpu(kvm, v, &fpu));
    memset(&msr, 0, sizeof(msr));
    msr.entry.index = MSR_KERNEL_GS_BASE;
    TIMED(r, kvm_get_msrs(kvm, v, &msr.entry, 1));
    TIMED(r, kvm_set_msrs(kvm, v, &msr.entry, 1));
    TIMED(r, kvm_get_mpstate(kvm, v, &mp));
    TIMED(r, kvm_get_interrupt_flag(kvm, v));
    TIMED(r, kvm_is_ready_for_interrupt_injection(kvm, v));
    TIMED(r, kvm_get_apic_base(kvm, v) == 0 ? -1 : 0);
    TIMED(r, kvm_get_cr8(kvm, v) == 0 ? 0 : -1);
    kvm_get_debug_exit_info(kvm, v, &info); /* -ENOENT until the first event: not timed */
    TIMED(r, kvm_read_guest_virt(kvm, v, GUEST_CODE, code, code_len));
    if (memcmp(code, count_start, code_len) != 0) {
        pthread_mutex_lock(&r->lock);
        r->inconsistent++;
        pthread_mutex_unlock(&r->lock);
    }
    TIMED(r, kvm_translate_gva(kvm, v, GUEST_CODE, &gpa));
    TIMED(r, gpa == GUEST_CODE ? 0 : -1);
    TIMED(r, kvm_write_guest_virt(kvm, v, SPARE_PAGE + 0x100 + 8 * (uint64_t)v, &stored, 8));
    TIMED(r, kvm_read_guest_virt(kvm, v, SPARE_PAGE + 0x100 + 8 * (uint64_t)v, &loaded, 8));
    TIMED(r, loaded == stored ? 0 : -1);
}

static void meddle_with_debugging(struct running *r, int v)
{
    kvm_context_t kvm = r->vm.kvm;
    uint64_t unused = GUEST_LABEL_ADDR(count, unused);
    struct timespec stepping = {0, 2 * 1000 * 1000};

    TIMED(r, kvm_insert_breakpoint(kvm, v, KVM_GDB_BREAKPOINT_SW, unused, 1));
    TIMED(r, kvm_remove_breakpoint(kvm, v, KVM_GDB_BREAKPOINT_SW, unused, 1));
    TIMED(r, kvm_insert_breakpoint(kvm, v, KVM_GDB_BREAKPOINT_HW, unused + 1, 1));
    TIMED(r, kvm_remove_breakpoint(kvm, v, KVM_GDB_BREAKPOINT_HW, unused + 1, 1));
    TIMED(r, kvm_insert_breakpoint(kvm, v, KVM_GDB_WATCHPOINT_ACCESS, SPARE_PAGE + 0x800, 8));
    TIMED(r, kvm_remove_breakpoint(kvm, v, KVM_GDB_WATCHPOINT_ACCESS, SPARE_PAGE + 0x800, 8));
    TIMED(r, kvm_set_singlestep(kvm, v, 1));
    nanosleep(&stepping, NULL);
    TIMED(r, kvm_set_singlestep(kvm, v, 0));
}

static void *meddle(void *arg)
{
    struct running *r = arg;
    int v;

    while (r->meddling) {
        for (v = 0; v < VCPUS && r->meddling; v++) {
            meddle_with_vcpu(r, v);
            meddle_with_debugging(r, v);
        }
    }
    return NULL;
}

static void calls_on_vcpus_in_the_guest_never_wait_for_an_exit(void)
{
    static struct running r;
    struct kvm_callbacks cb;
    struct vcpu_arg args[VCPUS];
    pthread_t vcpus[VCPUS], meddlers[MEDDLERS];
    struct kvm_regs regs;
    uint64_t rounds[VCPUS];
    int i, stopped_at_halt = 1, all_consistent = 1;

    memset(&r, 0, sizeof(r));
    memset(&cb, 0, sizeof(cb));
    pthread_mutex_init(&r.lock, NULL);
    cb.halt = test_stop_on_halt;
    cb.shutdown = note_shutdown;
    cb.debug = count_debug;
    REQUIRE(test_vm_create(&r.vm, &cb, &r, RAM, 0) == 0);
    TEST_VM_LOAD_GUEST(&r.vm, count);
    for (i = 0; i < VCPUS; i++) {
        if (i > 0)
            REQUIRE(kvm_create_vcpu(r.vm.kvm, i) == 0);
        REQUIRE(test_vcpu_long_mode(&r.vm, i, GUEST_CODE) == 0);
    }
    REQUIRE(kvm_set_watchpoint_method(r.vm.kvm, KVM_WATCH_PAGE_PROTECTION) == 0);
    for (i = 0; i < VCPUS; i++) {
        args[i].r = &r;
        args[i].vcpu = i;
        REQUIRE(pthread_create(&vcpus[i], NULL, run_vcpu, &args[i]) == 0);
    }
    /* kvm_get_apic_base reads the vcpu's last exit: the meddling starts
     * once every vcpu has been in the guest (its count has started). */
    for (i = 0; i < VCPUS; i++) {
        int tries;
        for (tries = 0; tries < 10000; tries++) {
            REQUIRE(kvm_get_regs(r.vm.kvm, i, &regs) == 0);
            if (regs.rax > 0)
                break;
            usleep(1000);
        }
    }
    r.meddling = 1;
    for (i = 0; i < MEDDLERS; i++)
        REQUIRE(pthread_create(&meddlers[i], NULL, meddle, &r) == 0);
    sleep(SECONDS);
    r.meddling = 0;
    for (i = 0; i < MEDDLERS; i++)
        pthread_join(meddlers[i], NULL);
    *(volatile uint64_t *)(r.vm.mem + RUNNING_STOP) = 1;
    for (i = 0; i < VCPUS; i++)
        pthread_join(vcpus[i], NULL);

    for (i = 0; i < VCPUS; i++) {
        CHECK_EQ(r.results[i], 1);
        REQUIRE(kvm_get_regs(r.vm.kvm, i, &regs) == 0);
        if (regs.rip != GUEST_LABEL_ADDR(count, halt) + 1 || regs.rbx != regs.rax * (regs.rax - 1) / 2)
            printf("  vcpu %d ended at rip %#llx (halt at %#llx) with rax %llu rbx %llu\n", i,
                   (unsigned long long)regs.rip, (unsigned long long)GUEST_LABEL_ADDR(count, halt),
                   (unsigned long long)regs.rax, (unsigned long long)regs.rbx);
        stopped_at_halt &= regs.rip == GUEST_LABEL_ADDR(count, halt) + 1;
        all_consistent &= regs.rbx == regs.rax * (regs.rax - 1) / 2;
        rounds[i] = regs.rax;
    }
    printf("  %ld calls in %d s, slowest %ld us (%s), %ld debug events; the vcpus counted %llu %llu %llu %llu\n",
           r.calls, SECONDS, r.max_latency_us, r.slowest ? r.slowest : "-", r.debug_events,
           (unsigned long long)rounds[0], (unsigned long long)rounds[1], (unsigned long long)rounds[2],
           (unsigned long long)rounds[3]);
    CHECK(r.calls > 100);
    CHECK_EQ(r.failures, 0);
    if (test_under_valgrind())
        printf("  under valgrind: latencies not compared\n");
    else
        CHECK_EQ(r.slow_calls, 0);
    CHECK_EQ(r.inconsistent, 0);
    CHECK(stopped_at_halt);
    CHECK(all_consistent);
    for (i = 0; i < VCPUS; i++)
        CHECK(rounds[i] > 1000);
    test_vm_destroy(&r.vm);
    pthread_mutex_destroy(&r.lock);
}

int main(void)
{
    check_set_timeout(120);
    RUN(calls_on_vcpus_in_the_guest_never_wait_for_an_exit);
    return check_summary();
}

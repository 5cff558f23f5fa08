/*
 * Another thread's call at the worst moment of the run loop, put there
 * with the test hooks of the library's test build (libkvm_test_call_at):
 * each thread stops at a hook point until the other got to its own.
 *
 * A register write from another thread, counted before the runner gives
 * KVM the VMM's single step and done after it, keeps the step: on VMX and
 * SVM, KVM_SET_REGS away from the RIP a step was given at takes KVM's trap
 * flag away, and the vcpu would run on unstepped (this emulating host
 * keeps the step by itself, so here the test shows that the library
 * still reports every step, not that it gives the step again).
 *
 * A breakpoint inserted from another thread after the runner looked at the
 * debug state and before it enters stops the vcpu: the inserting thread
 * gives KVM the new state of a running vcpu itself, and leaves it to the
 * runner where the vcpu was not running when it looked (the runner looks
 * again in the entry window). On VMX and SVM a vcpu entering without
 * software breakpoints turned on would run the int3 into the guest's own
 * #BP (here, a triple fault); this emulating host stops at every int3, so
 * here the tests show only that the stop is reported.
 */
#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "check.h"
#include "guest.h"

enum { RAM = 4 << 20, NOPS = 64, STEPS_BEFORE = 3, MAX_STOPS = 2 * NOPS };
/* Where the writer moves RIP: back into the run of nops. */
#define MOVED_TO (GUEST_CODE + 8)

/* Where the inserter puts its breakpoint: ahead in the run of nops. */
#define INSERTED_AT (GUEST_CODE + 8)

/* The two threads' meeting points, in order, of each test. */
enum phase {
    STEPPING,
    WRITER_GOES,      /* the runner, in its third step's callback, lets the writer write */
    WRITE_COUNTED,    /* the writer counted its write; it has not paused the vcpu yet */
    RUNNER_AT_ENTRY,  /* the runner looked at the debug state and is about to enter */
    WRITTEN,          /* the writer's KVM_SET_REGS is done */
};
enum insert_phase {
    RUNNING,
    INSERTER_GOES,    /* the runner looked at the debug state and is about to enter */
    INSERTED,         /* the inserter's kvm_insert_breakpoint returned */
};
enum deferred_phase {
    NOT_RUNNING,
    RUNNER_GOES,      /* the inserter found the vcpu not running; it has not asked it yet */
    RUNNER_LOOKED,    /* the runner looked at the debug state and is about to enter */
    ASKED,            /* the inserter's kvm_insert_breakpoint returned */
};

static pthread_mutex_t phase_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t phase_changed = PTHREAD_COND_INITIALIZER;
static int phase = STEPPING;
/* The line of a wait that timed out (a hook never reached), or 0. */
static int timed_out;

static int current_phase(void)
{
    return __atomic_load_n(&phase, __ATOMIC_ACQUIRE);
}

static void advance_to(int next)
{
    pthread_mutex_lock(&phase_lock);
    __atomic_store_n(&phase, next, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&phase_changed);
    pthread_mutex_unlock(&phase_lock);
}

/* Waits up to 10 s for `wanted`, noting `line` in timed_out if it does not come. */
static void wait_for(int wanted, int line)
{
    struct timespec deadline;
    int r = 0;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&phase_lock);
    while (current_phase() < wanted && r == 0)
        r = pthread_cond_timedwait(&phase_changed, &phase_lock, &deadline);
    pthread_mutex_unlock(&phase_lock);
    if (current_phase() < wanted)
        timed_out = line;
}

/* The writer's hook: counted, not yet paused. */
static void writer_counted(void)
{
    advance_to(WRITE_COUNTED);
    wait_for(RUNNER_AT_ENTRY, __LINE__);
}

/* The runner's hook: the step is given, the entry comes next. */
static void runner_at_entry(void)
{
    advance_to(RUNNER_AT_ENTRY);
    wait_for(WRITTEN, __LINE__);
}

struct stops {
    kvm_context_t kvm;
    uint64_t rip[MAX_STOPS];
    int n;
};

static int note_stop(void *opaque, int vcpu, int break_type, uint64_t watchpoint)
{
    struct stops *stops = opaque;
    struct kvm_regs regs;
    (void)break_type;
    (void)watchpoint;
    if (kvm_get_regs(stops->kvm, vcpu, &regs) != 0 || stops->n == MAX_STOPS)
        return 1;
    stops->rip[stops->n++] = regs.rip;
    if (stops->n == STEPS_BEFORE) {
        if (libkvm_test_call_at(LIBKVM_HOOK_BEFORE_ENTRY, runner_at_entry) != 0)
            timed_out = __LINE__;
        advance_to(WRITER_GOES);
        wait_for(WRITE_COUNTED, __LINE__);
    }
    return 0;
}

static void *move_rip(void *opaque)
{
    struct stops *stops = opaque;
    struct kvm_regs regs;
    wait_for(WRITER_GOES, __LINE__);
    if (timed_out || kvm_get_regs(stops->kvm, 0, &regs) != 0 ||
        libkvm_test_call_at(LIBKVM_HOOK_WRITE_COUNTED, writer_counted) != 0) {
        timed_out = __LINE__;
        return NULL;
    }
    regs.rip = MOVED_TO;
    if (kvm_set_regs(stops->kvm, 0, &regs) != 0)
        timed_out = __LINE__;
    advance_to(WRITTEN);
    return NULL;
}

static void a_register_write_around_the_entrys_look_keeps_the_single_step(void)
{
    static struct stops stops;
    struct kvm_callbacks callbacks = { .debug = note_stop, .halt = test_stop_on_halt };
    uint8_t code[NOPS + 1];
    struct test_vm vm;
    pthread_t writer;
    int i, n = 0;

    memset(code, 0x90, NOPS);
    code[NOPS] = 0xf4; /* hlt */
    REQUIRE(test_vm_create(&vm, &callbacks, &stops, RAM, 0) == 0);
    stops.kvm = vm.kvm;
    test_vm_load(&vm, GUEST_CODE, code, code + sizeof code);
    REQUIRE(test_vcpu_long_mode(&vm, 0, GUEST_CODE) == 0);
    REQUIRE(kvm_set_singlestep(vm.kvm, 0, 1) == 0);
    REQUIRE(pthread_create(&writer, NULL, move_rip, &stops) == 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    pthread_join(writer, NULL);
    CHECK_EQ(timed_out, 0);
    CHECK_EQ(current_phase(), WRITTEN);
    /* A stop after each of the first nops, then after each from the new
     * RIP on, the last at the hlt. */
    for (i = 1; i <= STEPS_BEFORE && n < stops.n; i++, n++)
        CHECK_EQ(stops.rip[n], GUEST_CODE + i);
    for (i = 1; MOVED_TO + i <= GUEST_CODE + NOPS && n < stops.n; i++, n++)
        CHECK_EQ(stops.rip[n], MOVED_TO + i);
    CHECK_EQ(stops.n, STEPS_BEFORE + (GUEST_CODE + NOPS - MOVED_TO));
    test_vm_destroy(&vm);
}

/* The runner's hook in the second test: the inserter goes now. */
static void let_the_inserter_go(void)
{
    advance_to(INSERTER_GOES);
    wait_for(INSERTED, __LINE__);
}

struct hit {
    kvm_context_t kvm;
    int inserted;
    int break_type;
    uint64_t rip;
};

static int note_hit(void *opaque, int vcpu, int break_type, uint64_t watchpoint)
{
    struct hit *hit = opaque;
    struct kvm_regs regs;
    (void)watchpoint;
    hit->break_type = break_type;
    if (kvm_get_regs(hit->kvm, vcpu, &regs) == 0)
        hit->rip = regs.rip;
    return 1;
}

static void *insert_breakpoint(void *opaque)
{
    struct hit *hit = opaque;
    wait_for(INSERTER_GOES, __LINE__);
    if (!timed_out)
        hit->inserted = kvm_insert_breakpoint(hit->kvm, 0, KVM_GDB_BREAKPOINT_SW, INSERTED_AT, 1);
    advance_to(INSERTED);
    return NULL;
}

/* Runs the run of nops with `inserter` on another thread, from phase
 * `start`: the runner's BEFORE_ENTRY hook `at_entry` is armed once phase
 * `armed` is reached, and the vcpu must stop at the breakpoint the
 * inserter put ahead of it (the inserter's last phase: `last`). */
static void run_into_the_inserted_breakpoint(void *(*inserter)(void *), int start, int armed, void (*at_entry)(void),
                                             int last)
{
    static struct hit hit;
    struct kvm_callbacks callbacks = { .debug = note_hit, .halt = test_stop_on_halt };
    uint8_t code[NOPS + 1];
    struct test_vm vm;
    pthread_t thread;

    memset(code, 0x90, NOPS);
    code[NOPS] = 0xf4; /* hlt */
    __atomic_store_n(&phase, start, __ATOMIC_RELEASE);
    timed_out = 0;
    REQUIRE(test_vm_create(&vm, &callbacks, &hit, RAM, 0) == 0);
    hit.kvm = vm.kvm;
    hit.inserted = -1;
    hit.break_type = -1;
    test_vm_load(&vm, GUEST_CODE, code, code + sizeof code);
    REQUIRE(test_vcpu_long_mode(&vm, 0, GUEST_CODE) == 0);
    REQUIRE(pthread_create(&thread, NULL, inserter, &hit) == 0);
    wait_for(armed, __LINE__);
    REQUIRE(libkvm_test_call_at(LIBKVM_HOOK_BEFORE_ENTRY, at_entry) == 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    pthread_join(thread, NULL);
    CHECK_EQ(timed_out, 0);
    CHECK_EQ(current_phase(), last);
    CHECK_EQ(hit.inserted, 0);
    CHECK_EQ(hit.break_type, KVM_GDB_BREAKPOINT_SW);
    CHECK_EQ(hit.rip, INSERTED_AT);
    test_vm_destroy(&vm);
}

static void a_breakpoint_inserted_after_the_entrys_look_stops_the_vcpu(void)
{
    run_into_the_inserted_breakpoint(insert_breakpoint, RUNNING, RUNNING, let_the_inserter_go, INSERTED);
}

/* The inserter's hook in the third test: the vcpu was found not running. */
static void let_the_runner_go(void)
{
    advance_to(RUNNER_GOES);
    wait_for(RUNNER_LOOKED, __LINE__);
}

/* The runner's hook in the third test: it looked before it was asked. */
static void runner_looked(void)
{
    advance_to(RUNNER_LOOKED);
    wait_for(ASKED, __LINE__);
}

static void *insert_before_the_vcpu_runs(void *opaque)
{
    struct hit *hit = opaque;
    if (libkvm_test_call_at(LIBKVM_HOOK_BEFORE_DEFERRED_PROGRAMMING, let_the_runner_go) != 0)
        timed_out = __LINE__;
    else
        hit->inserted = kvm_insert_breakpoint(hit->kvm, 0, KVM_GDB_BREAKPOINT_SW, INSERTED_AT, 1);
    advance_to(ASKED);
    return NULL;
}

static void a_breakpoint_left_to_a_vcpu_that_starts_running_stops_it(void)
{
    run_into_the_inserted_breakpoint(insert_before_the_vcpu_runs, NOT_RUNNING, RUNNER_GOES, runner_looked, ASKED);
}

int main(void)
{
    check_set_timeout(120);
    RUN(a_register_write_around_the_entrys_look_keeps_the_single_step);
    RUN(a_breakpoint_inserted_after_the_entrys_look_stops_the_vcpu);
    RUN(a_breakpoint_left_to_a_vcpu_that_starts_running_stops_it);
    return check_summary();
}

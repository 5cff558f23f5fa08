/*
 * Guest debugging with real guests: software and hardware breakpoints,
 * single steps, watchpoints (where the host reports them), the guest's own
 * int3, the 2008 debug request, breakpoints in code loaded later or at
 * unmapped addresses, real mode, guest memory by virtual address, and the
 * guest's own faults on unmapped code and stack while it is debugged.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "guest.h"

DECLARE_GUEST(straight);
DECLARE_GUEST_LABEL(straight, first);
DECLARE_GUEST_LABEL(straight, second);
DECLARE_GUEST_LABEL(straight, third);
DECLARE_GUEST_LABEL(straight, fourth);
DECLARE_GUEST_LABEL(straight, fifth);
DECLARE_GUEST_LABEL(straight, last);
DECLARE_GUEST(one_byte_steps);
DECLARE_GUEST_LABEL(one_byte_steps, second);
DECLARE_GUEST_LABEL(one_byte_steps, last);
DECLARE_GUEST(string_out);
DECLARE_GUEST(loop3);
DECLARE_GUEST_LABEL(loop3, body);
DECLARE_GUEST(spin_after);
DECLARE_GUEST_LABEL(spin_after, spot);
DECLARE_GUEST(store_variable);
DECLARE_GUEST_LABEL(store_variable, variable);
DECLARE_GUEST(own_int3);
DECLARE_GUEST_LABEL(own_int3, debugger_spot);
DECLARE_GUEST_LABEL(own_int3, handler);
DECLARE_GUEST(own_trap_flag);
DECLARE_GUEST_LABEL(own_trap_flag, handler);
DECLARE_GUEST(stack_off_the_map);
DECLARE_GUEST_LABEL(stack_off_the_map, move);
DECLARE_GUEST(patched_by_frontend);
DECLARE_GUEST_LABEL(patched_by_frontend, int3);
DECLARE_GUEST(map_and_jump);
DECLARE_GUEST(remote_code);
DECLARE_GUEST_LABEL(remote_code, target);
DECLARE_GUEST(count_until_told);
DECLARE_GUEST_LABEL(count_until_told, next);
DECLARE_GUEST_LABEL(count_until_told, say);
DECLARE_GUEST(real_straight);
DECLARE_GUEST_LABEL(real_straight, target);

enum { RAM = 8 << 20, MAX_EVENTS = 64, MAX_OUT_BYTES = 8192 };

struct debug_event {
    int vcpu, type;
    uint64_t watch, rip;
};

/* Records debug events and port writes. */
struct debug_log {
    kvm_context_t kvm;
    struct debug_event ev[MAX_EVENTS];
    int n;
    uint16_t ports[MAX_EVENTS];
    uint8_t values[MAX_OUT_BYTES];
    int outs;
    int debug_result; /* what the debug callback returns: 0 runs on */
    int entries;      /* counted by count_entry, the pre_kvm_run hook */
    /* The debug callback moves RIP from `move_rip_from` to `move_rip_to`,
     * once (never while `move_rip_from` is 0). */
    uint64_t move_rip_from, move_rip_to;
};

static int log_debug(void *opaque, int vcpu, int type, uint64_t watch)
{
    struct debug_log *log = opaque;
    struct kvm_regs regs;
    int have_regs = kvm_get_regs(log->kvm, vcpu, &regs) == 0;
    if (log->n < MAX_EVENTS) {
        struct debug_event *e = &log->ev[log->n];
        e->vcpu = vcpu;
        e->type = type;
        e->watch = watch;
        e->rip = have_regs ? regs.rip : 0;
    }
    log->n++;
    if (have_regs && log->move_rip_from && regs.rip == log->move_rip_from) {
        regs.rip = log->move_rip_to;
        log->move_rip_from = 0;
        if (kvm_set_regs(log->kvm, vcpu, &regs) < 0)
            log->move_rip_from = ~0ULL; /* reported by the test as not moved */
    }
    return log->debug_result;
}

static int log_outb(void *opaque, uint16_t port, uint8_t value)
{
    struct debug_log *log = opaque;
    if (log->outs < MAX_EVENTS)
        log->ports[log->outs] = port;
    if (log->outs < MAX_OUT_BYTES)
        log->values[log->outs] = value;
    log->outs++;
    return 0;
}

/* A VM with a 64-bit vcpu 0 at GUEST_CODE running `start..end`, with the
 * `pre_kvm_run` hook `entry_hook` (none if NULL). */
static int debug_vm(struct test_vm *vm, struct debug_log *log, struct kvm_callbacks *cb, const uint8_t *start,
                    const uint8_t *end, int (*entry_hook)(void *opaque, int vcpu))
{
    memset(log, 0, sizeof(*log));
    memset(cb, 0, sizeof(*cb));
    log->debug_result = 1;
    cb->debug = log_debug;
    cb->outb = log_outb;
    cb->halt = test_stop_on_halt;
    cb->pre_kvm_run = entry_hook;
    if (test_vm_create(vm, cb, log, RAM, 0) < 0)
        return -1;
    log->kvm = vm->kvm;
    test_vm_load(vm, GUEST_CODE, start, end);
    return test_vcpu_long_mode(vm, 0, GUEST_CODE);
}

#define DEBUG_VM(vm, log, cb, name) debug_vm((vm), (log), (cb), name##_start, name##_end, NULL)

static uint64_t rip_of_kvm(kvm_context_t kvm, int vcpu)
{
    struct kvm_regs regs;
    return kvm_get_regs(kvm, vcpu, &regs) == 0 ? regs.rip : ~0ULL;
}

static uint64_t rip_of(struct test_vm *vm, int vcpu)
{
    return rip_of_kvm(vm->kvm, vcpu);
}

static void software_breakpoint_reports_vcpu_type_and_pc(void)
{
    const uint64_t bp = GUEST_LABEL_ADDR(straight, third);
    struct kvm_debug_exit_info info;
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;
    uint8_t seen;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, straight) == 0);
    CHECK_EQ(kvm_get_debug_exit_info(vm.kvm, 0, &info), -ENOENT);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, bp, 1), 0);
    CHECK_EQ(vm.mem[bp], 0xcc);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    REQUIRE(log.n == 1);
    CHECK_EQ(log.ev[0].vcpu, 0);
    CHECK_EQ(log.ev[0].type, KVM_GDB_BREAKPOINT_SW);
    CHECK_EQ(log.ev[0].watch, 0);
    CHECK_EQ(log.ev[0].rip, bp);
    CHECK_EQ(log.outs, 1); /* the out before the breakpoint ran, the one after not yet */
    CHECK_EQ(kvm_get_debug_exit_info(vm.kvm, 0, &info), 0);
    CHECK_EQ(info.break_type, KVM_GDB_BREAKPOINT_SW);
    CHECK_EQ(info.pc, bp);
    CHECK_EQ(info.exception, 3);
    CHECK_EQ(info.hw_index, -1);
    /* The debugger's view of memory shows the original instruction. */
    CHECK_EQ(kvm_read_guest_virt(vm.kvm, 0, bp, &seen, 1), 0);
    CHECK_EQ(seen, straight_third[0]);
    test_vm_destroy(&vm);
}

static void resuming_on_a_breakpoint_steps_over_it_and_it_stays_armed(void)
{
    const uint64_t bp = GUEST_LABEL_ADDR(loop3, body);
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;
    int i;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, loop3) == 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, bp, 1), 0);
    /* Stop at every hit, resume with kvm_run each time. */
    for (i = 0; i < 3; i++) {
        CHECK_EQ(kvm_run(vm.kvm, 0), 1);
        CHECK_EQ(log.n, i + 1);
        CHECK_EQ(rip_of(&vm, 0), bp);
        CHECK_EQ(log.outs, i);
    }
    CHECK_EQ(kvm_run(vm.kvm, 0), 1); /* the halt */
    CHECK_EQ(log.n, 3);
    CHECK_EQ(log.outs, 3);
    CHECK_EQ(vm.mem[bp], 0xcc);
    test_vm_destroy(&vm);
}

static void a_debug_callback_returning_0_runs_on_through_every_hit(void)
{
    const uint64_t bp = GUEST_LABEL_ADDR(loop3, body);
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, loop3) == 0);
    log.debug_result = 0;
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, bp, 1), 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK_EQ(log.n, 3);
    CHECK_EQ(log.outs, 3);
    test_vm_destroy(&vm);
}

static int count_entry(void *opaque, int vcpu)
{
    (void)vcpu;
    ((struct debug_log *)opaque)->entries++;
    return 0;
}

/* After the step over a breakpoint (software, or a debug register) the
 * guest runs on unstepped: its 2,000 instructions to the `out` take a few
 * entries, not one each. */
static void the_guest_runs_on_unstepped_after_the_step_over_a_breakpoint(void)
{
    const uint64_t spot = GUEST_LABEL_ADDR(spin_after, spot);
    const int types[] = {KVM_GDB_BREAKPOINT_SW, KVM_GDB_BREAKPOINT_HW};
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;
    size_t i;

    for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        REQUIRE(debug_vm(&vm, &log, &cb, spin_after_start, spin_after_end, count_entry) == 0);
        log.debug_result = 0;
        CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, types[i], spot, 1), 0);
        CHECK_EQ(kvm_run(vm.kvm, 0), 1); /* the halt */
        CHECK_EQ(log.n, 1);
        CHECK_EQ(log.outs, 1);
        /* The hit, the step over it, the run to the out, the run to the
         * halt: one entry more per exit the host adds. */
        if (log.entries > 8)
            printf("  breakpoint type %d: %d entries\n", types[i], log.entries);
        CHECK(log.entries <= 8);
        test_vm_destroy(&vm);
    }
}

static void removed_breakpoint_restores_the_byte_and_the_guest_continues(void)
{
    const uint64_t bp = GUEST_LABEL_ADDR(straight, third);
    const uint8_t original = straight_third[0];
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, straight) == 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, bp, 1), 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK_EQ(kvm_remove_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, bp, 1), 0);
    CHECK_EQ(vm.mem[bp], original);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK_EQ(log.n, 1);
    CHECK_EQ(log.outs, 2);
    CHECK_EQ(rip_of(&vm, 0), GUEST_LABEL_ADDR(straight, last) + 1);
    CHECK_EQ(kvm_remove_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, bp, 1), -ENOENT);
    test_vm_destroy(&vm);
}

static void hardware_breakpoint_hits_and_resumes(void)
{
    const uint64_t bp = GUEST_LABEL_ADDR(loop3, body);
    struct kvm_debug_exit_info info;
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, loop3) == 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_HW, bp, 1), 0);
    CHECK_EQ(vm.mem[bp], loop3_body[0]); /* memory untouched */
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    REQUIRE(log.n == 1);
    CHECK_EQ(log.ev[0].type, KVM_GDB_BREAKPOINT_HW);
    CHECK_EQ(log.ev[0].rip, bp);
    CHECK_EQ(kvm_get_debug_exit_info(vm.kvm, 0, &info), 0);
    CHECK_EQ(info.hw_index, 0);
    CHECK_EQ(info.exception, 1);
    log.debug_result = 0; /* run on through the other two hits */
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK_EQ(log.n, 3);
    CHECK_EQ(log.outs, 3);
    test_vm_destroy(&vm);
}

/* Single-steps vcpu 0 of `vm` until the guest halts (`kvm_run` returns the
 * halt callback's 1), the debug callback running on. */
static void step_to_the_halt(struct test_vm *vm, struct debug_log *log)
{
    log->debug_result = 0;
    CHECK_EQ(kvm_set_singlestep(vm->kvm, 0, 1), 0);
    CHECK_EQ(kvm_run(vm->kvm, 0), 1);
}

/* The log holds exactly `n` single steps, reported at `rips`. */
static void check_steps_at(const struct debug_log *log, const uint64_t *rips, int n)
{
    int i;

    CHECK_EQ(log->n, n);
    for (i = 0; i < n && i < log->n; i++) {
        CHECK_EQ(log->ev[i].type, KVM_GDB_SINGLESTEP);
        CHECK_EQ(log->ev[i].rip, rips[i]);
    }
}

static void single_step_reports_each_instruction(void)
{
    const uint64_t expected[] = {
        GUEST_LABEL_ADDR(straight, second), GUEST_LABEL_ADDR(straight, third), GUEST_LABEL_ADDR(straight, fourth),
        GUEST_LABEL_ADDR(straight, fifth), GUEST_LABEL_ADDR(straight, last),
    };
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, straight) == 0);
    step_to_the_halt(&vm, &log);
    check_steps_at(&log, expected, 5);
    CHECK_EQ(log.outs, 2);
    CHECK_EQ(kvm_set_singlestep(vm.kvm, 0, 0), 0);
    test_vm_destroy(&vm);
}

/* Single steps that each move RIP by one byte: each is reported, and only
 * the `hlt` halts (where the host reports stepping it as a step past it,
 * the library tells it from the others by its byte). */
static void single_steps_of_one_byte_instructions_halt_only_at_the_hlt(void)
{
    const uint64_t second = GUEST_LABEL_ADDR(one_byte_steps, second), last = GUEST_LABEL_ADDR(one_byte_steps, last);
    const uint64_t expected[] = { second, second + 1, second + 2, second + 3 };
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, one_byte_steps) == 0);
    step_to_the_halt(&vm, &log);
    check_steps_at(&log, expected, 4);
    CHECK_EQ(second + 3, last);
    CHECK_EQ(rip_of(&vm, 0), last + 1);
    test_vm_destroy(&vm);
}

/* The VMM moves RIP in the debug callback of a single step: the next step
 * starts where it put RIP. Onto the `hlt` (from `fourth`): the halt ends
 * the run and port 0x11 is never written. Off it (from `last` back to
 * `third`): the `hlt` is not run, the guest does `mov`, `add` and `out`
 * again, and halts the second time. */
static void a_step_starts_where_the_vmm_moved_rip_at_the_last_one(void)
{
    const uint64_t second = GUEST_LABEL_ADDR(straight, second), third = GUEST_LABEL_ADDR(straight, third);
    const uint64_t fourth = GUEST_LABEL_ADDR(straight, fourth), fifth = GUEST_LABEL_ADDR(straight, fifth);
    const uint64_t last = GUEST_LABEL_ADDR(straight, last);
    /* the fifth step is reported at `last` and moved back to `third` */
    const uint64_t moved_back[] = { second, third, fourth, fifth, last, fourth, fifth, last };
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, straight) == 0);
    log.move_rip_from = fourth;
    log.move_rip_to = last;
    step_to_the_halt(&vm, &log);
    CHECK_EQ(log.move_rip_from, 0);
    CHECK_EQ(log.outs, 1);
    CHECK_EQ(rip_of(&vm, 0), last + 1);
    test_vm_destroy(&vm);

    REQUIRE(DEBUG_VM(&vm, &log, &cb, straight) == 0);
    log.move_rip_from = last;
    log.move_rip_to = third;
    step_to_the_halt(&vm, &log);
    CHECK_EQ(log.move_rip_from, 0);
    check_steps_at(&log, moved_back, 8);
    CHECK_EQ(log.outs, 3);
    CHECK_EQ(log.ports[2], 0x11);
    CHECK_EQ(log.values[2], 5);
    CHECK_EQ(rip_of(&vm, 0), last + 1);
    test_vm_destroy(&vm);
}

/* Single-stepping onto an instruction whose page is not mapped: the guest's
 * fetch faults into its own #PF handler, as it does without single steps,
 * and the run goes on (the handler says so on port 0x11 and halts). */
static void single_step_onto_an_unmapped_page_faults_in_the_guest(void)
{
    const uint64_t unmapped = 1ULL << 32; /* just past the 4 GiB identity map */
    struct kvm_callbacks cb;
    struct kvm_sregs sregs;
    struct kvm_regs regs;
    struct debug_log log;
    struct test_vm vm;
    int stepping, i;

    for (stepping = 0; stepping <= 1; stepping++) {
        REQUIRE(DEBUG_VM(&vm, &log, &cb, straight) == 0);
        log.debug_result = 0;
        test_vm_set_idt_gate(&vm, 14, GUEST_LABEL_ADDR(straight, fifth));
        REQUIRE(kvm_get_regs(vm.kvm, 0, &regs) == 0);
        regs.rip = unmapped;
        REQUIRE(kvm_set_regs(vm.kvm, 0, &regs) == 0);
        CHECK_EQ(kvm_set_singlestep(vm.kvm, 0, stepping), 0);
        CHECK_EQ(kvm_run(vm.kvm, 0), 1);
        REQUIRE(kvm_get_sregs(vm.kvm, 0, &sregs) == 0);
        CHECK_EQ(sregs.cr2, unmapped);
        CHECK_EQ(log.outs, 1);
        CHECK_EQ(log.ports[0], 0x11);
        /* Stepping: the handler's instructions are reported, nothing else. */
        CHECK_EQ(log.n > 0, stepping);
        for (i = 0; i < log.n && i < MAX_EVENTS; i++)
            CHECK_EQ(log.ev[i].type, KVM_GDB_SINGLESTEP);
        test_vm_destroy(&vm);
    }
}

/* A breakpoint on an instruction that moves RSP to where nothing is mapped
 * (a stack about to grow into a page the guest maps on its fault): the step
 * over it looks for a frame the step pushed, finds the stack unreadable,
 * and the guest runs on as without the breakpoint. */
static void step_over_a_breakpoint_that_moves_the_stack_off_the_map(void)
{
    const uint64_t map_end = 1ULL << 32; /* the 4 GiB identity map */
    struct kvm_callbacks cb;
    struct kvm_regs regs;
    struct debug_log log;
    struct test_vm vm;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, stack_off_the_map) == 0);
    log.debug_result = 0;
    REQUIRE(kvm_get_regs(vm.kvm, 0, &regs) == 0);
    regs.rsp = map_end; /* after `sub $8`, the 32 bytes at RSP cross the end */
    REQUIRE(kvm_set_regs(vm.kvm, 0, &regs) == 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, GUEST_LABEL_ADDR(stack_off_the_map, move), 1), 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK_EQ(log.n, 1);
    CHECK_EQ(log.ev[0].type, KVM_GDB_BREAKPOINT_SW);
    CHECK_EQ(log.outs, 1);
    REQUIRE(kvm_get_regs(vm.kvm, 0, &regs) == 0);
    CHECK_EQ(regs.rsp, map_end);
    test_vm_destroy(&vm);
}

/* Each piece of a long `rep outsb` reaches the VMM with its own bytes while
 * the vcpu single-steps (the library finishes each piece itself then). */
static void single_stepped_string_output_delivers_every_byte(void)
{
    enum { N = 6000 };
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;
    int i, wrong = 0;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, string_out) == 0);
    for (i = 0; i < N; i++)
        vm.mem[GUEST_DATA + i] = (uint8_t)(i * 7 + i / 256);
    log.debug_result = 0;
    CHECK_EQ(kvm_set_singlestep(vm.kvm, 0, 1), 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK_EQ(log.outs, N);
    for (i = 0; i < N && i < log.outs; i++)
        wrong += log.values[i] != vm.mem[GUEST_DATA + i];
    CHECK_EQ(wrong, 0);
    test_vm_destroy(&vm);
}

static void single_step_over_a_software_breakpoint_reports_both(void)
{
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, straight) == 0);
    log.debug_result = 0;
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, GUEST_LABEL_ADDR(straight, third), 1), 0);
    CHECK_EQ(kvm_set_singlestep(vm.kvm, 0, 1), 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    /* steps to second and third, the breakpoint at third, then steps on. */
    REQUIRE(log.n == 6);
    CHECK_EQ(log.ev[1].type, KVM_GDB_SINGLESTEP);
    CHECK_EQ(log.ev[1].rip, GUEST_LABEL_ADDR(straight, third));
    CHECK_EQ(log.ev[2].type, KVM_GDB_BREAKPOINT_SW);
    CHECK_EQ(log.ev[2].rip, GUEST_LABEL_ADDR(straight, third));
    CHECK_EQ(log.ev[3].type, KVM_GDB_SINGLESTEP);
    CHECK_EQ(log.ev[3].rip, GUEST_LABEL_ADDR(straight, fourth));
    CHECK_EQ(log.ev[5].rip, GUEST_LABEL_ADDR(straight, last));
    test_vm_destroy(&vm);
}

/* Whether a debug-register write watchpoint fires here: the instruction
 * emulators of some hosts never report data breakpoints (test_watch.c covers
 * watchpoints by page protection, which work everywhere). */
static int host_reports_data_breakpoints(void)
{
    static int answer = -1;
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;

    if (answer >= 0)
        return answer;
    if (DEBUG_VM(&vm, &log, &cb, store_variable) < 0)
        return 0;
    kvm_set_watchpoint_method(vm.kvm, KVM_WATCH_DEBUG_REGISTERS);
    kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_WRITE, GUEST_LABEL_ADDR(store_variable, variable), 8);
    kvm_run(vm.kvm, 0);
    answer = log.n > 0;
    test_vm_destroy(&vm);
    return answer;
}

static void debug_register_write_watchpoint_reports_the_address(void)
{
    const uint64_t variable = GUEST_LABEL_ADDR(store_variable, variable);
    struct kvm_debug_exit_info info;
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;

    if (!host_reports_data_breakpoints())
        SKIP("host KVM does not report data breakpoints");
    REQUIRE(DEBUG_VM(&vm, &log, &cb, store_variable) == 0);
    CHECK_EQ(kvm_set_watchpoint_method(vm.kvm, KVM_WATCH_DEBUG_REGISTERS), 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_WRITE, variable, 8), 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    REQUIRE(log.n == 1);
    CHECK_EQ(log.ev[0].type, KVM_GDB_WATCHPOINT_WRITE);
    CHECK_EQ(log.ev[0].watch, variable);
    CHECK_EQ(*(uint64_t *)(vm.mem + variable), 0x1234);
    CHECK_EQ(kvm_get_debug_exit_info(vm.kvm, 0, &info), 0);
    CHECK_EQ(info.watch_len, 8);
    test_vm_destroy(&vm);
}

static void guest_int3_reaches_its_own_handler_while_the_library_debugs(void)
{
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, own_int3) == 0);
    log.debug_result = 0;
    test_vm_set_idt_gate(&vm, 3, GUEST_LABEL_ADDR(own_int3, handler));
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, GUEST_LABEL_ADDR(own_int3, debugger_spot), 1), 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    REQUIRE(log.outs == 3);
    CHECK_EQ(log.ports[0], 0x33); /* the guest's handler ran */
    CHECK_EQ(log.ports[1], 0x10); /* and returned after its int3 */
    CHECK_EQ(log.ports[2], 0x11);
    REQUIRE(log.n == 1); /* only the debugger's breakpoint was reported */
    CHECK_EQ(log.ev[0].rip, GUEST_LABEL_ADDR(own_int3, debugger_spot));
    test_vm_destroy(&vm);
}

static void guest_int3_runs_its_handler_without_any_debugging(void)
{
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, own_int3) == 0);
    test_vm_set_idt_gate(&vm, 3, GUEST_LABEL_ADDR(own_int3, handler));
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK_EQ(log.outs, 3);
    CHECK_EQ(log.ports[0], 0x33);
    CHECK_EQ(log.n, 0);
    test_vm_destroy(&vm);
}

/* A #DB the debugger did not cause (the guest's own TF) reaches the
 * guest's handler with DR6.BS, while the library has debug registers armed. */
static void guest_trap_flag_reaches_its_own_handler_while_the_library_debugs(void)
{
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, own_trap_flag) == 0);
    test_vm_set_idt_gate(&vm, 1, GUEST_LABEL_ADDR(own_trap_flag, handler));
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_HW, 0x7ff000, 1), 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, 0x7ff000, 1), 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    REQUIRE(log.outs == 2);
    CHECK_EQ(log.ports[0], 0x31);
    CHECK_EQ(log.values[0], 1); /* DR6.BS */
    CHECK_EQ(log.ports[1], 0x10);
    CHECK_EQ(log.n, 0);
    test_vm_destroy(&vm);
}

/* The 2008 frontend: KVM_DEBUG_GUEST with enabled = 1 and no hardware
 * breakpoints, the 0xCC written by the frontend itself. */
static void old_debug_request_reports_every_int3(void)
{
    struct kvm_debug_guest dbg;
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, patched_by_frontend) == 0);
    memset(&dbg, 0, sizeof(dbg));
    dbg.enabled = 1;
    CHECK_EQ(kvm_guest_debug(vm.kvm, 0, &dbg), 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    REQUIRE(log.n == 1);
    CHECK_EQ(log.ev[0].type, KVM_GDB_BREAKPOINT_SW);
    CHECK_EQ(log.ev[0].rip, GUEST_LABEL_ADDR(patched_by_frontend, int3));
    CHECK_EQ(log.outs, 0);
    test_vm_destroy(&vm);
}

static void old_debug_request_hardware_breakpoint_and_singlestep(void)
{
    struct kvm_debug_guest dbg;
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, straight) == 0);
    memset(&dbg, 0, sizeof(dbg));
    dbg.enabled = 1;
    dbg.breakpoints[1].enabled = 1;
    dbg.breakpoints[1].address = GUEST_LABEL_ADDR(straight, fourth);
    CHECK_EQ(kvm_guest_debug(vm.kvm, 0, &dbg), 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    REQUIRE(log.n == 1);
    CHECK_EQ(log.ev[0].type, KVM_GDB_BREAKPOINT_HW);
    CHECK_EQ(log.ev[0].rip, GUEST_LABEL_ADDR(straight, fourth));
    dbg.breakpoints[1].enabled = 0;
    dbg.singlestep = 1;
    CHECK_EQ(kvm_guest_debug(vm.kvm, 0, &dbg), 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    REQUIRE(log.n == 2);
    CHECK_EQ(log.ev[1].type, KVM_GDB_SINGLESTEP);
    CHECK_EQ(log.ev[1].rip, GUEST_LABEL_ADDR(straight, fifth));
    dbg.enabled = 0;
    CHECK_EQ(kvm_guest_debug(vm.kvm, 0, &dbg), 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1); /* to the halt, unobserved */
    CHECK_EQ(log.n, 2);
    test_vm_destroy(&vm);
}

static void ten_thousand_breakpoints_leave_memory_identical(void)
{
    const uint64_t base = 0x200000, span = 0x100000;
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;
    uint64_t before;
    int i, bad = 0;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, straight) == 0);
    for (i = 0; i < (int)span; i++)
        vm.mem[base + i] = (uint8_t)(i * 131 + 7);
    before = test_checksum(vm.mem, RAM);
    /* 10,000 inserts over 5,000 addresses: every address twice. */
    for (i = 0; i < 10000; i++)
        bad += kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, base + (uint64_t)(i % 5000) * 197 % span, 1) != 0;
    CHECK_EQ(bad, 0);
    CHECK_EQ(vm.mem[base + 197], 0xcc);
    CHECK(test_checksum(vm.mem, RAM) != before);
    for (i = 0; i < 10000; i++)
        bad += kvm_remove_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, base + (uint64_t)(i % 5000) * 197 % span, 1) != 0;
    CHECK_EQ(bad, 0);
    CHECK_EQ(test_checksum(vm.mem, RAM), before);
    /* And through kvm_remove_all_breakpoints. */
    for (i = 0; i < 1000; i++)
        kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, base + (uint64_t)i * 7, 1);
    kvm_remove_all_breakpoints(vm.kvm);
    CHECK_EQ(test_checksum(vm.mem, RAM), before);
    test_vm_destroy(&vm);
}

static void debug_registers_run_out_after_four(void)
{
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, straight) == 0);
    CHECK_EQ(kvm_set_watchpoint_method(vm.kvm, KVM_WATCH_DEBUG_REGISTERS), 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_HW, 0x10000, 1), 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_WRITE, 0x200000, 8), 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_READ, 0x200010, 4), 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_ACCESS, 0x200020, 2), 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_HW, 0x10010, 1), -ENOSPC);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_WRITE, 0x200030, 3), -EINVAL);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_WRITE, 0x200031, 4), -EINVAL);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_SINGLESTEP, 0x10000, 1), -EINVAL);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, 42, 0x10000, 1), -EINVAL);
    CHECK_EQ(kvm_remove_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_WRITE, 0x200000, 4), -ENOENT);
    CHECK_EQ(kvm_remove_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, 0x10000, 1), -ENOENT);
    CHECK_EQ(kvm_remove_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_WRITE, 0x200000, 8), 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_HW, 0x10010, 1), 0);
    /* With every register taken, an unmapped software breakpoint is refused. */
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, 0x200000000ULL, 1), -EFAULT);
    test_vm_destroy(&vm);
}

/* The guest maps a page only when it runs; the breakpoint inserted before
 * waits in a debug register, fires, then moves into memory. */
static void breakpoint_at_an_unmapped_address_waits_in_a_debug_register(void)
{
    const uint64_t target = 0x40000100 + (GUEST_LABEL_ADDR(remote_code, target) - GUEST_CODE);
    const uint64_t target_gpa = 0x600100 + (GUEST_LABEL_ADDR(remote_code, target) - GUEST_CODE);
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;
    uint64_t gpa;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, map_and_jump) == 0);
    test_vm_load(&vm, 0x600100, remote_code_start, remote_code_end);
    memset(vm.mem + GUEST_PD + 0x1000, 0, 8); /* 0x40000000 unmapped */
    CHECK_EQ(kvm_translate_gva(vm.kvm, 0, target, &gpa), -EFAULT);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, target, 1), 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    REQUIRE(log.n == 1);
    CHECK_EQ(log.ev[0].type, KVM_GDB_BREAKPOINT_SW);
    CHECK_EQ(log.ev[0].rip, target);
    CHECK_EQ(kvm_translate_gva(vm.kvm, 0, target, &gpa), 0);
    CHECK_EQ(gpa, target_gpa);
    CHECK_EQ(vm.mem[target_gpa], 0xcc); /* moved into memory at the stop */
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK_EQ(log.outs, 1);
    CHECK_EQ(kvm_remove_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, target, 1), 0);
    CHECK_EQ(vm.mem[target_gpa], remote_code_target[0]);
    test_vm_destroy(&vm);
}

static void breakpoint_in_code_loaded_later_is_armed_again_at_the_next_stop(void)
{
    const uint64_t sw = GUEST_LABEL_ADDR(straight, fifth);
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, straight) == 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, sw, 1), 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_HW, GUEST_LABEL_ADDR(straight, second), 1), 0);
    TEST_VM_LOAD_GUEST(&vm, straight); /* "loads" the code again over the int3 */
    CHECK(vm.mem[sw] != 0xcc);
    log.debug_result = 0;
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    REQUIRE(log.n == 2);
    CHECK_EQ(log.ev[0].type, KVM_GDB_BREAKPOINT_HW);
    CHECK_EQ(log.ev[1].type, KVM_GDB_BREAKPOINT_SW);
    CHECK_EQ(log.ev[1].rip, sw);
    CHECK_EQ(log.outs, 2);
    CHECK_EQ(kvm_remove_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, sw, 1), 0);
    CHECK_EQ(vm.mem[sw], straight_fifth[0]);
    test_vm_destroy(&vm);
}

/* Real-mode software breakpoints: where the host sends a real-mode int3 to
 * the guest's interrupt table (this project's emulating host), the library
 * keeps them in debug registers, so a fifth is -ENOSPC rather than an int3
 * the guest would take; elsewhere (VMX, SVM) they are int3 patches. Either
 * way the breakpoint stops there, reads show the guest's own bytes, and a
 * removal leaves the code as it was. */
static void real_mode_software_breakpoint_stops_there_on_every_host(void)
{
    const uint64_t target = GUEST_CODE + (uint64_t)(real_straight_target - real_straight_start);
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;
    uint8_t seen = 0;
    int in_register, i;

    memset(&log, 0, sizeof(log));
    memset(&cb, 0, sizeof(cb));
    log.debug_result = 1;
    cb.debug = log_debug;
    cb.outb = log_outb;
    cb.halt = test_stop_on_halt;
    REQUIRE(test_vm_create(&vm, &cb, &log, RAM, 0) == 0);
    log.kvm = vm.kvm;
    TEST_VM_LOAD_GUEST(&vm, real_straight);
    REQUIRE(test_vcpu_real_mode(&vm, 0, GUEST_CODE >> 4, 0) == 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, target, 1), 0);
    in_register = vm.mem[target] == real_straight_target[0];
    printf("  this host keeps real-mode software breakpoints in %s\n", in_register ? "debug registers" : "int3 patches");
    CHECK_EQ(kvm_read_guest_virt(vm.kvm, 0, target, &seen, 1), 0);
    CHECK_EQ(seen, real_straight_target[0]);
    /* Four more, at addresses the guest never runs. */
    for (i = 1; i <= 3; i++)
        CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, GUEST_CODE + 0x800 + (uint64_t)i, 1), 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, GUEST_CODE + 0x900, 1), in_register ? -ENOSPC : 0);
    CHECK_EQ(vm.mem[GUEST_CODE + 0x900], in_register ? 0 : 0xcc);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    REQUIRE(log.n == 1);
    CHECK_EQ(log.ev[0].type, KVM_GDB_BREAKPOINT_SW);
    CHECK_EQ(log.ev[0].rip, target - GUEST_CODE);
    CHECK_EQ(log.outs, 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK_EQ(log.outs, 1);
    kvm_remove_all_breakpoints(vm.kvm);
    CHECK_EQ(vm.mem[target], real_straight_target[0]);
    CHECK_EQ(vm.mem[GUEST_CODE + 0x900], 0);
    test_vm_destroy(&vm);
}

struct runner {
    kvm_context_t kvm;
    int vcpu, result;
};

static void *run_in_thread(void *arg)
{
    struct runner *r = arg;
    r->result = kvm_run(r->kvm, r->vcpu);
    return NULL;
}

static void breakpoint_on_the_second_vcpu_names_it(void)
{
    struct kvm_callbacks cb;
    struct debug_log log;
    struct runner runner;
    struct test_vm vm;
    pthread_t thread;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, straight) == 0);
    REQUIRE(kvm_create_vcpu(vm.kvm, 1) == 0);
    REQUIRE(test_vcpu_long_mode(&vm, 1, GUEST_CODE) == 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 1, KVM_GDB_BREAKPOINT_SW, GUEST_LABEL_ADDR(straight, fourth), 1), 0);
    runner.kvm = vm.kvm;
    runner.vcpu = 1;
    pthread_create(&thread, NULL, run_in_thread, &runner);
    pthread_join(thread, NULL);
    CHECK_EQ(runner.result, 1);
    REQUIRE(log.n == 1);
    CHECK_EQ(log.ev[0].vcpu, 1);
    CHECK_EQ(log.ev[0].rip, GUEST_LABEL_ADDR(straight, fourth));
    CHECK_EQ(rip_of(&vm, 0), GUEST_CODE); /* vcpu 0 never ran */
    test_vm_destroy(&vm);
}

/* What the churn test's vcpu saw. */
struct churn_run {
    kvm_context_t kvm;
    uint64_t outs, wrong_outs, reports, wrong_reports, bp;
    volatile int done;
    int result;
};

static int churn_outb(void *opaque, uint16_t port, uint8_t value)
{
    struct churn_run *c = opaque;
    c->outs++;
    if (port != 0x10 || value != (uint8_t)c->outs)
        c->wrong_outs++;
    return 0;
}

static int churn_debug(void *opaque, int vcpu, int type, uint64_t watch)
{
    struct churn_run *c = opaque;
    (void)watch;
    __atomic_add_fetch(&c->reports, 1, __ATOMIC_RELAXED);
    if (type != KVM_GDB_BREAKPOINT_SW || rip_of_kvm(c->kvm, vcpu) != c->bp)
        c->wrong_reports++;
    return 0; /* run on: the library steps over the breakpoint */
}

static void *churn_vcpu(void *arg)
{
    struct churn_run *c = arg;
    c->result = kvm_run(c->kvm, 0);
    c->done = 1;
    return NULL;
}

static void breakpoint_churn_from_another_thread_never_leaves_an_int3(void)
{
    enum { OPERATIONS = 20000 };
    struct kvm_callbacks cb;
    struct churn_run c;
    struct kvm_regs regs;
    struct test_vm vm;
    pthread_t thread;
    uint64_t reports_before;
    int i, errors = 0;

    memset(&cb, 0, sizeof(cb));
    memset(&c, 0, sizeof(c));
    cb.debug = churn_debug;
    cb.outb = churn_outb;
    cb.halt = test_stop_on_halt;
    REQUIRE(test_vm_create(&vm, &cb, &c, RAM, 0) == 0);
    c.kvm = vm.kvm;
    TEST_VM_LOAD_GUEST(&vm, count_until_told);
    REQUIRE(test_vcpu_long_mode(&vm, 0, GUEST_CODE) == 0);
    /* The vcpu stops on `say` and steps over it, again and again, while
     * this thread inserts, removes and removes all there. */
    c.bp = GUEST_LABEL_ADDR(count_until_told, say);
    REQUIRE(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, c.bp, 1) == 0);
    REQUIRE(pthread_create(&thread, NULL, churn_vcpu, &c) == 0);
    /* The churn starts once the vcpu runs and has stepped over the
     * breakpoint once: changes to a vcpu that does not run yet cost no
     * ioctl, and 20000 of them could be over before it starts. */
    for (i = 0; i < 10000 && __atomic_load_n(&c.reports, __ATOMIC_RELAXED) == 0 && !c.done; i++)
        usleep(1000);
    REQUIRE(__atomic_load_n(&c.reports, __ATOMIC_RELAXED) > 0);
    reports_before = __atomic_load_n(&c.reports, __ATOMIC_RELAXED);
    for (i = 0; i < OPERATIONS && !c.done; i++) {
        int r;
        switch (i % 5) {
        case 0:
        case 2:
            r = kvm_remove_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, c.bp, 1);
            break;
        case 4:
            kvm_remove_all_breakpoints(vm.kvm);
            r = 0;
            break;
        default:
            r = kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, c.bp, 1);
            break;
        }
        if (r != 0 && r != -ENOENT && r != -EEXIST)
            errors++;
    }
    printf("  %d breakpoint changes while the guest stepped over %llu hits and said %llu numbers\n", i,
           (unsigned long long)(__atomic_load_n(&c.reports, __ATOMIC_RELAXED) - reports_before),
           (unsigned long long)c.outs);
    CHECK_EQ(i, OPERATIONS); /* the guest was still running throughout */
    CHECK_EQ(errors, 0);
    *(volatile uint64_t *)(vm.mem + GUEST_DATA) = 1;
    pthread_join(thread, NULL);
    CHECK_EQ(c.result, 1); /* the halt */
    CHECK_EQ(c.wrong_outs, 0);
    CHECK_EQ(c.wrong_reports, 0);
    CHECK(c.reports > reports_before); /* hits during the churn */
    REQUIRE(kvm_get_regs(vm.kvm, 0, &regs) == 0);
    CHECK_EQ(regs.rax, c.outs);
    kvm_remove_all_breakpoints(vm.kvm);
    CHECK(memcmp(vm.mem + GUEST_CODE, count_until_told_start,
                 (size_t)(count_until_told_end - count_until_told_start)) == 0);
    test_vm_destroy(&vm);
}

static void guest_memory_by_virtual_address(void)
{
    struct kvm_gva_translation t;
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;
    uint8_t buf[8];
    uint64_t gpa;
    int i;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, straight) == 0);
    CHECK_EQ(kvm_translate_gva(vm.kvm, 0, 0x123456, &gpa), 0);
    CHECK_EQ(gpa, 0x123456);
    CHECK_EQ(kvm_translate_gva_ex(vm.kvm, 0, 0x123456, &t), 0);
    CHECK_EQ(t.page_size, 2 << 20);
    CHECK_EQ(t.writable, 1);
    CHECK_EQ(kvm_translate_gva(vm.kvm, 0, 0x200000000ULL, &gpa), -EFAULT);    /* beyond the map */
    CHECK_EQ(kvm_translate_gva(vm.kvm, 0, 0x0000800000000000ULL, &gpa), -EFAULT); /* non-canonical */

    /* Virtual 0x40000000-0x40001fff made of two 4 KiB pages in reverse order. */
    {
        uint64_t pt = 0x9000, e0 = 0x301000 | 3, e1 = 0x300000 | 3, pde = pt | 3;
        memset(vm.mem + pt, 0, 4096);
        memcpy(vm.mem + pt, &e0, 8);
        memcpy(vm.mem + pt + 8, &e1, 8);
        memcpy(vm.mem + GUEST_PD + 0x1000, &pde, 8);
    }
    for (i = 0; i < 4; i++) {
        vm.mem[0x301ffc + i] = (uint8_t)(0xa0 + i);
        vm.mem[0x300000 + i] = (uint8_t)(0xb0 + i);
    }
    CHECK_EQ(kvm_translate_gva_ex(vm.kvm, 0, 0x40001004, &t), 0);
    CHECK_EQ(t.gpa, 0x300004);
    CHECK_EQ(t.page_size, 4096);
    CHECK_EQ(kvm_read_guest_virt(vm.kvm, 0, 0x40000ffc, buf, 8), 0);
    CHECK_EQ(buf[0], 0xa0);
    CHECK_EQ(buf[3], 0xa3);
    CHECK_EQ(buf[4], 0xb0);
    CHECK_EQ(buf[7], 0xb3);
    memcpy(buf, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    CHECK_EQ(kvm_write_guest_virt(vm.kvm, 0, 0x40000ffe, buf, 8), 0);
    CHECK_EQ(vm.mem[0x301ffe], 1);
    CHECK_EQ(vm.mem[0x301fff], 2);
    CHECK_EQ(vm.mem[0x300000], 3);
    CHECK_EQ(vm.mem[0x300005], 8);
    /* A range running into unmapped memory fails whole. */
    CHECK_EQ(kvm_read_guest_virt(vm.kvm, 0, 0x40001ffc, buf, 8), -EFAULT);
    CHECK_EQ(kvm_read_guest_virt(vm.kvm, 0, 0x40000000, NULL, 8), -EFAULT);
    CHECK_EQ(kvm_read_guest_virt(vm.kvm, 0, 0x40000000, NULL, 0), 0);
    test_vm_destroy(&vm);
}

static void writes_over_a_breakpoint_keep_it_and_change_the_original(void)
{
    const uint64_t bp = GUEST_LABEL_ADDR(straight, third);
    struct kvm_callbacks cb;
    struct debug_log log;
    struct test_vm vm;
    uint8_t byte = 0x90, seen = 0;

    REQUIRE(DEBUG_VM(&vm, &log, &cb, straight) == 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, bp, 1), 0);
    CHECK_EQ(kvm_write_guest_virt(vm.kvm, 0, bp, &byte, 1), 0);
    CHECK_EQ(vm.mem[bp], 0xcc);
    CHECK_EQ(kvm_read_guest_virt(vm.kvm, 0, bp, &seen, 1), 0);
    CHECK_EQ(seen, 0x90);
    CHECK_EQ(kvm_remove_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, bp, 1), 0);
    CHECK_EQ(vm.mem[bp], 0x90);
    test_vm_destroy(&vm);
}

int main(void)
{
    check_set_timeout(240);
    RUN(software_breakpoint_reports_vcpu_type_and_pc);
    RUN(resuming_on_a_breakpoint_steps_over_it_and_it_stays_armed);
    RUN(a_debug_callback_returning_0_runs_on_through_every_hit);
    RUN(the_guest_runs_on_unstepped_after_the_step_over_a_breakpoint);
    RUN(removed_breakpoint_restores_the_byte_and_the_guest_continues);
    RUN(hardware_breakpoint_hits_and_resumes);
    RUN(single_step_reports_each_instruction);
    RUN(a_step_starts_where_the_vmm_moved_rip_at_the_last_one);
    RUN(single_steps_of_one_byte_instructions_halt_only_at_the_hlt);
    RUN(single_step_onto_an_unmapped_page_faults_in_the_guest);
    RUN(step_over_a_breakpoint_that_moves_the_stack_off_the_map);
    RUN(single_stepped_string_output_delivers_every_byte);
    RUN(single_step_over_a_software_breakpoint_reports_both);
    RUN(debug_register_write_watchpoint_reports_the_address);
    RUN(guest_int3_reaches_its_own_handler_while_the_library_debugs);
    RUN(guest_int3_runs_its_handler_without_any_debugging);
    RUN(guest_trap_flag_reaches_its_own_handler_while_the_library_debugs);
    RUN(old_debug_request_reports_every_int3);
    RUN(old_debug_request_hardware_breakpoint_and_singlestep);
    RUN(ten_thousand_breakpoints_leave_memory_identical);
    RUN(debug_registers_run_out_after_four);
    RUN(breakpoint_at_an_unmapped_address_waits_in_a_debug_register);
    RUN(breakpoint_in_code_loaded_later_is_armed_again_at_the_next_stop);
    RUN(real_mode_software_breakpoint_stops_there_on_every_host);
    RUN(breakpoint_on_the_second_vcpu_names_it);
    RUN(breakpoint_churn_from_another_thread_never_leaves_an_int3);
    RUN(guest_memory_by_virtual_address);
    RUN(writes_over_a_breakpoint_keep_it_and_change_the_original);
    return check_summary();
}

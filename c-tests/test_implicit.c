/*
 * Watched pages the CPU uses by itself (issue 11, cases 3 and 4): a
 * watchpoint on a variable that shares its page with a GDT whose
 * descriptors get their accessed bit set, with sgdt/lgdt operands, the
 * IDT, the stack an exception is delivered on, the TSS the IST comes from,
 * the page tables, string stores, or a store across the page edge. Each
 * case runs in 64-bit and in 32-bit guests, write-watched and
 * read-watched, always asking for page protection.
 *
 * Every case asserts the first rule: the guest completes, and all of its
 * memory afterwards is byte for byte what the same guest left without the
 * watchpoint. And the watchpoint fires on the variable, with its address
 * and type. Where page protection cannot keep the page (it would stop the
 * guest) the library moves the watchpoint into a debug register; on a host
 * whose debug registers never fire it suspends the watchpoint on that page
 * instead, and the test says so with a skipped: line for the firing part.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "guest.h"

DECLARE_GUEST(imp64_gdt);
DECLARE_GUEST(imp64_sgdt);
DECLARE_GUEST(imp64_ud);
DECLARE_GUEST_LABEL(imp64_ud, handler);
DECLARE_GUEST(imp64_plain);
DECLARE_GUEST(imp64_string);
DECLARE_GUEST(imp32_gdt);
DECLARE_GUEST(imp32_sgdt);
DECLARE_GUEST(imp32_ud);
DECLARE_GUEST_LABEL(imp32_ud, handler);
DECLARE_GUEST(imp32_plain);
DECLARE_GUEST(imp32_string);

enum { RAM = 8 << 20, THE_PAGE = 0x20000, IST_STACK = 0x60000, MAX_HITS = 64, MAGIC = 0x1234 };

enum mode { LONG_MODE, PROTECTED_MODE, PROTECTED_PAGING };

/* How the case's page is used, and whether protecting it for a write or a
 * read watchpoint would stop the guest (the library must step aside). */
struct page_use {
    const char *what;
    int breaks_write, breaks_read;
};

static const struct page_use DESCRIPTORS = {"GDT", 0, 1};
static const struct page_use OPERANDS = {"sgdt/lgdt operands", 0, 0};
static const struct page_use IDT = {"IDT", 0, 1};
static const struct page_use STACK = {"exception stack", 1, 1};
static const struct page_use TSS = {"TSS", 0, 1};
static const struct page_use PAGE_TABLES = {"page tables", 1, 1};
static const struct page_use STRINGS = {"string stores", 0, 0};
static const struct page_use PAGE_EDGE = {"a store across the page edge", 0, 0};

struct implicit_case {
    const char *name;
    enum mode mode;
    const uint8_t *start, *end;
    const struct page_use *use;
    uint64_t var;
    void (*setup)(struct test_vm *vm, struct kvm_sregs *sregs);
};

struct run_log {
    kvm_context_t kvm;
    int hits, outs;
    int type[MAX_HITS];
    uint64_t addr[MAX_HITS];
    uint32_t out;
};

static int log_debug(void *opaque, int vcpu, int type, uint64_t addr)
{
    struct run_log *log = opaque;
    (void)vcpu;
    if (log->hits < MAX_HITS) {
        log->type[log->hits] = type;
        log->addr[log->hits] = addr;
    }
    log->hits++;
    return 0;
}

static int log_out(void *opaque, uint16_t port, uint32_t value)
{
    struct run_log *log = opaque;
    (void)port;
    log->outs++;
    log->out = value;
    return 0;
}

static void put_u64(struct test_vm *vm, uint64_t gpa, uint64_t value)
{
    memcpy(vm->mem + gpa, &value, sizeof(value));
}

/* A GDT on the page whose code and data descriptors were never used: the
 * CPU sets their accessed bits when the guest loads them. */
static void fresh_gdt(struct test_vm *vm, struct kvm_sregs *sregs)
{
    int long_mode = sregs->efer & 0x400;
    put_u64(vm, THE_PAGE, 0);
    put_u64(vm, THE_PAGE + 8, long_mode ? 0x00af9a000000ffffULL : 0x00cf9a000000ffffULL);
    put_u64(vm, THE_PAGE + 16, 0x00cf92000000ffffULL);
    sregs->gdt.base = THE_PAGE;
    sregs->gdt.limit = 3 * 8 - 1;
}

static void ud_gate(struct test_vm *vm, struct kvm_sregs *sregs)
{
    if (sregs->efer & 0x400) {
        test_vm_set_idt_gate(vm, 6, GUEST_LABEL_ADDR(imp64_ud, handler));
        sregs->idt.limit = 32 * 16 - 1;
    } else {
        test_vm_set_idt_gate32(vm, 6, (uint32_t)GUEST_LABEL_ADDR(imp32_ud, handler));
        sregs->idt.limit = 32 * 8 - 1;
    }
}

/* #UD through IST 1, which the CPU reads from a TSS on the page. */
static void tss_with_ist(struct test_vm *vm, struct kvm_sregs *sregs)
{
    ud_gate(vm, sregs);
    vm->mem[GUEST_IDT + 16 * 6 + 4] = 1;
    memset(vm->mem + THE_PAGE, 0, 0x68);
    put_u64(vm, THE_PAGE + 36, IST_STACK);
    sregs->tr.base = THE_PAGE;
    sregs->tr.limit = 0x67;
}

static void nothing(struct test_vm *vm, struct kvm_sregs *sregs)
{
    (void)vm, (void)sregs;
}

#define GUEST(name) name##_start, name##_end
static const struct implicit_case cases[] = {
    {"64-bit descriptor loads", LONG_MODE, GUEST(imp64_gdt), &DESCRIPTORS, THE_PAGE + 0x800, fresh_gdt},
    {"64-bit sgdt/lgdt/sidt/lidt", LONG_MODE, GUEST(imp64_sgdt), &OPERANDS, THE_PAGE + 0x800, nothing},
    {"64-bit exception through the IDT", LONG_MODE, GUEST(imp64_ud), &IDT, GUEST_IDT + 0x800, ud_gate},
    {"64-bit exception frame on the stack", LONG_MODE, GUEST(imp64_ud), &STACK, GUEST_STACK_TOP - 0x800, ud_gate},
    {"64-bit IST from the TSS", LONG_MODE, GUEST(imp64_ud), &TSS, THE_PAGE + 0x800, tss_with_ist},
    {"64-bit page walks", LONG_MODE, GUEST(imp64_plain), &PAGE_TABLES, GUEST_PML4 + 0x800, nothing},
    {"64-bit rep stosb", LONG_MODE, GUEST(imp64_string), &STRINGS, THE_PAGE + 0x800, nothing},
    {"64-bit store across a page edge", LONG_MODE, GUEST(imp64_plain), &PAGE_EDGE, THE_PAGE + 0xffc, nothing},
    {"32-bit descriptor loads", PROTECTED_MODE, GUEST(imp32_gdt), &DESCRIPTORS, THE_PAGE + 0x800, fresh_gdt},
    {"32-bit sgdt/lgdt/sidt/lidt", PROTECTED_MODE, GUEST(imp32_sgdt), &OPERANDS, THE_PAGE + 0x800, nothing},
    {"32-bit exception through the IDT", PROTECTED_MODE, GUEST(imp32_ud), &IDT, GUEST_IDT + 0x800, ud_gate},
    {"32-bit exception frame on the stack", PROTECTED_MODE, GUEST(imp32_ud), &STACK, GUEST_STACK_TOP - 0x800,
     ud_gate},
    {"32-bit page walks", PROTECTED_PAGING, GUEST(imp32_plain), &PAGE_TABLES, GUEST_PML4 + 0x800, nothing},
    {"32-bit rep stosb", PROTECTED_MODE, GUEST(imp32_string), &STRINGS, THE_PAGE + 0x800, nothing},
    {"32-bit store across a page edge", PROTECTED_MODE, GUEST(imp32_plain), &PAGE_EDGE, THE_PAGE + 0xffc,
     nothing},
};

/* Runs the case's guest, watched by `type` (or unwatched for -1); returns
 * kvm_run's result and leaves the VM in `vm` for the caller to look at. */
static int run_case(const struct implicit_case *c, int type, struct test_vm *vm, struct run_log *log)
{
    struct kvm_callbacks cb;
    struct kvm_sregs sregs;
    struct kvm_regs regs;
    int r;

    memset(log, 0, sizeof(*log));
    memset(&cb, 0, sizeof(cb));
    cb.debug = log_debug;
    cb.outl = log_out;
    cb.halt = test_stop_on_halt;
    if (test_vm_create(vm, &cb, log, RAM, 0) < 0)
        return -1;
    log->kvm = vm->kvm;
    test_vm_load(vm, GUEST_CODE, c->start, c->end);
    r = c->mode == LONG_MODE ? test_vcpu_long_mode(vm, 0, GUEST_CODE)
                             : test_vcpu_protected_mode(vm, 0, GUEST_CODE, c->mode == PROTECTED_PAGING);
    if (r < 0 || kvm_get_sregs(vm->kvm, 0, &sregs) < 0 || kvm_get_regs(vm->kvm, 0, &regs) < 0)
        return -1;
    c->setup(vm, &sregs);
    regs.rbx = c->var;
    if (kvm_set_sregs(vm->kvm, 0, &sregs) < 0 || kvm_set_regs(vm->kvm, 0, &regs) < 0)
        return -1;
    if (type >= 0 && (kvm_set_watchpoint_method(vm->kvm, KVM_WATCH_PAGE_PROTECTION) < 0 ||
                      kvm_insert_breakpoint(vm->kvm, 0, type, c->var, 8) < 0))
        return -2;
    return kvm_run(vm->kvm, 0);
}

/* Whether debug-register data breakpoints fire on this host: a register
 * write watchpoint on the variable of the plain guest. */
static int host_fires_data_breakpoints(void)
{
    static int answer = -1;
    struct kvm_callbacks cb;
    struct kvm_regs regs;
    struct run_log log;
    struct test_vm vm;

    if (answer >= 0)
        return answer;
    answer = 0;
    memset(&log, 0, sizeof(log));
    memset(&cb, 0, sizeof(cb));
    cb.debug = log_debug;
    cb.outl = log_out;
    cb.halt = test_stop_on_halt;
    if (test_vm_create(&vm, &cb, &log, RAM, 0) < 0)
        return answer;
    TEST_VM_LOAD_GUEST(&vm, imp64_plain);
    if (test_vcpu_long_mode(&vm, 0, GUEST_CODE) == 0 && kvm_get_regs(vm.kvm, 0, &regs) == 0) {
        regs.rbx = THE_PAGE + 0x800;
        if (kvm_set_regs(vm.kvm, 0, &regs) == 0 && kvm_set_watchpoint_method(vm.kvm, KVM_WATCH_DEBUG_REGISTERS) == 0 &&
            kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_WRITE, THE_PAGE + 0x800, 8) == 0 &&
            kvm_run(vm.kvm, 0) == 1)
            answer = log.hits > 0;
    }
    test_vm_destroy(&vm);
    return answer;
}

/* Whether 32-bit guests with paging run on this host at all. */
static int host_runs_32bit_paging(void)
{
    struct run_log log;
    struct test_vm vm;
    int r = run_case(&cases[12], -1, &vm, &log);
    int runs = r == 1 && log.out == MAGIC;
    test_vm_destroy(&vm);
    return runs;
}

static void run_both_ways(const struct implicit_case *c, int type, const char *kind)
{
    const struct page_use *use = c->use;
    int breaks = type == KVM_GDB_WATCHPOINT_WRITE ? use->breaks_write : use->breaks_read;
    int fires = !breaks || host_fires_data_breakpoints();
    struct test_vm plain, watched;
    struct run_log plain_log, watched_log;
    int i, r;

    printf("  case: %s, %s-watched (%s)\n", c->name, kind, use->what);
    if (c->mode == PROTECTED_PAGING && !host_runs_32bit_paging()) {
        printf("  skipped: this host does not run 32-bit guests with paging (they triple-fault unwatched)\n");
        return;
    }
    r = run_case(c, -1, &plain, &plain_log);
    if (r != 1 || plain_log.out != MAGIC) {
        printf("  skipped: this host cannot run the guest even unwatched (kvm_run %d, out %#x)\n", r,
               plain_log.out);
        test_vm_destroy(&plain);
        return;
    }
    r = run_case(c, type, &watched, &watched_log);
    CHECK_EQ(r, 1);
    CHECK_EQ(watched_log.outs, 1);
    CHECK_EQ(watched_log.out, MAGIC);
    if (plain.mem && watched.mem && memcmp(plain.mem, watched.mem, RAM) != 0) {
        for (i = 0; i < RAM && plain.mem[i] == watched.mem[i]; i++)
            ;
        printf("  guest memory differs from the unwatched run first at %#x: %#x, not %#x\n", i, watched.mem[i],
               plain.mem[i]);
        CHECK(0);
    }
    if (fires) {
        CHECK(watched_log.hits >= 1);
        for (i = 0; i < watched_log.hits && i < MAX_HITS; i++) {
            CHECK_EQ(watched_log.type[i], type);
            CHECK_EQ(watched_log.addr[i], c->var);
        }
    } else {
        CHECK_EQ(watched_log.hits, 0);
        printf("  skipped: firing on the %s page needs a debug register, and this host's never fire "
               "(the watchpoint is suspended there; the guest's completion and memory were checked)\n",
               use->what);
    }
    test_vm_destroy(&plain);
    test_vm_destroy(&watched);
}

static void every_implicit_use_completes_exactly_and_fires_write_watched(void)
{
    size_t i;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_both_ways(&cases[i], KVM_GDB_WATCHPOINT_WRITE, "write");
}

static void every_implicit_use_completes_exactly_and_fires_read_watched(void)
{
    size_t i;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_both_ways(&cases[i], KVM_GDB_WATCHPOINT_READ, "read");
}

int main(void)
{
    check_set_timeout(300);
    RUN(every_implicit_use_completes_exactly_and_fires_write_watched);
    RUN(every_implicit_use_completes_exactly_and_fires_read_watched);
    return check_summary();
}

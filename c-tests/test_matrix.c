/*
 * Debug events that meet (issue 11): every pair of {software breakpoint,
 * hardware breakpoint, single step, write/read/access watchpoint by page
 * protection and by debug register} at the same instruction and at
 * adjacent ones, over a guest that also does port I/O, an MMIO store, its
 * own int3 and its own trap flag, and halts. Each pair runs with the
 * debug callback returning 0 and 1, with both from the start, with the
 * first removed at the first stop, and with the second inserted at the
 * first stop. The cases are generated; a small model of what a debugger's
 * user expects gives the exact sequence of reports and guest I/O each must
 * produce, and the guest must finish with its registers and memory as
 * without any debugging.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "guest.h"

DECLARE_GUEST(matrix);
DECLARE_GUEST_LABEL(matrix, m0);
DECLARE_GUEST_LABEL(matrix, m1);
DECLARE_GUEST_LABEL(matrix, m2);
DECLARE_GUEST_LABEL(matrix, m3);
DECLARE_GUEST_LABEL(matrix, m4);
DECLARE_GUEST_LABEL(matrix, m5);
DECLARE_GUEST_LABEL(matrix, m6);
DECLARE_GUEST_LABEL(matrix, m7);
DECLARE_GUEST_LABEL(matrix, m8);
DECLARE_GUEST_LABEL(matrix, m9);
DECLARE_GUEST_LABEL(matrix, m10);
DECLARE_GUEST_LABEL(matrix, m11);
DECLARE_GUEST_LABEL(matrix, m12);
DECLARE_GUEST_LABEL(matrix, bp_handler);
DECLARE_GUEST_LABEL(matrix, db_handler);

enum { RAM = 4 << 20, LABELS = 13, MAX_EVENTS = 64, MMIO_ADDR = 0xa0000, HALTED = 2 };

static uint64_t label_addr[LABELS];

/* What the test puts in the guest. */
enum item_kind { SW, HW, STEP2, W_PAGE, R_PAGE, A_PAGE, W_REG, R_REG, A_REG, ITEM_KINDS };
static const char *item_names[ITEM_KINDS] = {"sw", "hw", "step2", "write/page", "read/page", "access/page",
                                             "write/reg", "read/reg", "access/reg"};

struct item {
    enum item_kind kind;
    int label; /* SW, HW, STEP2: the instruction; watchpoints are on GUEST_DATA */
};

enum variant { BOTH_FROM_START, REMOVE_FIRST_AT_FIRST_STOP, INSERT_SECOND_AT_FIRST_STOP, VARIANTS };
static const char *variant_names[VARIANTS] = {"both", "remove-first", "insert-second"};

struct matrix_case {
    struct item a, b;
    int callback_result;
    enum variant variant;
};

/* One thing the run shows: a report to `debug`, or the guest's I/O. */
struct event {
    char what;      /* 'S' 'H' 'T' (step) 'W' (watchpoint) 'I' (port) 'M' (mmio) */
    unsigned types; /* for 'W': the KVM_GDB_* types any of which may be reported */
    uint64_t value; /* pc of a report, port of 'I' */
};

static int is_exec(enum item_kind k)
{
    return k == SW || k == HW || k == STEP2;
}

static int is_register_watch(enum item_kind k)
{
    return k == W_REG || k == R_REG || k == A_REG;
}

static int watch_type(enum item_kind k)
{
    switch (k) {
    case W_PAGE:
    case W_REG:
        return KVM_GDB_WATCHPOINT_WRITE;
    case R_PAGE:
    case R_REG:
        return KVM_GDB_WATCHPOINT_READ;
    default:
        return KVM_GDB_WATCHPOINT_ACCESS;
    }
}

/* Whether watchpoint `k` fires on the guest's store (m2) or load (m3). A
 * register read watchpoint fires on stores too: x86 has no read-only
 * condition. */
static int fires(enum item_kind k, int is_store)
{
    switch (k) {
    case W_PAGE:
    case W_REG:
        return is_store;
    case R_PAGE:
        return !is_store;
    default:
        return 1;
    }
}

/* ---- the model ---- */

struct model {
    const struct matrix_case *c;
    int active[2];
    int just_inserted; /* the last report inserted the second item */
    int stops;
    int steps_left;
    struct event ev[MAX_EVENTS];
    int n;
};

static void model_emit(struct model *m, char what, unsigned types, uint64_t value)
{
    if (m->n < MAX_EVENTS)
        m->ev[m->n] = (struct event){what, types, value};
    m->n++;
}

/* A report: the test's callback acts at the first one. */
static void model_report(struct model *m, char what, unsigned types, uint64_t pc, const struct item *by)
{
    model_emit(m, what, types, pc);
    if (m->stops++ == 0) {
        if (m->c->variant == REMOVE_FIRST_AT_FIRST_STOP)
            m->active[0] = 0;
        if (m->c->variant == INSERT_SECOND_AT_FIRST_STOP)
            m->active[1] = m->just_inserted = 1;
    }
    if (by && by->kind == STEP2)
        m->steps_left = 2;
}

static const struct item *item_of(struct model *m, int i)
{
    return i == 0 ? &m->c->a : &m->c->b;
}

/* The reports before the instruction at label `y`: hardware breakpoints
 * (a fault before the fetch), then software ones (the int3 in its place);
 * each breakpoint once per arrival, one report for a software breakpoint
 * both items put there. A breakpoint inserted at a breakpoint stop at the
 * same address is stepped over with it, as gdb does. */
static void model_arrive(struct model *m, int y)
{
    int reported_hw = 0, reported_sw = 0, i, again = 1, passed_second = 0;
    m->just_inserted = 0;
    while (again) {
        again = 0;
        for (i = 0; i < 2; i++) {
            const struct item *it = item_of(m, i);
            if (m->active[i] && !(i == 1 && passed_second) && it->kind == HW && it->label == y && !reported_hw) {
                reported_hw = 1;
                model_report(m, 'H', 0, label_addr[y], it);
                passed_second |= m->just_inserted;
                again = 1;
                break;
            }
        }
        if (again)
            continue;
        for (i = 0; i < 2; i++) {
            const struct item *it = item_of(m, i);
            if (m->active[i] && !(i == 1 && passed_second) && (it->kind == SW || it->kind == STEP2) &&
                it->label == y && !reported_sw) {
                const struct item *other = item_of(m, 1 - i);
                int step = it->kind == STEP2 || (m->active[1 - i] && other->kind == STEP2 && other->label == y);
                struct item as = {step ? STEP2 : SW, y};
                reported_sw = 1;
                model_report(m, 'S', 0, label_addr[y], &as);
                passed_second |= m->just_inserted;
                again = 1;
                break;
            }
        }
    }
}

/* After the instruction at `y`, which went on to `next`: a watchpoint
 * report (one for the access, of any type that fired), then the step. */
static void model_after(struct model *m, int y, uint64_t next)
{
    unsigned types = 0;
    int i;
    if (y == 2 || y == 3)
        for (i = 0; i < 2; i++)
            if (m->active[i] && !is_exec(item_of(m, i)->kind) && fires(item_of(m, i)->kind, y == 2))
                types |= 1u << watch_type(item_of(m, i)->kind);
    if (types) {
        model_report(m, 'W', types, next, NULL);
        if (m->steps_left > 0)
            m->steps_left--; /* one stop for the instruction: the watchpoint's */
    } else if (m->steps_left > 0) {
        m->steps_left--;
        model_emit(m, 'T', 0, next);
        m->stops++;
    }
}

static void model_run(const struct matrix_case *c, struct model *m)
{
    int y;
    memset(m, 0, sizeof(*m));
    m->c = c;
    m->active[0] = 1;
    m->active[1] = c->variant != INSERT_SECOND_AT_FIRST_STOP;
    for (y = 0; y < LABELS; y++) {
        model_arrive(m, y);
        if (y == 12)
            break; /* hlt */
        if (y == 1)
            model_emit(m, 'I', 0, 0x10);
        if (y == 4)
            model_emit(m, 'M', 0, MMIO_ADDR);
        if (y == 5)
            model_emit(m, 'I', 0, 0x33); /* the guest's #BP handler */
        if (y == 9)
            model_emit(m, 'I', 0, 0x31); /* the guest's #DB handler */
        if (y == 11)
            model_emit(m, 'I', 0, 0x11);
        model_after(m, y, label_addr[y + 1]);
    }
}

/* ---- the real run ---- */

struct run {
    const struct matrix_case *c;
    struct test_vm vm;
    int stops, steps_left;
    struct event ev[MAX_EVENTS];
    int n;
    int errors;
};

static void record(struct run *r, char what, unsigned types, uint64_t value)
{
    if (r->n < MAX_EVENTS)
        r->ev[r->n] = (struct event){what, types, value};
    r->n++;
}

/* The breakpoint an item is: its type, guest address and length. */
static int item_type(const struct item *it)
{
    return it->kind == HW ? KVM_GDB_BREAKPOINT_HW : is_exec(it->kind) ? KVM_GDB_BREAKPOINT_SW : watch_type(it->kind);
}

static uint64_t item_addr(const struct item *it)
{
    return is_exec(it->kind) ? label_addr[it->label] : GUEST_DATA;
}

static uint64_t item_len(const struct item *it)
{
    return is_exec(it->kind) ? 1 : 8;
}

static int insert_item(struct run *r, const struct item *it)
{
    kvm_set_watchpoint_method(r->vm.kvm, is_register_watch(it->kind) ? KVM_WATCH_DEBUG_REGISTERS
                                                                     : KVM_WATCH_PAGE_PROTECTION);
    return kvm_insert_breakpoint(r->vm.kvm, 0, item_type(it), item_addr(it), item_len(it));
}

static int remove_item(struct run *r, const struct item *it)
{
    return kvm_remove_breakpoint(r->vm.kvm, 0, item_type(it), item_addr(it), item_len(it));
}

static int on_debug(void *opaque, int vcpu, int type, uint64_t watch)
{
    struct run *r = opaque;
    struct kvm_regs regs;
    uint64_t pc = kvm_get_regs(r->vm.kvm, vcpu, &regs) == 0 ? regs.rip : 0;
    const struct matrix_case *c = r->c;

    switch (type) {
    case KVM_GDB_BREAKPOINT_SW:
        record(r, 'S', 0, pc);
        break;
    case KVM_GDB_BREAKPOINT_HW:
        record(r, 'H', 0, pc);
        break;
    case KVM_GDB_SINGLESTEP:
        record(r, 'T', 0, pc);
        if (--r->steps_left == 0)
            kvm_set_singlestep(r->vm.kvm, vcpu, 0);
        break;
    default:
        record(r, 'W', 1u << type, pc);
        if (watch != GUEST_DATA)
            r->errors++;
        /* A step's instruction that fires a watchpoint stops once. */
        if (r->steps_left > 0 && --r->steps_left == 0)
            kvm_set_singlestep(r->vm.kvm, vcpu, 0);
        break;
    }
    if (type != KVM_GDB_SINGLESTEP && r->stops == 0) {
        if (c->variant == REMOVE_FIRST_AT_FIRST_STOP && remove_item(r, &c->a) < 0)
            r->errors++;
        if (c->variant == INSERT_SECOND_AT_FIRST_STOP && insert_item(r, &c->b) < 0)
            r->errors++;
    }
    if (type == KVM_GDB_BREAKPOINT_SW) {
        /* A step2 item in force here: two steps from this stop. */
        int a_active = c->variant != REMOVE_FIRST_AT_FIRST_STOP || r->stops == 0;
        int b_active = c->variant != INSERT_SECOND_AT_FIRST_STOP || r->stops > 0;
        if ((a_active && c->a.kind == STEP2 && pc == label_addr[c->a.label]) ||
            (b_active && c->b.kind == STEP2 && pc == label_addr[c->b.label])) {
            r->steps_left = 2;
            kvm_set_singlestep(r->vm.kvm, vcpu, 1);
        }
    }
    r->stops++;
    /* A case that reports without end fails rather than spins. */
    return r->n >= MAX_EVENTS ? 1 : c->callback_result;
}

static int on_out(void *opaque, uint16_t port, uint8_t value)
{
    (void)value;
    record(opaque, 'I', 0, port);
    return 0;
}

static int on_mmio_write(void *opaque, uint64_t addr, uint8_t *data, int len)
{
    (void)data, (void)len;
    record(opaque, 'M', 0, addr);
    return 0;
}

static int on_halt(void *opaque, int vcpu)
{
    (void)opaque, (void)vcpu;
    return HALTED;
}

/* Runs the case; returns 0 when it went as the model says. */
static char current_case[160];

static void on_case_timeout(int sig)
{
    (void)sig;
    /* Only async-signal-safe calls here. */
    if (write(STDOUT_FILENO, "  case hangs: ", 14) < 0 ||
        write(STDOUT_FILENO, current_case, strlen(current_case)) < 0 || write(STDOUT_FILENO, "\n", 1) < 0)
        _exit(2);
    _exit(1);
}

static void describe(const struct matrix_case *c, char *out, size_t size)
{
    snprintf(out, size, "%s@m%d + %s@m%d, callback %d, %s", item_names[c->a.kind], c->a.label,
             item_names[c->b.kind], c->b.label, c->callback_result, variant_names[c->variant]);
}

static int run_case(const struct matrix_case *c, int verbose)
{
    static struct run r;
    struct kvm_callbacks cb;
    struct kvm_regs regs;
    struct model m;
    int i, result, rounds = 0, ok = 1;

    memset(&regs, 0, sizeof(regs));
    describe(c, current_case, sizeof(current_case));
    alarm(10);
    memset(&r, 0, sizeof(r));
    r.c = c;
    memset(&cb, 0, sizeof(cb));
    cb.debug = on_debug;
    cb.outb = on_out;
    cb.mmio_write = on_mmio_write;
    cb.halt = on_halt;
    if (test_vm_create(&r.vm, &cb, &r, RAM, 0) < 0)
        return -1;
    TEST_VM_LOAD_GUEST(&r.vm, matrix);
    if (test_vcpu_long_mode(&r.vm, 0, GUEST_CODE) < 0)
        return -1;
    test_vm_set_idt_gate(&r.vm, 3, GUEST_LABEL_ADDR(matrix, bp_handler));
    test_vm_set_idt_gate(&r.vm, 1, GUEST_LABEL_ADDR(matrix, db_handler));
    if (insert_item(&r, &c->a) < 0 || (c->variant != INSERT_SECOND_AT_FIRST_STOP && insert_item(&r, &c->b) < 0)) {
        printf("  insert failed\n");
        ok = 0;
    }
    do
        result = kvm_run(r.vm.kvm, 0);
    while (ok && result == 1 && c->callback_result == 1 && r.n < MAX_EVENTS && ++rounds < MAX_EVENTS);
    /* Every byte the breakpoints took comes back. */
    kvm_remove_all_breakpoints(r.vm.kvm);
    model_run(c, &m);
    ok = ok && result == HALTED && r.errors == 0 && r.n == m.n;
    for (i = 0; ok && i < m.n && i < MAX_EVENTS; i++)
        ok = r.ev[i].what == m.ev[i].what && r.ev[i].value == m.ev[i].value &&
             (r.ev[i].what != 'W' || (r.ev[i].types & m.ev[i].types) != 0);
    if (kvm_get_regs(r.vm.kvm, 0, &regs) == 0)
        ok = ok && regs.rax == 6 && regs.rcx == 1 && (regs.rflags & 0x100) == 0;
    ok = ok && *(uint64_t *)(r.vm.mem + GUEST_DATA) == 1 && memcmp(r.vm.mem + GUEST_CODE, matrix_start,
                                                                     (size_t)(matrix_end - matrix_start)) == 0;
    if (!ok && verbose) {
        printf("  case %s: kvm_run %d, %d errors, rax %llu, rcx %llu, rflags %#llx, data %llu, code %s\n",
               current_case, result, r.errors, (unsigned long long)regs.rax, (unsigned long long)regs.rcx,
               (unsigned long long)regs.rflags, (unsigned long long)*(uint64_t *)(r.vm.mem + GUEST_DATA),
               memcmp(r.vm.mem + GUEST_CODE, matrix_start, (size_t)(matrix_end - matrix_start)) ? "changed" : "intact");
        printf("    expected:");
        for (i = 0; i < m.n && i < MAX_EVENTS; i++)
            printf(" %c%#llx", m.ev[i].what, (unsigned long long)m.ev[i].value);
        printf("\n    got:     ");
        for (i = 0; i < r.n && i < MAX_EVENTS; i++)
            printf(" %c%#llx", r.ev[i].what, (unsigned long long)r.ev[i].value);
        printf("\n");
    }
    test_vm_destroy(&r.vm);
    alarm(0);
    return ok ? 0 : 1;
}

/* Whether debug-register data breakpoints fire on this host. */
static int host_fires_data_breakpoints(void)
{
    struct matrix_case probe = {{W_REG, 0}, {W_REG, 0}, 0, BOTH_FROM_START};
    return run_case(&probe, 0) == 0;
}

/* Whether `name` has one of the '|'-separated parts of `filter`. */
static int matches_filter(const char *name, const char *filter)
{
    char part[160];
    while (*filter) {
        size_t n = strcspn(filter, "|");
        snprintf(part, sizeof(part), "%.*s", (int)n, filter);
        if (strstr(name, part))
            return 1;
        filter += n + (filter[n] == '|');
    }
    return 0;
}

static int labels_for(enum item_kind k)
{
    return k == STEP2 ? 4 : is_exec(k) ? LABELS : 1;
}

static void every_pair_of_debug_events_reports_exactly_and_the_guest_finishes(void)
{
    /* MATRIX_FILTER=<text>|<text>...: only the cases whose description has one;
     * MATRIX_ALL=1: show every failing case, not the first 20. */
    const char *filter = getenv("MATRIX_FILTER");
    int registers = host_fires_data_breakpoints();
    int a, b, x, near, ret, variant, cases = 0, failed = 0, shown = 0, skipped = 0;

    for (a = 0; a < ITEM_KINDS; a++)
        for (b = 0; b < ITEM_KINDS; b++)
            for (x = 0; x < labels_for((enum item_kind)a); x++)
                for (near = 0; near < 2; near++) {
                    struct matrix_case c;
                    int y = is_exec((enum item_kind)b) ? x + near : 0;
                    if (!is_exec((enum item_kind)a) && is_exec((enum item_kind)b))
                        y = near; /* a watchpoint with a breakpoint at m0/m1: the b-first pairs cover the rest */
                    if (y >= labels_for((enum item_kind)b) || (!is_exec((enum item_kind)b) && near))
                        continue;
                    c.a = (struct item){(enum item_kind)a, x};
                    c.b = (struct item){(enum item_kind)b, y};
                    if (!registers && (is_register_watch(c.a.kind) || is_register_watch(c.b.kind))) {
                        skipped += 2 * VARIANTS;
                        continue;
                    }
                    for (ret = 0; ret < 2; ret++)
                        for (variant = 0; variant < VARIANTS; variant++) {
                            char name[160];
                            c.callback_result = ret;
                            c.variant = (enum variant)variant;
                            describe(&c, name, sizeof(name));
                            if (filter && !matches_filter(name, filter))
                                continue;
                            cases++;
                            if (run_case(&c, shown < 20 || getenv("MATRIX_ALL")) != 0) {
                                failed++;
                                shown++;
                            }
                        }
                }
    printf("  %d cases, %d failed\n", cases, failed);
    if (skipped)
        printf("  skipped: %d cases with debug-register watchpoints: this host's never fire\n", skipped);
    CHECK_EQ(failed, 0);
}

int main(void)
{
    static const uint8_t *const labels[LABELS] = {matrix_m0, matrix_m1, matrix_m2, matrix_m3,  matrix_m4,
                                                  matrix_m5, matrix_m6, matrix_m7, matrix_m8,  matrix_m9,
                                                  matrix_m10, matrix_m11, matrix_m12};
    int i;

    setvbuf(stdout, NULL, _IONBF, 0);
    signal(SIGALRM, on_case_timeout);
    for (i = 0; i < LABELS; i++)
        label_addr[i] = guest_code_addr(matrix_start, labels[i]);
    RUN(every_pair_of_debug_events_reports_exactly_and_the_guest_finishes);
    return check_summary();
}

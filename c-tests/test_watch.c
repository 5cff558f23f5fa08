/*
 * Watchpoints by page protection, with real guests: they fire on every
 * host, in any number, with the store completed as the guest meant it;
 * loads of a write-watched page run free; a read watchpoint reports the
 * load and the guest gets the right value; removing them restores memory
 * and slots; string output from a read-watched page delivers every byte;
 * code can run from a write-watched page; a read watchpoint on running code
 * is refused.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "guest.h"

DECLARE_GUEST(store_and_load);
DECLARE_GUEST_LABEL(store_and_load, after_store);
DECLARE_GUEST(hundred_pages);
DECLARE_GUEST(two_on_a_page);
DECLARE_GUEST(load_watched);
DECLARE_GUEST_LABEL(load_watched, after_load);
DECLARE_GUEST(code_page_store);
DECLARE_GUEST(jump_to_data);
DECLARE_GUEST_LABEL(code_page_store, code_var);
DECLARE_GUEST(string_out); /* in debug.S */
DECLARE_GUEST(poll_and_load);
DECLARE_GUEST_LABEL(poll_and_load, poller);

enum { RAM = 8 << 20, MAX_HITS = 200, MAX_OUT_BYTES = 8192 };

struct watch_log {
    kvm_context_t kvm;
    int hits;
    int type[MAX_HITS];
    uint64_t addr[MAX_HITS], rip[MAX_HITS];
    int outs;
    uint32_t out_value;
    uint8_t out_bytes[MAX_OUT_BYTES]; /* what outb wrote, in order */
    int mmio_calls;
    int debug_result;
};

static int log_debug(void *opaque, int vcpu, int type, uint64_t addr)
{
    struct watch_log *log = opaque;
    struct kvm_regs regs;
    if (log->hits < MAX_HITS) {
        log->type[log->hits] = type;
        log->addr[log->hits] = addr;
        log->rip[log->hits] = kvm_get_regs(log->kvm, vcpu, &regs) == 0 ? regs.rip : 0;
    }
    log->hits++;
    return log->debug_result;
}

static int log_out(void *opaque, uint16_t port, uint32_t value)
{
    struct watch_log *log = opaque;
    (void)port;
    log->outs++;
    log->out_value = value;
    return 0;
}

static int log_outb(void *opaque, uint16_t port, uint8_t value)
{
    struct watch_log *log = opaque;
    if (log->outs < MAX_OUT_BYTES)
        log->out_bytes[log->outs] = value;
    return log_out(opaque, port, value);
}

static int log_mmio(void *opaque, uint64_t addr, uint8_t *data, int len)
{
    (void)addr, (void)data, (void)len;
    ((struct watch_log *)opaque)->mmio_calls++;
    return 0;
}

static int watch_vm(struct test_vm *vm, struct watch_log *log, struct kvm_callbacks *cb, const uint8_t *start,
                    const uint8_t *end)
{
    memset(log, 0, sizeof(*log));
    memset(cb, 0, sizeof(*cb));
    cb->debug = log_debug;
    cb->outb = log_outb;
    cb->outl = log_out;
    cb->mmio_read = log_mmio;
    cb->mmio_write = log_mmio;
    cb->halt = test_stop_on_halt;
    if (test_vm_create(vm, cb, log, RAM, 0) < 0)
        return -1;
    log->kvm = vm->kvm;
    test_vm_load(vm, GUEST_CODE, start, end);
    /* Always page protection, whatever the host does with debug registers. */
    if (kvm_set_watchpoint_method(vm->kvm, KVM_WATCH_PAGE_PROTECTION) < 0)
        return -1;
    return test_vcpu_long_mode(vm, 0, GUEST_CODE);
}

#define WATCH_VM(vm, log, cb, name) watch_vm((vm), (log), (cb), name##_start, name##_end)

static uint64_t reg(struct test_vm *vm, int which)
{
    struct kvm_regs r;
    kvm_get_regs(vm->kvm, 0, &r);
    return which == 'a' ? r.rax : which == 'c' ? r.rcx : r.rdx;
}

static void write_watchpoint_stops_after_the_store_with_its_address_and_value(void)
{
    struct kvm_debug_exit_info info;
    struct kvm_callbacks cb;
    struct watch_log log;
    struct test_vm vm;
    uint64_t stored;

    REQUIRE(WATCH_VM(&vm, &log, &cb, store_and_load) == 0);
    memcpy(vm.mem + GUEST_DATA + 0x10, "\x99\x88\x77\x66\x55\x44\x33\x22", 8);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_WRITE, GUEST_DATA + 8, 8), 0);
    log.debug_result = 1;
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    REQUIRE(log.hits == 1);
    CHECK_EQ(log.type[0], KVM_GDB_WATCHPOINT_WRITE);
    CHECK_EQ(log.addr[0], GUEST_DATA + 8);
    CHECK_EQ(log.rip[0], GUEST_LABEL_ADDR(store_and_load, after_store));
    memcpy(&stored, vm.mem + GUEST_DATA + 8, 8);
    CHECK_EQ(stored, 0x1122334455667788ULL);
    CHECK_EQ(reg(&vm, 'c'), 0x2233445566778899ULL); /* the load before ran, unwatched */
    CHECK_EQ(kvm_get_debug_exit_info(vm.kvm, 0, &info), 0);
    CHECK_EQ(info.watch_addr, GUEST_DATA + 8);
    CHECK_EQ(info.watch_len, 8);
    CHECK_EQ(info.hw_index, -1);
    /* On to the halt: the load of the watched range itself does not stop. */
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK_EQ(log.hits, 1);
    CHECK_EQ(reg(&vm, 'd'), 0x1122334455667788ULL);
    CHECK_EQ(log.outs, 1);
    CHECK_EQ(log.mmio_calls, 0); /* the VMM never saw the protection */
    test_vm_destroy(&vm);
}

static void a_hundred_watchpoints_on_a_hundred_pages_all_fire(void)
{
    struct kvm_callbacks cb;
    struct watch_log log;
    struct test_vm vm;
    int i, in_order = 1;

    REQUIRE(WATCH_VM(&vm, &log, &cb, hundred_pages) == 0);
    for (i = 0; i < 100; i++)
        REQUIRE(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_WRITE, GUEST_DATA + 4096 * (uint64_t)i, 8) == 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK_EQ(log.hits, 100);
    for (i = 0; i < 100 && i < log.hits; i++) {
        uint64_t value;
        in_order &= log.addr[i] == GUEST_DATA + 4096 * (uint64_t)i;
        memcpy(&value, vm.mem + GUEST_DATA + 4096 * (uint64_t)i, 8);
        in_order &= value == (uint64_t)(100 - i);
    }
    CHECK(in_order);
    for (i = 0; i < 100; i++)
        CHECK_EQ(kvm_remove_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_WRITE, GUEST_DATA + 4096 * (uint64_t)i, 8), 0);
    test_vm_destroy(&vm);
}

static void two_watchpoints_on_one_page_each_fire(void)
{
    struct kvm_callbacks cb;
    struct watch_log log;
    struct test_vm vm;

    REQUIRE(WATCH_VM(&vm, &log, &cb, two_on_a_page) == 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_WRITE, GUEST_DATA + 0x100, 4), 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_ACCESS, GUEST_DATA + 0x800, 4), 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    REQUIRE(log.hits == 2);
    CHECK_EQ(log.type[0], KVM_GDB_WATCHPOINT_WRITE);
    CHECK_EQ(log.addr[0], GUEST_DATA + 0x100);
    CHECK_EQ(log.type[1], KVM_GDB_WATCHPOINT_ACCESS);
    CHECK_EQ(log.addr[1], GUEST_DATA + 0x800);
    CHECK_EQ(vm.mem[GUEST_DATA + 0x100], 1);
    CHECK_EQ(vm.mem[GUEST_DATA + 0x800], 2);
    /* Removing one keeps the other. */
    CHECK_EQ(kvm_remove_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_ACCESS, GUEST_DATA + 0x800, 4), 0);
    CHECK_EQ(kvm_remove_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_ACCESS, GUEST_DATA + 0x800, 4), -ENOENT);
    test_vm_destroy(&vm);
}

static void read_watchpoint_reports_the_load_and_the_guest_gets_its_value(void)
{
    struct kvm_callbacks cb;
    struct watch_log log;
    struct test_vm vm;

    REQUIRE(WATCH_VM(&vm, &log, &cb, load_watched) == 0);
    memcpy(vm.mem + GUEST_DATA + 0x40, "\x78\x56\x34\x12\xf0\xde\xbc\x9a", 8);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_READ, GUEST_DATA + 0x44, 2), 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    REQUIRE(log.hits == 1);
    CHECK_EQ(log.type[0], KVM_GDB_WATCHPOINT_READ);
    CHECK_EQ(log.addr[0], GUEST_DATA + 0x44);
    CHECK_EQ(log.rip[0], GUEST_LABEL_ADDR(load_watched, after_load));
    CHECK_EQ(reg(&vm, 'a'), 0x9abcdef012345678ULL);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK_EQ(log.out_value, 0x12345678);
    test_vm_destroy(&vm);
}

struct slot_list {
    int n;
    unsigned long start[16], len[16];
};

static int note_slot(unsigned long start, unsigned long len, void *bitmap, void *opaque)
{
    struct slot_list *l = opaque;
    (void)bitmap;
    if (l->n < 16) {
        l->start[l->n] = start;
        l->len[l->n] = len;
    }
    l->n++;
    return 0;
}

static int page_is_dirty(kvm_context_t kvm, uint64_t gpa)
{
    static uint8_t bitmap[RAM / 4096 / 8];
    uint64_t page = (gpa - 0xc0000) / 4096;
    if (kvm_get_dirty_pages(kvm, gpa, bitmap) < 0)
        return -1;
    return (bitmap[page / 8] >> (page % 8)) & 1;
}

static void removal_restores_the_slots_and_dirty_logging_and_aliases_keep_working(void)
{
    static uint8_t bitmap[RAM / 4096 / 8];
    struct slot_list before, during, after;
    struct kvm_callbacks cb;
    struct watch_log log;
    struct test_vm vm;
    struct kvm_regs regs;
    uint64_t stored;

    REQUIRE(WATCH_VM(&vm, &log, &cb, store_and_load) == 0);
    memset(&before, 0, sizeof(before));
    memset(&during, 0, sizeof(during));
    memset(&after, 0, sizeof(after));
    CHECK_EQ(kvm_get_mem_map_range(vm.kvm, 0, 1UL << 32, bitmap, &before, note_slot), 0);
    CHECK_EQ(kvm_dirty_pages_log_enable_all(vm.kvm), 0);
    CHECK_EQ(kvm_create_memory_alias(vm.kvm, 0x10000000, 4096, GUEST_DATA), 0);
    CHECK_EQ(page_is_dirty(vm.kvm, GUEST_DATA), 0);

    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_ACCESS, GUEST_DATA + 8, 8), 0);
    CHECK_EQ(kvm_get_mem_map_range(vm.kvm, 0, 1UL << 32, bitmap, &during, note_slot), 0);
    CHECK_EQ(during.n, before.n + 1); /* the alias; the watched page is still RAM to the VMM */
    log.debug_result = 0;
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK(log.hits >= 1);
    /* The store the library completed is dirty like any other. */
    CHECK_EQ(page_is_dirty(vm.kvm, GUEST_DATA), 1);
    memcpy(&stored, vm.mem + GUEST_DATA + 8, 8);
    CHECK_EQ(stored, 0x1122334455667788ULL);

    CHECK_EQ(kvm_remove_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_ACCESS, GUEST_DATA + 8, 8), 0);
    CHECK_EQ(kvm_destroy_memory_alias(vm.kvm, 0x10000000), 0);
    CHECK_EQ(kvm_get_mem_map_range(vm.kvm, 0, 1UL << 32, bitmap, &after, note_slot), 0);
    CHECK_EQ(after.n, before.n);
    CHECK(memcmp(after.start, before.start, sizeof(before.start)) == 0);
    CHECK(memcmp(after.len, before.len, sizeof(before.len)) == 0);
    /* Run the guest again: no stop, and KVM logs the store itself. */
    log.hits = 0;
    REQUIRE(kvm_get_regs(vm.kvm, 0, &regs) == 0);
    regs.rip = GUEST_CODE;
    REQUIRE(kvm_set_regs(vm.kvm, 0, &regs) == 0);
    memset(vm.mem + GUEST_DATA + 8, 0, 8);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK_EQ(log.hits, 0);
    /* Watching another page of the slot re-cuts it; the store KVM logged
     * before that is still dirty. */
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_WRITE, GUEST_DATA + 0x4000, 8), 0);
    CHECK_EQ(kvm_remove_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_WRITE, GUEST_DATA + 0x4000, 8), 0);
    CHECK_EQ(page_is_dirty(vm.kvm, GUEST_DATA), 1);
    CHECK_EQ(page_is_dirty(vm.kvm, GUEST_DATA), 0);
    CHECK_EQ(log.mmio_calls, 0);
    test_vm_destroy(&vm);
}

/* `rep outsb` from a read-watched page: the library completes each load
 * and the port output that follows it; the VMM gets every byte. */
static void string_output_from_a_read_watched_page_delivers_every_byte(void)
{
    enum { N = 6000 };
    struct kvm_callbacks cb;
    struct watch_log log;
    struct test_vm vm;
    int i, wrong = 0;

    REQUIRE(WATCH_VM(&vm, &log, &cb, string_out) == 0);
    for (i = 0; i < N; i++)
        vm.mem[GUEST_DATA + i] = (uint8_t)(i * 7 + i / 256);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_READ, GUEST_DATA + 4096, 8), 0);
    log.debug_result = 0;
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK(log.hits >= 1);
    CHECK_EQ(log.type[0], KVM_GDB_WATCHPOINT_READ);
    CHECK_EQ(log.outs, N);
    for (i = 0; i < N && i < log.outs; i++)
        wrong += log.out_bytes[i] != vm.mem[GUEST_DATA + i];
    CHECK_EQ(wrong, 0);
    test_vm_destroy(&vm);
}

static void code_runs_from_a_write_watched_page(void)
{
    const uint64_t var = GUEST_LABEL_ADDR(code_page_store, code_var);
    struct kvm_callbacks cb;
    struct watch_log log;
    struct test_vm vm;

    REQUIRE(WATCH_VM(&vm, &log, &cb, code_page_store) == 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_WRITE, var, 4), 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1); /* debug_result 0: runs on to the halt */
    CHECK_EQ(log.hits, 10);
    CHECK_EQ(vm.mem[var], 1);
    test_vm_destroy(&vm);
}

static void read_watchpoint_on_running_code_is_refused(void)
{
    const uint64_t var = GUEST_LABEL_ADDR(code_page_store, code_var);
    struct kvm_callbacks cb;
    struct watch_log log;
    struct test_vm vm;

    REQUIRE(WATCH_VM(&vm, &log, &cb, code_page_store) == 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_ACCESS, var, 4), -EBUSY);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_READ, var, 4), -EBUSY);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK_EQ(log.hits, 0);
    test_vm_destroy(&vm);
}

/* A vcpu that jumps into a page unbacked for a read watchpoint would never
 * fetch its code: the library backs the page again (reads there are no
 * longer watched, writes are) and the guest runs on. */
struct poller {
    kvm_context_t kvm;
    int result;
};

static void *run_poller(void *arg)
{
    struct poller *p = arg;
    p->result = kvm_run(p->kvm, 1);
    return NULL;
}

/* A vcpu polling a flag on a watched page repeats the same access with the
 * same registers, as KVM retrying an instruction would: it must not be
 * stepped through with the protections lifted, which would let the other
 * vcpu's watched loads through unseen. */
static void a_vcpu_polling_a_watched_page_hides_no_access_of_another(void)
{
    struct kvm_callbacks cb;
    struct watch_log log;
    struct poller poller;
    struct test_vm vm;
    pthread_t thread;
    int i, wrong = 0;

    REQUIRE(WATCH_VM(&vm, &log, &cb, poll_and_load) == 0);
    REQUIRE(kvm_create_vcpu(vm.kvm, 1) == 0);
    REQUIRE(test_vcpu_long_mode(&vm, 1, GUEST_LABEL_ADDR(poll_and_load, poller)) == 0);
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_READ, GUEST_DATA, 8), 0);
    poller.kvm = vm.kvm;
    REQUIRE(pthread_create(&thread, NULL, run_poller, &poller) == 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1); /* the halt, the callback returning 0 at each hit */
    pthread_join(thread, NULL);
    CHECK_EQ(poller.result, 1);
    CHECK_EQ(log.hits, 2000);
    for (i = 0; i < log.hits && i < MAX_HITS; i++)
        wrong += log.type[i] != KVM_GDB_WATCHPOINT_READ || log.addr[i] != GUEST_DATA;
    CHECK_EQ(wrong, 0);
    test_vm_destroy(&vm);
}

static void jumping_into_a_read_watched_page_runs_on(void)
{
    struct kvm_callbacks cb;
    struct watch_log log;
    struct test_vm vm;

    REQUIRE(WATCH_VM(&vm, &log, &cb, jump_to_data) == 0);
    vm.mem[GUEST_DATA + 0x200] = 0xe6; /* out %al, $0x10 */
    vm.mem[GUEST_DATA + 0x201] = 0x10;
    vm.mem[GUEST_DATA + 0x202] = 0xf4; /* hlt */
    CHECK_EQ(kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_ACCESS, GUEST_DATA + 0x100, 8), 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK_EQ(log.outs, 1);
    CHECK_EQ(log.hits, 0);
    test_vm_destroy(&vm);
}

int main(void)
{
    check_set_timeout(120);
    RUN(write_watchpoint_stops_after_the_store_with_its_address_and_value);
    RUN(a_hundred_watchpoints_on_a_hundred_pages_all_fire);
    RUN(two_watchpoints_on_one_page_each_fire);
    RUN(read_watchpoint_reports_the_load_and_the_guest_gets_its_value);
    RUN(removal_restores_the_slots_and_dirty_logging_and_aliases_keep_working);
    RUN(string_output_from_a_read_watched_page_delivers_every_byte);
    RUN(code_runs_from_a_write_watched_page);
    RUN(read_watchpoint_on_running_code_is_refused);
    RUN(jumping_into_a_read_watched_page_runs_on);
    RUN(a_vcpu_polling_a_watched_page_hides_no_access_of_another);
    return check_summary();
}

/*
 * The run loop: port I/O of each size and direction, string I/O, MMIO,
 * hlt, triple-fault shutdown, pre/post hooks, signals and io_window, in
 * real-mode and 64-bit guests, and the 2008 reset-vector boot.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "guest.h"

DECLARE_GUEST(io_sizes);
DECLARE_GUEST(string_io);
DECLARE_GUEST(mmio);
DECLARE_GUEST(triple_fault);
DECLARE_GUEST(spin);
DECLARE_GUEST(real_mode_io);

enum { IO_IN, IO_OUT };

struct io_event {
    int direction;
    uint16_t port;
    int size;
    uint32_t value;
};

/* Records what the guest did through the callbacks. */
struct recorder {
    struct io_event io[64];
    int n_io;
    uint32_t next_in;
    int halts, shutdowns, pre_runs, post_runs, io_windows;
    uint64_t mmio_write_addr, mmio_read_addr;
    uint8_t mmio_write_data[8];
    int mmio_write_len, mmio_read_len;
};

static void record(struct recorder *r, int direction, uint16_t port, int size, uint32_t value)
{
    if (r->n_io < (int)(sizeof(r->io) / sizeof(r->io[0]))) {
        struct io_event *e = &r->io[r->n_io];
        e->direction = direction;
        e->port = port;
        e->size = size;
        e->value = value;
    }
    r->n_io++;
}

/* Port inputs return next_in (then next_in + 1, ...), truncated to the size. */
static int rec_inb(void *opaque, uint16_t port, uint8_t *data)
{
    struct recorder *r = opaque;
    *data = (uint8_t)r->next_in++;
    record(r, IO_IN, port, 1, *data);
    return 0;
}

static int rec_inw(void *opaque, uint16_t port, uint16_t *data)
{
    struct recorder *r = opaque;
    *data = (uint16_t)r->next_in++;
    record(r, IO_IN, port, 2, *data);
    return 0;
}

static int rec_inl(void *opaque, uint16_t port, uint32_t *data)
{
    struct recorder *r = opaque;
    *data = r->next_in++;
    record(r, IO_IN, port, 4, *data);
    return 0;
}

static int rec_outb(void *opaque, uint16_t port, uint8_t data)
{
    record(opaque, IO_OUT, port, 1, data);
    return 0;
}

static int rec_outw(void *opaque, uint16_t port, uint16_t data)
{
    record(opaque, IO_OUT, port, 2, data);
    return 0;
}

static int rec_outl(void *opaque, uint16_t port, uint32_t data)
{
    record(opaque, IO_OUT, port, 4, data);
    return 0;
}

static int rec_mmio_read(void *opaque, uint64_t addr, uint8_t *data, int len)
{
    struct recorder *r = opaque;
    uint64_t value = 0x1122334455667788ULL;
    r->mmio_read_addr = addr;
    r->mmio_read_len = len;
    memcpy(data, &value, (size_t)len);
    return 0;
}

static int rec_mmio_write(void *opaque, uint64_t addr, uint8_t *data, int len)
{
    struct recorder *r = opaque;
    r->mmio_write_addr = addr;
    r->mmio_write_len = len;
    memcpy(r->mmio_write_data, data, (size_t)len);
    return 0;
}

static int rec_halt(void *opaque, int vcpu)
{
    (void)vcpu;
    ((struct recorder *)opaque)->halts++;
    return 1;
}

static int rec_shutdown(void *opaque, int vcpu)
{
    (void)vcpu;
    ((struct recorder *)opaque)->shutdowns++;
    return 2;
}

static int rec_pre(void *opaque, int vcpu)
{
    (void)vcpu;
    ((struct recorder *)opaque)->pre_runs++;
    return 0;
}

static void rec_post(void *opaque, int vcpu)
{
    (void)vcpu;
    ((struct recorder *)opaque)->post_runs++;
}

static int rec_io_window(void *opaque)
{
    ((struct recorder *)opaque)->io_windows++;
    return 3;
}

static struct kvm_callbacks recorder_callbacks(void)
{
    struct kvm_callbacks cb;
    memset(&cb, 0, sizeof(cb));
    cb.inb = rec_inb;
    cb.inw = rec_inw;
    cb.inl = rec_inl;
    cb.outb = rec_outb;
    cb.outw = rec_outw;
    cb.outl = rec_outl;
    cb.mmio_read = rec_mmio_read;
    cb.mmio_write = rec_mmio_write;
    cb.halt = rec_halt;
    cb.shutdown = rec_shutdown;
    cb.pre_kvm_run = rec_pre;
    cb.post_kvm_run = rec_post;
    cb.io_window = rec_io_window;
    return cb;
}

static void check_io(const struct io_event *e, int direction, uint16_t port, int size, uint32_t value)
{
    CHECK_EQ(e->direction, direction);
    CHECK_EQ(e->port, port);
    CHECK_EQ(e->size, size);
    CHECK_EQ(e->value, value);
}

static void port_io_of_each_size_flows_both_ways(void)
{
    struct kvm_callbacks cb = recorder_callbacks();
    struct recorder rec;
    struct test_vm vm;

    memset(&rec, 0, sizeof(rec));
    rec.next_in = 0xa1b2c3d4;
    REQUIRE(test_vm_create(&vm, &cb, &rec, 4 << 20, 0) == 0);
    TEST_VM_LOAD_GUEST(&vm, io_sizes);
    REQUIRE(test_vcpu_long_mode(&vm, 0, GUEST_CODE) == 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK_EQ(rec.halts, 1);
    REQUIRE(rec.n_io == 9);
    check_io(&rec.io[0], IO_OUT, 0x10, 1, 0x12);
    check_io(&rec.io[1], IO_OUT, 0x12, 2, 0x1234);
    check_io(&rec.io[2], IO_OUT, 0x14, 4, 0x12345678);
    check_io(&rec.io[3], IO_IN, 0x20, 1, 0xd4);
    check_io(&rec.io[4], IO_OUT, 0x30, 1, 0xd4);
    check_io(&rec.io[5], IO_IN, 0x22, 2, 0xc3d5);
    check_io(&rec.io[6], IO_OUT, 0x32, 2, 0xc3d5);
    check_io(&rec.io[7], IO_IN, 0x24, 4, 0xa1b2c3d6);
    check_io(&rec.io[8], IO_OUT, 0x34, 4, 0xa1b2c3d6);
    test_vm_destroy(&vm);
}

static void pre_and_post_run_hooks_bracket_every_kvm_run(void)
{
    struct kvm_callbacks cb = recorder_callbacks();
    struct recorder rec;
    struct test_vm vm;

    memset(&rec, 0, sizeof(rec));
    REQUIRE(test_vm_create(&vm, &cb, &rec, 4 << 20, 0) == 0);
    TEST_VM_LOAD_GUEST(&vm, io_sizes);
    REQUIRE(test_vcpu_long_mode(&vm, 0, GUEST_CODE) == 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    /* 9 port exits and the hlt: one KVM_RUN each. */
    CHECK_EQ(rec.pre_runs, 10);
    CHECK_EQ(rec.post_runs, 10);
    test_vm_destroy(&vm);
}

static void string_io_calls_the_handler_once_per_element(void)
{
    struct kvm_callbacks cb = recorder_callbacks();
    struct recorder rec;
    struct test_vm vm;
    int i;

    memset(&rec, 0, sizeof(rec));
    rec.next_in = 1;
    REQUIRE(test_vm_create(&vm, &cb, &rec, 4 << 20, 0) == 0);
    TEST_VM_LOAD_GUEST(&vm, string_io);
    REQUIRE(test_vcpu_long_mode(&vm, 0, GUEST_CODE) == 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    REQUIRE(rec.n_io == 9);
    for (i = 0; i < 5; i++)
        check_io(&rec.io[i], IO_OUT, 0x40, 1, (uint8_t) "hello"[i]);
    for (i = 0; i < 4; i++) {
        check_io(&rec.io[5 + i], IO_IN, 0x41, 1, (uint32_t)(i + 1));
        CHECK_EQ(vm.mem[GUEST_DATA + i], i + 1);
    }
    test_vm_destroy(&vm);
}

static void mmio_store_and_load_reach_the_handlers(void)
{
    struct kvm_callbacks cb = recorder_callbacks();
    struct recorder rec;
    struct kvm_regs regs;
    struct test_vm vm;
    uint32_t stored;

    memset(&rec, 0, sizeof(rec));
    REQUIRE(test_vm_create(&vm, &cb, &rec, 4 << 20, 0) == 0);
    TEST_VM_LOAD_GUEST(&vm, mmio);
    REQUIRE(test_vcpu_long_mode(&vm, 0, GUEST_CODE) == 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    CHECK_EQ(rec.mmio_write_addr, 0xa0000);
    CHECK_EQ(rec.mmio_write_len, 4);
    memcpy(&stored, rec.mmio_write_data, 4);
    CHECK_EQ(stored, 0xcafef00d);
    CHECK_EQ(rec.mmio_read_addr, 0xa0008);
    CHECK_EQ(rec.mmio_read_len, 8);
    REQUIRE(kvm_get_regs(vm.kvm, 0, &regs) == 0);
    CHECK_EQ(regs.rax, 0x1122334455667788ULL);
    test_vm_destroy(&vm);
}

static void triple_fault_calls_shutdown(void)
{
    struct kvm_callbacks cb = recorder_callbacks();
    struct recorder rec;
    struct test_vm vm;

    memset(&rec, 0, sizeof(rec));
    REQUIRE(test_vm_create(&vm, &cb, &rec, 4 << 20, 0) == 0);
    TEST_VM_LOAD_GUEST(&vm, triple_fault);
    REQUIRE(test_vcpu_long_mode(&vm, 0, GUEST_CODE) == 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 2);
    CHECK_EQ(rec.shutdowns, 1);
    CHECK_EQ(rec.halts, 0);
    test_vm_destroy(&vm);
}

static void real_mode_guest_does_port_io(void)
{
    struct kvm_callbacks cb = recorder_callbacks();
    struct recorder rec;
    struct test_vm vm;

    memset(&rec, 0, sizeof(rec));
    rec.next_in = 0x5a;
    REQUIRE(test_vm_create(&vm, &cb, &rec, 4 << 20, 0) == 0);
    TEST_VM_LOAD_GUEST(&vm, real_mode_io);
    REQUIRE(test_vcpu_real_mode(&vm, 0, GUEST_CODE >> 4, 0) == 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    REQUIRE(rec.n_io == 3);
    check_io(&rec.io[0], IO_OUT, 0x10, 1, 0x41);
    check_io(&rec.io[1], IO_IN, 0x11, 1, 0x5a);
    check_io(&rec.io[2], IO_OUT, 0x12, 1, 0x5a);
    test_vm_destroy(&vm);
}

/* The 2008 way: a BIOS at 0xF0000 whose last 16 bytes hold the reset jump,
 * run from the vcpu's reset state without touching any register. */
static void bios_at_0xf0000_runs_from_the_reset_vector(void)
{
    struct kvm_callbacks cb = recorder_callbacks();
    struct recorder rec;
    struct test_vm vm;
    /* mov $0x42,%al; out %al,$0x10; hlt */
    static const uint8_t bios_code[] = {0xb0, 0x42, 0xe6, 0x10, 0xf4};
    /* ljmp $0xf000,$0x0000 */
    static const uint8_t reset_jump[] = {0xea, 0x00, 0x00, 0x00, 0xf0};

    memset(&rec, 0, sizeof(rec));
    REQUIRE(test_vm_create(&vm, &cb, &rec, 2 << 20, 0) == 0);
    memcpy(vm.mem + 0xf0000, bios_code, sizeof(bios_code));
    memcpy(vm.mem + 0xffff0, reset_jump, sizeof(reset_jump));
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    REQUIRE(rec.n_io == 1);
    check_io(&rec.io[0], IO_OUT, 0x10, 1, 0x42);
    test_vm_destroy(&vm);
}

static void nothing(int sig)
{
    (void)sig;
}

struct kicker {
    pthread_t target;
    int signal;
};

static void *kick_after_delay(void *arg)
{
    struct kicker *k = arg;
    struct timespec delay = {0, 50 * 1000 * 1000};
    nanosleep(&delay, NULL);
    pthread_kill(k->target, k->signal);
    return NULL;
}

/* SIGUSR1 is blocked in the thread and unblocked only in guest mode
 * (kvm_set_signal_mask), so it interrupts KVM_RUN: io_window runs. */
static void signal_in_guest_mode_reaches_io_window(void)
{
    struct kvm_callbacks cb = recorder_callbacks();
    struct sigaction action;
    struct recorder rec;
    sigset_t block, guest_mask, old;
    struct kicker kicker;
    struct test_vm vm;
    pthread_t thread;

    memset(&rec, 0, sizeof(rec));
    memset(&action, 0, sizeof(action));
    action.sa_handler = nothing;
    sigaction(SIGUSR1, &action, NULL);
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    sigemptyset(&guest_mask);

    REQUIRE(test_vm_create(&vm, &cb, &rec, 4 << 20, 0) == 0);
    TEST_VM_LOAD_GUEST(&vm, spin);
    REQUIRE(test_vcpu_long_mode(&vm, 0, GUEST_CODE) == 0);
    CHECK_EQ(kvm_set_signal_mask(vm.kvm, 0, &guest_mask), 0);
    kicker.target = pthread_self();
    kicker.signal = SIGUSR1;
    pthread_create(&thread, NULL, kick_after_delay, &kicker);
    CHECK_EQ(kvm_run(vm.kvm, 0), 3);
    pthread_join(thread, NULL);
    CHECK_EQ(rec.io_windows, 1);
    CHECK_EQ(rec.pre_runs, rec.post_runs);
    CHECK_EQ(kvm_set_signal_mask(vm.kvm, 0, NULL), 0);
    test_vm_destroy(&vm);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static int stop_on_first_pre_run(void *opaque, int vcpu)
{
    (void)opaque;
    (void)vcpu;
    return 7;
}

static void pre_run_can_end_kvm_run_before_the_guest_runs(void)
{
    struct kvm_callbacks cb = recorder_callbacks();
    struct recorder rec;
    struct test_vm vm;

    cb.pre_kvm_run = stop_on_first_pre_run;
    memset(&rec, 0, sizeof(rec));
    REQUIRE(test_vm_create(&vm, &cb, &rec, 4 << 20, 0) == 0);
    TEST_VM_LOAD_GUEST(&vm, io_sizes);
    REQUIRE(test_vcpu_long_mode(&vm, 0, GUEST_CODE) == 0);
    CHECK_EQ(kvm_run(vm.kvm, 0), 7);
    CHECK_EQ(rec.n_io, 0);
    CHECK_EQ(rec.post_runs, 0);
    test_vm_destroy(&vm);
}

static void null_callbacks_get_the_documented_defaults(void)
{
    struct kvm_callbacks cb;
    struct kvm_regs regs;
    struct test_vm vm;

    memset(&cb, 0, sizeof(cb));
    REQUIRE(test_vm_create(&vm, &cb, NULL, 4 << 20, 0) == 0);
    TEST_VM_LOAD_GUEST(&vm, io_sizes);
    REQUIRE(test_vcpu_long_mode(&vm, 0, GUEST_CODE) == 0);
    /* Inputs read all ones, outputs are dropped, hlt ends kvm_run with 1. */
    CHECK_EQ(kvm_run(vm.kvm, 0), 1);
    REQUIRE(kvm_get_regs(vm.kvm, 0, &regs) == 0);
    CHECK_EQ(regs.rax & 0xffffffff, 0xffffffff);
    test_vm_destroy(&vm);
}

int main(void)
{
    check_set_timeout(120);
    RUN(port_io_of_each_size_flows_both_ways);
    RUN(pre_and_post_run_hooks_bracket_every_kvm_run);
    RUN(string_io_calls_the_handler_once_per_element);
    RUN(mmio_store_and_load_reach_the_handlers);
    RUN(triple_fault_calls_shutdown);
    RUN(real_mode_guest_does_port_io);
    RUN(bios_at_0xf0000_runs_from_the_reset_vector);
    RUN(signal_in_guest_mode_reaches_io_window);
    RUN(pre_run_can_end_kvm_run_before_the_guest_runs);
    RUN(null_callbacks_get_the_documented_defaults);
    return check_summary();
}

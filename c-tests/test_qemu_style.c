/*
 * A VMM written the way qemu-kvm (June 2008) was: it owns its RAM and
 * passes kvm_create the address of its RAM pointer, registers RAM around
 * the VGA window and a BIOS ROM at the top of 4 GiB with its own
 * kvm_cpu_register_physical_memory-like logic, creates vcpu 0 itself,
 * drives its own PIC whenever kvm_set_irq_level says the kernel has none,
 * uses coalesced MMIO, and changes dirty logging and the memory layout
 * while the guest runs, as live migration and device models do.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "guest.h"
#include "guests/clients.h"

DECLARE_GUEST(read_rom);
DECLARE_GUEST(pic_interrupts);
DECLARE_GUEST_LABEL(pic_interrupts, irq4);
DECLARE_GUEST(coalesced_writes);
DECLARE_GUEST(layout_churn);

enum { RAM = 16 << 20, IRQ = 4, DONE = 2 };

/* The VMM's own 8259 master, for when the kernel has none. */
struct vmm_pic {
    pthread_mutex_t lock;
    int icw_step; /* which initialisation word comes next on port 0x21 */
    uint8_t base, imr, irr;
    int in_service;
    int injected;
};

struct qemu_vm {
    struct test_vm view; /* kvm, ram and its size, for the guest helpers */
    uint8_t *ram, *bios;
    struct vmm_pic pic;
    volatile int guest_ready;
    /* Coalesced MMIO as the VMM saw it. */
    uint32_t writes[2 * QEMU_COALESCED_WRITES];
    int n_writes, writes_before_port_exit, bad_address;
};

/* kvm_cpu_register_physical_memory, in the manner of qemu-kvm: RAM that
 * covers part of an existing slot first gets a hole cut for it. */
static int register_phys_mem(kvm_context_t kvm, unsigned long start, void *host, unsigned long size)
{
    int r;

    if (kvm_is_allocated_mem(kvm, start, size))
        return 0;
    if (kvm_is_intersecting_mem(kvm, start)) {
        r = kvm_create_mem_hole(kvm, start, size);
        if (r < 0)
            return r;
    }
    return kvm_register_userspace_phys_mem(kvm, start, host, size, 0);
}

/* The VMM's PIC takes a line (the kernel said it has none). */
static void vmm_pic_raise(struct vmm_pic *pic, int irq)
{
    pthread_mutex_lock(&pic->lock);
    pic->irr |= (uint8_t)(1 << irq);
    pthread_mutex_unlock(&pic->lock);
}

static void set_irq(struct qemu_vm *q, int irq, int level)
{
    /* qemu's i8259 code: non-zero means the in-kernel irqchip has the line. */
    if (kvm_set_irq_level(q->view.kvm, irq, level))
        return;
    if (level)
        vmm_pic_raise(&q->pic, irq);
}

static int qemu_outb(void *opaque, uint16_t port, uint8_t value)
{
    struct qemu_vm *q = opaque;
    struct vmm_pic *pic = &q->pic;

    switch (port) {
    case 0x10:
        if (value == 1) {
            q->guest_ready = 1;
            q->writes_before_port_exit = q->n_writes;
        }
        return value == DONE ? DONE : 0;
    case 0x20: /* ICW1 starts initialisation; anything else is taken as EOI */
        pthread_mutex_lock(&pic->lock);
        if (value & 0x10)
            pic->icw_step = 2;
        else
            pic->in_service = 0;
        pthread_mutex_unlock(&pic->lock);
        return 0;
    case 0x21:
        pthread_mutex_lock(&pic->lock);
        if (pic->icw_step == 2)
            pic->base = value;
        else if (pic->icw_step == 0)
            pic->imr = value;
        if (pic->icw_step)
            pic->icw_step = pic->icw_step == 4 ? 0 : pic->icw_step + 1;
        pthread_mutex_unlock(&pic->lock);
        return 0;
    default:
        return 0;
    }
}

/* Before each entry without an in-kernel irqchip: inject what the VMM's
 * PIC has pending when the guest can take it, else ask for a window. */
static int qemu_try_push_interrupts(void *opaque)
{
    struct qemu_vm *q = opaque;
    struct vmm_pic *pic = &q->pic;
    int wanted, irq;

    pthread_mutex_lock(&pic->lock);
    wanted = (pic->irr & (uint8_t)~pic->imr) && !pic->in_service;
    if (wanted && kvm_is_ready_for_interrupt_injection(q->view.kvm, 0) && kvm_get_interrupt_flag(q->view.kvm, 0)) {
        for (irq = 0; !(pic->irr & (1 << irq)); irq++)
            ;
        pic->irr &= (uint8_t)~(1 << irq);
        pic->in_service = 1;
        pic->injected++;
        kvm_inject_irq(q->view.kvm, 0, pic->base + (unsigned)irq);
        wanted = 0;
    }
    pthread_mutex_unlock(&pic->lock);
    return wanted;
}

static int qemu_halt(void *opaque, int vcpu)
{
    (void)opaque;
    (void)vcpu;
    return 0; /* an idle loop: the next entry may bring an interrupt */
}

static int qemu_mmio_write(void *opaque, uint64_t addr, uint8_t *data, int len)
{
    struct qemu_vm *q = opaque;
    uint32_t value;

    if (len != 4 || addr != QEMU_COALESCED_ZONE + 4 * (uint64_t)q->n_writes ||
        q->n_writes >= 2 * QEMU_COALESCED_WRITES) {
        q->bad_address++;
        return 0;
    }
    memcpy(&value, data, 4);
    q->writes[q->n_writes++] = value;
    return 0;
}

static void qemu_callbacks(struct kvm_callbacks *cb)
{
    memset(cb, 0, sizeof(*cb));
    cb->outb = qemu_outb;
    cb->mmio_write = qemu_mmio_write;
    cb->halt = qemu_halt;
    cb->try_push_interrupts = qemu_try_push_interrupts;
}

/* The qemu-kvm start-up: VM, RAM, ROM, ISA BIOS window, vcpu 0 in the
 * tests' 64-bit mode at GUEST_CODE. */
static int qemu_create(struct qemu_vm *q, struct kvm_callbacks *cb, int irqchip)
{
    void *phys_ram_base;
    kvm_context_t kvm;
    int r;

    memset(q, 0, sizeof(*q));
    pthread_mutex_init(&q->pic.lock, NULL);
    q->ram = mmap(NULL, RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    q->bios = mmap(NULL, QEMU_ROM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (q->ram == MAP_FAILED || q->bios == MAP_FAILED)
        return -ENOMEM;
    memcpy(q->bios + 0x10, "ROM\x01\x02\x03\x04\x05", 8);
    kvm = q->view.kvm = kvm_init(cb, q);
    if (!kvm)
        return -errno;
    if (!irqchip)
        kvm_disable_irqchip_creation(kvm);
    phys_ram_base = q->ram;
    r = kvm_create(kvm, RAM, &phys_ram_base);
    if (r < 0)
        return r;
    if (phys_ram_base != q->ram)
        return -EINVAL;
    if ((r = register_phys_mem(kvm, 0, q->ram, 0xa0000)) < 0 ||
        (r = register_phys_mem(kvm, 0xc0000, q->ram + 0xc0000, RAM - 0xc0000)) < 0 ||
        (r = register_phys_mem(kvm, QEMU_ROM_BASE, q->bios, QEMU_ROM_SIZE)) < 0 ||
        (r = register_phys_mem(kvm, QEMU_ISA_BIOS, q->bios, QEMU_ROM_SIZE)) < 0)
        return r;
    if ((r = kvm_create_vcpu(kvm, 0)) < 0)
        return r;
    q->view.mem = q->ram;
    q->view.mem_size = RAM;
    return test_vcpu_long_mode(&q->view, 0, GUEST_CODE);
}

static void qemu_destroy(struct qemu_vm *q)
{
    if (q->view.kvm)
        kvm_finalize(q->view.kvm);
    if (q->ram && q->ram != MAP_FAILED)
        munmap(q->ram, RAM);
    if (q->bios && q->bios != MAP_FAILED)
        munmap(q->bios, QEMU_ROM_SIZE);
    pthread_mutex_destroy(&q->pic.lock);
}

static void its_own_ram_and_a_bios_rom_at_the_top_of_4g(void)
{
    struct kvm_callbacks cb;
    struct kvm_regs regs;
    struct qemu_vm q;
    uint64_t rom;

    qemu_callbacks(&cb);
    cb.halt = test_stop_on_halt;
    REQUIRE(qemu_create(&q, &cb, 0) == 0);
    CHECK_EQ(kvm_is_allocated_mem(q.view.kvm, QEMU_ROM_BASE, QEMU_ROM_SIZE), 1);
    CHECK_EQ(kvm_is_allocated_mem(q.view.kvm, QEMU_ISA_BIOS, QEMU_ROM_SIZE), 1);
    CHECK_EQ(kvm_is_intersecting_mem(q.view.kvm, 0xa0000), 0);
    TEST_VM_LOAD_GUEST(&q.view, read_rom);
    CHECK_EQ(kvm_run(q.view.kvm, 0), 1);
    REQUIRE(kvm_get_regs(q.view.kvm, 0, &regs) == 0);
    memcpy(&rom, q.bios + 0x10, 8);
    CHECK_EQ(regs.rax, rom);
    CHECK_EQ(regs.rbx, rom);
    qemu_destroy(&q);
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static volatile uint32_t *guest_u32(struct qemu_vm *q, uint64_t gpa)
{
    return (volatile uint32_t *)(q->ram + gpa);
}

/* Raises IRQ 4 QEMU_IRQS times, each once the guest counted the last. */
static void *raise_interrupts(void *arg)
{
    struct qemu_vm *q = arg;
    int i, waited;

    for (waited = 0; !q->guest_ready && waited < 10000; waited++)
        sleep_ms(1);
    for (i = 0; i < QEMU_IRQS; i++) {
        set_irq(q, IRQ, 1);
        set_irq(q, IRQ, 0);
        for (waited = 0; *guest_u32(q, QEMU_IRQ_COUNT) <= (uint32_t)i && waited < 10000; waited++)
            sleep_ms(1);
    }
    return NULL;
}

static void run_pic_guest(int irqchip)
{
    struct kvm_callbacks cb;
    struct qemu_vm q;
    pthread_t raiser;

    qemu_callbacks(&cb);
    REQUIRE(qemu_create(&q, &cb, irqchip) == 0);
    CHECK_EQ(kvm_irqchip_in_kernel(q.view.kvm), irqchip);
    TEST_VM_LOAD_GUEST(&q.view, pic_interrupts);
    test_vm_set_idt_gate(&q.view, 0x20 + IRQ, GUEST_LABEL_ADDR(pic_interrupts, irq4));
    if (irqchip) {
        /* As qemu's APIC reset does for the boot cpu: LINT0 takes the PIC. */
        struct kvm_lapic_state lapic;
        uint32_t lvt0 = 0x700; /* ExtINT, unmasked */
        REQUIRE(kvm_get_lapic(q.view.kvm, 0, &lapic) == 0);
        memcpy(&lapic.regs[0x350], &lvt0, 4);
        REQUIRE(kvm_set_lapic(q.view.kvm, 0, &lapic) == 0);
    }
    REQUIRE(pthread_create(&raiser, NULL, raise_interrupts, &q) == 0);
    CHECK_EQ(kvm_run(q.view.kvm, 0), DONE);
    pthread_join(raiser, NULL);
    CHECK_EQ(*guest_u32(&q, QEMU_IRQ_COUNT), QEMU_IRQS);
    CHECK_EQ(q.pic.injected, irqchip ? 0 : QEMU_IRQS);
    qemu_destroy(&q);
}

static void interrupts_reach_the_guest_through_the_in_kernel_pic(void)
{
    run_pic_guest(1);
}

static void interrupts_reach_the_guest_through_the_vmms_pic_without_irqchip(void)
{
    run_pic_guest(0);
}

static void coalesced_writes_arrive_in_order_before_the_next_exit(void)
{
    struct kvm_callbacks cb;
    struct qemu_vm q;
    int i, in_order = 1;

    qemu_callbacks(&cb);
    cb.halt = test_stop_on_halt;
    REQUIRE(qemu_create(&q, &cb, 0) == 0);
    if (!kvm_check_extension(q.view.kvm, KVM_CAP_COALESCED_MMIO)) {
        CHECK_EQ(kvm_register_coalesced_mmio(q.view.kvm, QEMU_COALESCED_ZONE, 0x1000), -ENOSYS);
        qemu_destroy(&q);
        SKIP("host KVM has no coalesced MMIO");
    }
    q.n_writes = 0;
    REQUIRE(kvm_register_coalesced_mmio(q.view.kvm, QEMU_COALESCED_ZONE, 0x1000 * 2) == 0);
    TEST_VM_LOAD_GUEST(&q.view, coalesced_writes);
    CHECK_EQ(kvm_run(q.view.kvm, 0), 1);
    CHECK_EQ(q.bad_address, 0);
    CHECK_EQ(q.writes_before_port_exit, QEMU_COALESCED_WRITES);
    CHECK_EQ(q.n_writes, 2 * QEMU_COALESCED_WRITES);
    for (i = 0; i < q.n_writes; i++)
        in_order &= q.writes[i] == (uint32_t)i;
    CHECK(in_order);
    CHECK_EQ(kvm_unregister_coalesced_mmio(q.view.kvm, QEMU_COALESCED_ZONE, 0x1000 * 2), 0);
    qemu_destroy(&q);
}

/* What a churn thread does to the memory layout while the guest runs. */
enum churn { DIRTY_LOG_TOGGLES, PAGE_WATCHPOINTS, MEMORY_HOLES };

struct churner {
    struct qemu_vm *q;
    enum churn kind;
    int rounds, failures;
};

static void *churn_layout(void *arg)
{
    struct churner *c = arg;
    kvm_context_t kvm = c->q->view.kvm;
    /* A page in the same slot as the guest's code and data, that it never touches. */
    const unsigned long page = 0x300000;
    static uint8_t bitmap[RAM / 4096 / 8];
    int i;

    for (i = 0; i < c->rounds; i++) {
        switch (c->kind) {
        case DIRTY_LOG_TOGGLES:
            c->failures += kvm_dirty_pages_log_enable_all(kvm) != 0;
            c->failures += kvm_get_dirty_pages(kvm, 0, bitmap) != 0;
            c->failures += kvm_dirty_pages_log_reset(kvm) != 0;
            break;
        case PAGE_WATCHPOINTS:
            c->failures += kvm_insert_breakpoint(kvm, 0, KVM_GDB_WATCHPOINT_ACCESS, page + 8, 8) != 0;
            c->failures += kvm_remove_breakpoint(kvm, 0, KVM_GDB_WATCHPOINT_ACCESS, page + 8, 8) != 0;
            break;
        case MEMORY_HOLES:
            c->failures += kvm_create_mem_hole(kvm, page, 4096) != 0;
            c->failures += kvm_register_userspace_phys_mem(kvm, page, c->q->ram + page, 4096, 0) != 0;
            break;
        }
    }
    *(volatile uint64_t *)(c->q->ram + QEMU_STOP) = 1;
    return NULL;
}

static void churn_under_a_running_guest(enum churn kind, int rounds)
{
    struct kvm_callbacks cb;
    struct kvm_regs regs;
    struct churner c;
    struct qemu_vm q;
    pthread_t thread;

    qemu_callbacks(&cb);
    REQUIRE(qemu_create(&q, &cb, 0) == 0);
    if (kind == PAGE_WATCHPOINTS)
        REQUIRE(kvm_set_watchpoint_method(q.view.kvm, KVM_WATCH_PAGE_PROTECTION) == 0);
    TEST_VM_LOAD_GUEST(&q.view, layout_churn);
    c.q = &q;
    c.kind = kind;
    c.rounds = rounds;
    c.failures = 0;
    REQUIRE(pthread_create(&thread, NULL, churn_layout, &c) == 0);
    /* Never an emulation failure, an MMIO exit or an error: DONE. */
    CHECK_EQ(kvm_run(q.view.kvm, 0), DONE);
    pthread_join(thread, NULL);
    CHECK_EQ(c.failures, 0);
    REQUIRE(kvm_get_regs(q.view.kvm, 0, &regs) == 0);
    CHECK(regs.r12 > 0);
    CHECK_EQ(regs.r13, regs.r12 * (regs.r12 - 1) / 2);
    CHECK_EQ(*(uint64_t *)(q.ram + QEMU_COUNT), regs.r12);
    printf("  %d rounds, the guest ran %llu loops meanwhile\n", rounds, (unsigned long long)regs.r12);
    qemu_destroy(&q);
}

static void dirty_log_toggles_under_a_running_guest_never_take_its_memory(void)
{
    churn_under_a_running_guest(DIRTY_LOG_TOGGLES, 2000);
}

static void page_watchpoints_under_a_running_guest_never_take_its_memory(void)
{
    churn_under_a_running_guest(PAGE_WATCHPOINTS, 300);
}

static void memory_holes_under_a_running_guest_never_take_its_memory(void)
{
    churn_under_a_running_guest(MEMORY_HOLES, 300);
}

int main(void)
{
    check_set_timeout(240);
    RUN(its_own_ram_and_a_bios_rom_at_the_top_of_4g);
    RUN(interrupts_reach_the_guest_through_the_in_kernel_pic);
    RUN(interrupts_reach_the_guest_through_the_vmms_pic_without_irqchip);
    RUN(coalesced_writes_arrive_in_order_before_the_next_exit);
    RUN(dirty_log_toggles_under_a_running_guest_never_take_its_memory);
    RUN(page_watchpoints_under_a_running_guest_never_take_its_memory);
    RUN(memory_holes_under_a_running_guest_never_take_its_memory);
    return check_summary();
}

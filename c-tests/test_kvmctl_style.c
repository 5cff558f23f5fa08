/*
 * A VMM written the way kvmctl (kvm-userspace user/main.c, spring 2008)
 * was: kvm_create, then kvm_create_phys_mem over the whole RAM, a BIOS
 * copied to 0xF0000, vcpu 0 created by the VMM and started from the reset
 * vector with its state untouched.
 */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "guest.h"
#include "guests/clients.h"

extern const uint8_t kvmctl_bios_start[], kvmctl_bios_end[];

enum { RAM = 16 << 20, BIOS = 0xf0000 };

struct kvmctl {
    kvm_context_t kvm;
    uint8_t *ram;
    uint16_t said;
    int outs, mmio;
};

static int kvmctl_outw(void *opaque, uint16_t port, uint16_t value)
{
    struct kvmctl *k = opaque;
    (void)port;
    k->said = value;
    k->outs++;
    return 0;
}

static int kvmctl_mmio(void *opaque, uint64_t addr, uint8_t *data, int len)
{
    struct kvmctl *k = opaque;
    (void)addr;
    (void)data;
    (void)len;
    k->mmio++;
    return 0;
}

/* kvm_init, kvm_create and the RAM, as kvmctl's main() did; no vcpu yet. */
static int kvmctl_create(struct kvmctl *k, struct kvm_callbacks *cb)
{
    void *vm_mem = NULL;

    memset(k, 0, sizeof(*k));
    memset(cb, 0, sizeof(*cb));
    cb->outw = kvmctl_outw;
    cb->mmio_read = kvmctl_mmio;
    cb->mmio_write = kvmctl_mmio;
    cb->halt = test_stop_on_halt;
    k->kvm = kvm_init(cb, k);
    if (!k->kvm)
        return -errno;
    kvm_disable_irqchip_creation(k->kvm);
    if (kvm_create(k->kvm, RAM, &vm_mem) < 0)
        return -1;
    k->ram = kvm_create_phys_mem(k->kvm, 0, RAM, 0, 1);
    return k->ram ? 0 : -errno;
}

static void the_bios_runs_from_the_reset_vector_of_vcpu_0(void)
{
    struct kvm_callbacks cb;
    struct kvmctl k;

    REQUIRE(kvmctl_create(&k, &cb) == 0);
    memcpy(k.ram + BIOS, kvmctl_bios_start, (size_t)(kvmctl_bios_end - kvmctl_bios_start));
    CHECK_EQ(kvm_create_vcpu(k.kvm, 0), 0);
    CHECK_EQ(kvm_run(k.kvm, 0), 1);
    CHECK_EQ(k.outs, 1);
    CHECK_EQ(k.said, KVMCTL_VGA_WORD);
    kvm_finalize(k.kvm);
}

static void create_phys_mem_is_ram_over_the_vga_window_too(void)
{
    struct kvm_callbacks cb;
    struct kvmctl k;
    uint16_t word;
    size_t i;
    int zero = 1;

    REQUIRE(kvmctl_create(&k, &cb) == 0);
    /* One slot over the whole range, zeroed. */
    CHECK_EQ(kvm_is_allocated_mem(k.kvm, 0, RAM), 1);
    CHECK_EQ(kvm_is_intersecting_mem(k.kvm, 0xa0000), 1);
    for (i = 0; i < RAM; i += 4096)
        zero &= k.ram[i] == 0;
    CHECK(zero);
    memcpy(k.ram + BIOS, kvmctl_bios_start, (size_t)(kvmctl_bios_end - kvmctl_bios_start));
    REQUIRE(kvm_create_vcpu(k.kvm, 0) == 0);
    CHECK_EQ(kvm_run(k.kvm, 0), 1);
    /* The guest's stores to 0xa0000 and 0xbfffe landed in RAM, not in MMIO. */
    CHECK_EQ(k.mmio, 0);
    memcpy(&word, k.ram + 0xa0000, 2);
    CHECK_EQ(word, KVMCTL_VGA_WORD);
    memcpy(&word, k.ram + 0xbfffe, 2);
    CHECK_EQ(word, KVMCTL_VGA_WORD_END);
    memcpy(&word, k.ram + 0xafffe, 2);
    CHECK_EQ(word, KVMCTL_VGA_WORD_END);
    kvm_finalize(k.kvm);
}

static void more_vcpus_are_created_by_the_vmm_too(void)
{
    struct kvm_callbacks cb;
    struct kvm_regs regs;
    struct kvmctl k;
    int i;

    REQUIRE(kvmctl_create(&k, &cb) == 0);
    for (i = 0; i < 4; i++)
        CHECK_EQ(kvm_create_vcpu(k.kvm, i), 0);
    CHECK_EQ(kvm_create_vcpu(k.kvm, 2), -EEXIST);
    for (i = 0; i < 4; i++) {
        CHECK_EQ(kvm_get_regs(k.kvm, i, &regs), 0);
        CHECK_EQ(regs.rip, 0xfff0);
    }
    kvm_finalize(k.kvm);
}

int main(void)
{
    check_set_timeout(120);
    RUN(the_bios_runs_from_the_reset_vector_of_vcpu_0);
    RUN(create_phys_mem_is_ram_over_the_vga_window_too);
    RUN(more_vcpus_are_created_by_the_vmm_too);
    return check_summary();
}

/*
 * Contexts: creation piece by piece, kvm_create's refusals, extensions,
 * irqchip/PIT creation switches, independence of two contexts, no fd left
 * behind by kvm_finalize, and NULL or invalid arguments.
 */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "guest.h"

DECLARE_GUEST(say_rbx);

enum { RAM = 4 << 20 };

struct said {
    uint32_t value;
    int count;
};

static int remember_outl(void *opaque, uint16_t port, uint32_t value)
{
    struct said *s = opaque;
    (void)port;
    s->value = value;
    s->count++;
    return 0;
}

/* For VMs whose irqchip makes hlt wait in the kernel: stop on the out. */
static int remember_outl_and_stop(void *opaque, uint16_t port, uint32_t value)
{
    remember_outl(opaque, port, value);
    return 2;
}

static struct kvm_callbacks say_callbacks(void)
{
    struct kvm_callbacks cb;
    memset(&cb, 0, sizeof(cb));
    cb.outl = remember_outl;
    cb.halt = test_stop_on_halt;
    return cb;
}

static int run_say_rbx(struct test_vm *vm, uint64_t rbx)
{
    struct kvm_regs regs;
    TEST_VM_LOAD_GUEST(vm, say_rbx);
    if (test_vcpu_long_mode(vm, 0, GUEST_CODE) < 0 || kvm_get_regs(vm->kvm, 0, &regs) < 0)
        return -1;
    regs.rbx = rbx;
    kvm_set_regs(vm->kvm, 0, &regs);
    return kvm_run(vm->kvm, 0);
}

static void finalize_closes_every_fd(void)
{
    struct kvm_callbacks cb = say_callbacks();
    int before = test_count_fds(), i;
    struct said said;
    struct test_vm vm;

    REQUIRE(before > 0);
    for (i = 0; i < 2; i++) {
        REQUIRE(test_vm_create(&vm, &cb, &said, RAM, i ? TEST_VM_IRQCHIP : 0) == 0);
        CHECK_EQ(kvm_create_vcpu(vm.kvm, 1), 0);
        CHECK(kvm_create_phys_mem(vm.kvm, 0x1000000, 0x100000, 1, 1) != NULL);
        CHECK(test_count_fds() > before);
        test_vm_destroy(&vm);
        CHECK_EQ(test_count_fds(), before);
    }
}

static void two_contexts_are_independent(void)
{
    struct kvm_callbacks cb = say_callbacks();
    struct said said_a, said_b;
    struct test_vm a, b;

    memset(&said_a, 0, sizeof(said_a));
    memset(&said_b, 0, sizeof(said_b));
    REQUIRE(test_vm_create(&a, &cb, &said_a, RAM, 0) == 0);
    REQUIRE(test_vm_create(&b, &cb, &said_b, 2 * RAM, 0) == 0);
    CHECK(a.mem != b.mem);
    a.mem[GUEST_DATA] = 0xaa;
    CHECK(b.mem[GUEST_DATA] != 0xaa);
    CHECK_EQ(run_say_rbx(&a, 0xa), 1);
    CHECK_EQ(run_say_rbx(&b, 0xb), 1);
    CHECK_EQ(said_a.value, 0xa);
    CHECK_EQ(said_a.count, 1);
    CHECK_EQ(said_b.value, 0xb);
    CHECK_EQ(said_b.count, 1);
    CHECK_EQ(kvm_is_intersecting_mem(a.kvm, RAM + 0x1000), 0);
    CHECK_EQ(kvm_is_intersecting_mem(b.kvm, RAM + 0x1000), 1);
    test_vm_destroy(&a);
    test_vm_destroy(&b);
}

static void vm_built_piece_by_piece_runs(void)
{
    struct kvm_callbacks cb = say_callbacks();
    struct said said;
    struct test_vm vm;
    void *ram;

    cb.outl = remember_outl_and_stop;
    memset(&said, 0, sizeof(said));
    memset(&vm, 0, sizeof(vm));
    vm.kvm = kvm_init(&cb, &said);
    REQUIRE(vm.kvm != NULL);
    CHECK_EQ(kvm_create_vcpu(vm.kvm, 0), -ENODEV);
    CHECK_EQ(kvm_create_vm(vm.kvm), 0);
    CHECK_EQ(kvm_create_vm(vm.kvm), -EEXIST);
    kvm_create_irqchip(vm.kvm);
    CHECK_EQ(kvm_irqchip_in_kernel(vm.kvm), 1);
    CHECK_EQ(kvm_create_vcpu(vm.kvm, 0), 0);
    ram = kvm_create_phys_mem(vm.kvm, 0, RAM, 0, 1);
    REQUIRE(ram != NULL);
    vm.mem = ram;
    vm.mem_size = RAM;
    CHECK_EQ(kvm_is_allocated_mem(vm.kvm, 0, RAM), 1);
    CHECK_EQ(run_say_rbx(&vm, 0x5eed), 2);
    CHECK_EQ(said.value, 0x5eed);
    test_vm_destroy(&vm);
}

static void kvm_create_allocates_no_ram_and_creates_no_vcpu(void)
{
    struct kvm_callbacks cb = say_callbacks();
    kvm_context_t kvm = kvm_init(&cb, NULL);
    void *vmm_ram = &cb; /* stands for the VMM's own RAM pointer */
    struct kvm_sregs sregs;
    struct kvm_regs regs;

    REQUIRE(kvm != NULL);
    CHECK_EQ(kvm_create(kvm, RAM, &vmm_ram), 0);
    CHECK(vmm_ram == (void *)&cb); /* qemu-kvm passes &phys_ram_base and keeps using it */
    CHECK_EQ(kvm_is_intersecting_mem(kvm, 0), 0);
    CHECK_EQ(kvm_is_intersecting_mem(kvm, 0xffff0000), 0);
    CHECK_EQ(kvm_get_regs(kvm, 0, &regs), -ENOENT);
    CHECK_EQ(kvm_create(kvm, RAM, &vmm_ram), -EEXIST);
    /* The VMM creates vcpu 0; it starts in a 2008 kernel's reset state. */
    CHECK_EQ(kvm_create_vcpu(kvm, 0), 0);
    CHECK_EQ(kvm_get_sregs(kvm, 0, &sregs), 0);
    CHECK_EQ(sregs.cs.selector, 0xf000);
    CHECK_EQ(sregs.cs.base, 0xf0000);
    CHECK_EQ(sregs.cr0 & 1, 0);
    CHECK_EQ(kvm_get_regs(kvm, 0, &regs), 0);
    CHECK_EQ(regs.rip, 0xfff0);
    kvm_finalize(kvm);

    /* Neither argument is used: the size is free and the pointer may be NULL. */
    kvm = kvm_init(&cb, NULL);
    REQUIRE(kvm != NULL);
    CHECK_EQ(kvm_create(kvm, 0, NULL), 0);
    kvm_finalize(kvm);
}

static void creation_switches_skip_irqchip_and_pit(void)
{
    struct kvm_callbacks cb = say_callbacks();
    struct test_vm vm;

    REQUIRE(test_vm_create(&vm, &cb, NULL, RAM, TEST_VM_IRQCHIP) == 0);
    CHECK_EQ(kvm_irqchip_in_kernel(vm.kvm), 1);
    CHECK_EQ(kvm_pit_in_kernel(vm.kvm), 1);
    test_vm_destroy(&vm);

    memset(&vm, 0, sizeof(vm));
    vm.kvm = kvm_init(&cb, NULL);
    REQUIRE(vm.kvm != NULL);
    kvm_disable_pit_creation(vm.kvm);
    REQUIRE(kvm_create(vm.kvm, RAM, (void **)&vm.mem) == 0);
    CHECK_EQ(kvm_irqchip_in_kernel(vm.kvm), 1);
    CHECK_EQ(kvm_pit_in_kernel(vm.kvm), 0);
    test_vm_destroy(&vm);

    REQUIRE(test_vm_create(&vm, &cb, NULL, RAM, 0) == 0);
    CHECK_EQ(kvm_irqchip_in_kernel(vm.kvm), 0);
    CHECK_EQ(kvm_pit_in_kernel(vm.kvm), 0);
    test_vm_destroy(&vm);
}

static void extensions_are_reported(void)
{
    struct kvm_callbacks cb = say_callbacks();
    kvm_context_t kvm = kvm_init(&cb, NULL);

    REQUIRE(kvm != NULL);
    /* 1 or 0, as in 2008, even for counts such as the vcpu limit. */
    CHECK_EQ(kvm_check_extension(kvm, KVM_CAP_USER_MEMORY), 1);
    CHECK_EQ(kvm_check_extension(kvm, KVM_CAP_SET_GUEST_DEBUG), 1);
    CHECK(test_host_extension(KVM_CAP_MAX_VCPUS) > 1);
    CHECK_EQ(kvm_check_extension(kvm, KVM_CAP_MAX_VCPUS), 1);
    CHECK_EQ(kvm_check_extension(kvm, 0x7fffffff), 0);
    CHECK_EQ(kvm_check_extension(kvm, -1), 0);
    kvm_finalize(kvm);
}

static void null_and_invalid_arguments_are_errors(void)
{
    struct kvm_callbacks cb = say_callbacks();
    struct kvm_regs regs;
    struct test_vm vm;
    void *ram;

    CHECK(kvm_init(NULL, NULL) == NULL);
    CHECK_EQ(errno, EINVAL);
    CHECK_EQ(kvm_create(NULL, RAM, &ram), -EINVAL);
    CHECK_EQ(kvm_run(NULL, 0), -EINVAL);
    CHECK_EQ(kvm_get_regs(NULL, 0, &regs), -EINVAL);
    CHECK(kvm_create_phys_mem(NULL, 0, 4096, 0, 1) == NULL);
    kvm_finalize(NULL);
    kvm_show_regs(NULL, 0);
    REQUIRE(test_vm_create(&vm, &cb, NULL, RAM, 0) == 0);
    CHECK_EQ(kvm_get_regs(vm.kvm, 0, NULL), -EFAULT);
    CHECK_EQ(kvm_set_sregs(vm.kvm, 0, NULL), -EFAULT);
    CHECK_EQ(kvm_get_msrs(vm.kvm, 0, NULL, 1), -EFAULT);
    CHECK_EQ(kvm_get_msrs(vm.kvm, 0, NULL, -1), -EINVAL);
    CHECK_EQ(kvm_get_msrs(vm.kvm, 0, NULL, 0), 0);
    CHECK_EQ(kvm_get_dirty_pages(vm.kvm, 0, NULL), -EFAULT);
    CHECK_EQ(kvm_get_dirty_pages_range(vm.kvm, 0, RAM, &regs, NULL, NULL), -EFAULT);
    test_vm_destroy(&vm);
}

int main(void)
{
    check_set_timeout(120);
    RUN(finalize_closes_every_fd);
    RUN(two_contexts_are_independent);
    RUN(vm_built_piece_by_piece_runs);
    RUN(kvm_create_allocates_no_ram_and_creates_no_vcpu);
    RUN(creation_switches_skip_irqchip_and_pit);
    RUN(extensions_are_reported);
    RUN(null_and_invalid_arguments_are_errors);
    return check_summary();
}

/*
 * Every exported function called with bad arguments: NULL contexts and
 * pointers, vcpu indices out of range or never created, zero and huge
 * lengths, unaligned and overlapping ranges, resources that run out, things
 * that were never inserted. Each case checks the documented error; none may
 * crash. Run under valgrind by `make check-leaks`.
 *
 * Conventions (README): a NULL context is -EINVAL, a NULL pointer argument
 * -EFAULT, a vcpu out of range -EINVAL and one not created -ENOENT. Void
 * and value functions report through errno.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "guest.h"

enum { RAM = 4 << 20, NOT_CREATED = 5, HUGE_VCPU = 1 << 20 };

/* What the cases work on. */
struct fixture {
    kvm_context_t kvm;  /* 4 MiB of RAM, vcpu 0 in long mode, no irqchip */
    kvm_context_t full; /* the same, with all four debug registers in use */
    void *ram;
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_fpu fpu;
    struct kvm_mp_state mp;
    struct kvm_lapic_state lapic;
    struct kvm_irqchip chip;
    struct kvm_pit_state pit;
    struct kvm_msr_entry msrs[4];
    struct kvm_cpuid_entry cpuid[4];
    struct kvm_debug_guest old_debug;
    struct kvm_guest_debug debug;
    struct kvm_debug_exit_info info;
    struct kvm_gva_translation translation;
    uint8_t buf[8192];
    uint64_t gpa;
    unsigned pages;
    sigset_t mask;
};

static int ignore_bitmap(unsigned long start, unsigned long len, void *bitmap, void *opaque)
{
    (void)start, (void)len, (void)bitmap, (void)opaque;
    return 0;
}

/* A context with a VM and nothing else, for cases that create things. */
static long with_fresh_context(long (*body)(kvm_context_t kvm, struct fixture *f), struct fixture *f)
{
    struct kvm_callbacks cb;
    kvm_context_t kvm;
    long r;

    memset(&cb, 0, sizeof(cb));
    kvm = kvm_init(&cb, NULL);
    if (!kvm)
        return -9999;
    r = body(kvm, f);
    kvm_finalize(kvm);
    return r;
}

static long create_with_null_ram_pointer_and_no_size(kvm_context_t kvm, struct fixture *f)
{
    (void)f;
    return kvm_create(kvm, 0, NULL);
}

static long vcpu_before_vm(kvm_context_t kvm, struct fixture *f)
{
    (void)f;
    return kvm_create_vcpu(kvm, 0);
}

static long memory_before_vm(kvm_context_t kvm, struct fixture *f)
{
    (void)f;
    errno = 0;
    return kvm_create_phys_mem(kvm, 0, 4096, 0, 1) ? 0 : -errno;
}

static long gdbstub_twice(kvm_context_t kvm, struct fixture *f)
{
    long r;
    (void)f;
    if (kvm_gdbstub_start(kvm, "127.0.0.1:0") != 0)
        return -9998;
    r = kvm_gdbstub_start(kvm, "127.0.0.1:0");
    kvm_gdbstub_stop(kvm);
    return r;
}

/*
 * The cases: X(name, kind, expected, call). INT compares the return value;
 * PTR expects NULL and compares -errno; VOID and VALUE compare -errno.
 */
#define CASES(X)                                                                                              \
    X(init_null_callbacks, PTR, -EINVAL, kvm_init(NULL, NULL))                                                \
    X(finalize_null, VOID, 0, kvm_finalize(NULL))                                                             \
    X(disable_irqchip_null, VOID, -EINVAL, kvm_disable_irqchip_creation(NULL))                                \
    X(disable_pit_null, VOID, -EINVAL, kvm_disable_pit_creation(NULL))                                        \
    X(create_null, INT, -EINVAL, kvm_create(NULL, RAM, &f->ram))                                              \
    X(create_ignores_its_ram_arguments, INT, 0, with_fresh_context(create_with_null_ram_pointer_and_no_size, f)) \
    X(create_twice, INT, -EEXIST, kvm_create(f->kvm, RAM, &f->ram))                                           \
    X(create_vm_null, INT, -EINVAL, kvm_create_vm(NULL))                                                      \
    X(create_vm_twice, INT, -EEXIST, kvm_create_vm(f->kvm))                                                   \
    X(check_extension_null, INT, -EINVAL, kvm_check_extension(NULL, KVM_CAP_USER_MEMORY))                     \
    X(check_extension_negative, INT, 0, kvm_check_extension(f->kvm, -1))                                      \
    X(create_irqchip_null, VOID, -EINVAL, kvm_create_irqchip(NULL))                                           \
    X(create_vcpu_null, INT, -EINVAL, kvm_create_vcpu(NULL, 1))                                               \
    X(create_vcpu_negative, INT, -EINVAL, kvm_create_vcpu(f->kvm, -1))                                        \
    X(create_vcpu_huge, INT, -EINVAL, kvm_create_vcpu(f->kvm, HUGE_VCPU))                                     \
    X(create_vcpu_twice, INT, -EEXIST, kvm_create_vcpu(f->kvm, 0))                                            \
    X(create_vcpu_before_vm, INT, -ENODEV, with_fresh_context(vcpu_before_vm, f))                             \
    X(run_null, INT, -EINVAL, kvm_run(NULL, 0))                                                               \
    X(run_negative, INT, -EINVAL, kvm_run(f->kvm, -1))                                                        \
    X(run_huge, INT, -EINVAL, kvm_run(f->kvm, HUGE_VCPU))                                                     \
    X(run_not_created, INT, -ENOENT, kvm_run(f->kvm, NOT_CREATED))                                            \
    X(dump_vcpu_null, INT, -EINVAL, kvm_dump_vcpu(NULL, 0))                                                   \
    X(dump_vcpu_not_created, INT, -ENOENT, kvm_dump_vcpu(f->kvm, NOT_CREATED))                                \
    X(show_regs_null, VOID, -EINVAL, kvm_show_regs(NULL, 0))                                                  \
    X(show_regs_huge, VOID, -EINVAL, kvm_show_regs(f->kvm, HUGE_VCPU))                                        \
    X(irq_level_null, INT, -EINVAL, kvm_set_irq_level(NULL, 4, 1))                                            \
    X(irq_level_no_irqchip, INT, 0, kvm_set_irq_level(f->kvm, 4, 1))                                     \
    X(irq_level_negative, INT, -EINVAL, kvm_set_irq_level(f->kvm, -1, 1))                                     \
    X(irqchip_in_kernel_null, INT, -EINVAL, kvm_irqchip_in_kernel(NULL))                                      \
    X(pit_in_kernel_null, INT, -EINVAL, kvm_pit_in_kernel(NULL))                                              \
    X(get_irqchip_null, INT, -EINVAL, kvm_get_irqchip(NULL, &f->chip))                                        \
    X(get_irqchip_null_out, INT, -EFAULT, kvm_get_irqchip(f->kvm, NULL))                                      \
    X(get_irqchip_absent, INT, -ENXIO, kvm_get_irqchip(f->kvm, &f->chip))                                     \
    X(set_irqchip_null, INT, -EINVAL, kvm_set_irqchip(NULL, &f->chip))                                        \
    X(set_irqchip_null_in, INT, -EFAULT, kvm_set_irqchip(f->kvm, NULL))                                       \
    X(get_pit_null, INT, -EINVAL, kvm_get_pit(NULL, &f->pit))                                                 \
    X(get_pit_null_out, INT, -EFAULT, kvm_get_pit(f->kvm, NULL))                                              \
    X(get_pit_absent, INT, -ENXIO, kvm_get_pit(f->kvm, &f->pit))                                              \
    X(set_pit_null, INT, -EINVAL, kvm_set_pit(NULL, &f->pit))                                                 \
    X(set_pit_null_in, INT, -EFAULT, kvm_set_pit(f->kvm, NULL))                                               \
    X(set_shadow_pages_null, INT, -EINVAL, kvm_set_shadow_pages(NULL, 100))                                   \
    X(get_shadow_pages_null, INT, -EINVAL, kvm_get_shadow_pages(NULL, &f->pages))                             \
    X(get_shadow_pages_null_out, INT, -EFAULT, kvm_get_shadow_pages(f->kvm, NULL))                            \
    X(msr_list_null, PTR, -EINVAL, kvm_get_msr_list(NULL))                                                    \
    X(get_regs_null, INT, -EINVAL, kvm_get_regs(NULL, 0, &f->regs))                                           \
    X(get_regs_null_out, INT, -EFAULT, kvm_get_regs(f->kvm, 0, NULL))                                         \
    X(get_regs_negative, INT, -EINVAL, kvm_get_regs(f->kvm, -1, &f->regs))                                    \
    X(get_regs_huge, INT, -EINVAL, kvm_get_regs(f->kvm, HUGE_VCPU, &f->regs))                                 \
    X(get_regs_not_created, INT, -ENOENT, kvm_get_regs(f->kvm, NOT_CREATED, &f->regs))                        \
    X(set_regs_null, INT, -EINVAL, kvm_set_regs(NULL, 0, &f->regs))                                           \
    X(set_regs_null_in, INT, -EFAULT, kvm_set_regs(f->kvm, 0, NULL))                                          \
    X(set_regs_not_created, INT, -ENOENT, kvm_set_regs(f->kvm, NOT_CREATED, &f->regs))                        \
    X(get_fpu_null, INT, -EINVAL, kvm_get_fpu(NULL, 0, &f->fpu))                                              \
    X(get_fpu_null_out, INT, -EFAULT, kvm_get_fpu(f->kvm, 0, NULL))                                           \
    X(set_fpu_null_in, INT, -EFAULT, kvm_set_fpu(f->kvm, 0, NULL))                                            \
    X(set_fpu_huge, INT, -EINVAL, kvm_set_fpu(f->kvm, HUGE_VCPU, &f->fpu))                                    \
    X(get_sregs_null, INT, -EINVAL, kvm_get_sregs(NULL, 0, &f->sregs))                                        \
    X(get_sregs_null_out, INT, -EFAULT, kvm_get_sregs(f->kvm, 0, NULL))                                       \
    X(set_sregs_null_in, INT, -EFAULT, kvm_set_sregs(f->kvm, 0, NULL))                                        \
    X(set_sregs_not_created, INT, -ENOENT, kvm_set_sregs(f->kvm, NOT_CREATED, &f->sregs))                     \
    X(get_lapic_null_out, INT, -EFAULT, kvm_get_lapic(f->kvm, 0, NULL))                                       \
    X(get_lapic_not_created, INT, -ENOENT, kvm_get_lapic(f->kvm, NOT_CREATED, &f->lapic))                     \
    X(set_lapic_null, INT, -EINVAL, kvm_set_lapic(NULL, 0, &f->lapic))                                        \
    X(get_mpstate_null_out, INT, -EFAULT, kvm_get_mpstate(f->kvm, 0, NULL))                                   \
    X(set_mpstate_null, INT, -EINVAL, kvm_set_mpstate(NULL, 0, &f->mp))                                       \
    X(set_mpstate_negative, INT, -EINVAL, kvm_set_mpstate(f->kvm, -1, &f->mp))                                \
    X(get_msrs_null, INT, -EINVAL, kvm_get_msrs(NULL, 0, f->msrs, 1))                                         \
    X(get_msrs_null_array, INT, -EFAULT, kvm_get_msrs(f->kvm, 0, NULL, 1))                                    \
    X(get_msrs_negative_count, INT, -EINVAL, kvm_get_msrs(f->kvm, 0, f->msrs, -1))                            \
    X(get_msrs_huge_count, INT, -E2BIG, kvm_get_msrs(f->kvm, 0, f->msrs, 1 << 20))                            \
    X(get_msrs_zero, INT, 0, kvm_get_msrs(f->kvm, 0, NULL, 0))                                                \
    X(set_msrs_huge_count, INT, -E2BIG, kvm_set_msrs(f->kvm, 0, f->msrs, 100000))                             \
    X(set_msrs_not_created, INT, -ENOENT, kvm_set_msrs(f->kvm, NOT_CREATED, f->msrs, 1))                      \
    X(cpuid_null, INT, -EINVAL, kvm_setup_cpuid(NULL, 0, 1, f->cpuid))                                        \
    X(cpuid_null_entries, INT, -EFAULT, kvm_setup_cpuid(f->kvm, 0, 1, NULL))                                  \
    X(cpuid_negative_count, INT, -EINVAL, kvm_setup_cpuid(f->kvm, 0, -1, f->cpuid))                           \
    X(cpuid_huge_count, INT, -E2BIG, kvm_setup_cpuid(f->kvm, 0, 1 << 30, f->cpuid))                           \
    X(inject_irq_null, INT, -EINVAL, kvm_inject_irq(NULL, 0, 32))                                             \
    X(inject_irq_not_created, INT, -ENOENT, kvm_inject_irq(f->kvm, NOT_CREATED, 32))                          \
    X(interrupt_flag_null, INT, -EINVAL, kvm_get_interrupt_flag(NULL, 0))                                     \
    X(interrupt_flag_negative, INT, -EINVAL, kvm_get_interrupt_flag(f->kvm, -1))                              \
    X(apic_base_null, VALUE, -EINVAL, kvm_get_apic_base(NULL, 0))                                             \
    X(apic_base_not_created, VALUE, -ENOENT, kvm_get_apic_base(f->kvm, NOT_CREATED))                          \
    X(ready_null, INT, -EINVAL, kvm_is_ready_for_interrupt_injection(NULL, 0))                                \
    X(ready_huge, INT, -EINVAL, kvm_is_ready_for_interrupt_injection(f->kvm, HUGE_VCPU))                      \
    X(set_cr8_null, VOID, -EINVAL, kvm_set_cr8(NULL, 0, 1))                                                   \
    X(set_cr8_not_created, VOID, -ENOENT, kvm_set_cr8(f->kvm, NOT_CREATED, 1))                                \
    X(get_cr8_null, VALUE, -EINVAL, kvm_get_cr8(NULL, 0))                                                     \
    X(signal_mask_null, INT, -EINVAL, kvm_set_signal_mask(NULL, 0, &f->mask))                                 \
    X(signal_mask_not_created, INT, -ENOENT, kvm_set_signal_mask(f->kvm, NOT_CREATED, NULL))                  \
    X(tpr_enable_null, INT, -EINVAL, kvm_enable_tpr_access_reporting(NULL, 0))                                \
    X(tpr_disable_not_created, INT, -ENOENT, kvm_disable_tpr_access_reporting(f->kvm, NOT_CREATED))           \
    X(vapic_null, INT, -EINVAL, kvm_enable_vapic(NULL, 0, 0x7000))                                            \
    X(vapic_huge, INT, -EINVAL, kvm_enable_vapic(f->kvm, HUGE_VCPU, 0x7000))                                  \
    X(phys_mem_null, PTR, -EINVAL, kvm_create_phys_mem(NULL, 0x1000000, 4096, 0, 1))                          \
    X(phys_mem_before_vm, INT, -ENODEV, with_fresh_context(memory_before_vm, f))                              \
    X(phys_mem_unaligned, PTR, -EINVAL, kvm_create_phys_mem(f->kvm, 0x1000800, 4096, 0, 1))                   \
    X(phys_mem_zero_length, PTR, -EINVAL, kvm_create_phys_mem(f->kvm, 0x1000000, 0, 0, 1))                    \
    X(phys_mem_odd_length, PTR, -EINVAL, kvm_create_phys_mem(f->kvm, 0x1000000, 100, 0, 1))                   \
    X(phys_mem_overlapping, PTR, -EEXIST, kvm_create_phys_mem(f->kvm, RAM - 4096, 8192, 0, 1))                \
    X(phys_mem_huge, PTR, -ENOMEM, kvm_create_phys_mem(f->kvm, 0x100000000UL, 1UL << 62, 0, 1))               \
    X(phys_mem_wrapping, PTR, -EINVAL, kvm_create_phys_mem(f->kvm, ~0xfffUL, 8192, 0, 1))                     \
    X(destroy_phys_mem_null, VOID, -EINVAL, kvm_destroy_phys_mem(NULL, 0, 4096))                              \
    X(destroy_phys_mem_unaligned, VOID, -EINVAL, kvm_destroy_phys_mem(f->kvm, 0x1001, 4096))                  \
    X(intersecting_null, INT, -EINVAL, kvm_is_intersecting_mem(NULL, 0))                                      \
    X(allocated_null, INT, -EINVAL, kvm_is_allocated_mem(NULL, 0, 4096))                                      \
    X(hole_null, INT, -EINVAL, kvm_create_mem_hole(NULL, 0x200000, 4096))                                     \
    X(hole_unaligned, INT, -EINVAL, kvm_create_mem_hole(f->kvm, 0x200800, 4096))                              \
    X(hole_zero_length, INT, -EINVAL, kvm_create_mem_hole(f->kvm, 0x200000, 0))                               \
    X(user_mem_null, INT, -EINVAL, kvm_register_userspace_phys_mem(NULL, 0x8000000, f->buf, 4096, 0))         \
    X(user_mem_null_memory, INT, -EFAULT, kvm_register_userspace_phys_mem(f->kvm, 0x8000000, NULL, 4096, 0))  \
    X(user_mem_unaligned, INT, -EINVAL, kvm_register_userspace_phys_mem(f->kvm, 0x8000000, f->buf + 1, 4096, 0)) \
    X(user_mem_overlapping, INT, -EEXIST, kvm_register_userspace_phys_mem(f->kvm, 0x1000, f->ram, 4096, 0))   \
    X(dirty_null, INT, -EINVAL, kvm_get_dirty_pages(NULL, 0, f->buf))                                         \
    X(dirty_null_buffer, INT, -EFAULT, kvm_get_dirty_pages(f->kvm, 0, NULL))                                  \
    X(dirty_no_slot, INT, -ENOENT, kvm_get_dirty_pages(f->kvm, 0xa0000, f->buf))                              \
    X(dirty_not_logging, INT, -ENOENT, kvm_get_dirty_pages(f->kvm, 0, f->buf))                                \
    X(dirty_range_null, INT, -EINVAL, kvm_get_dirty_pages_range(NULL, 0, RAM, f->buf, NULL, ignore_bitmap))   \
    X(dirty_range_null_callback, INT, -EFAULT, kvm_get_dirty_pages_range(f->kvm, 0, RAM, f->buf, NULL, NULL)) \
    X(dirty_range_null_buffer, INT, -EFAULT, kvm_get_dirty_pages_range(f->kvm, 0, RAM, NULL, NULL, ignore_bitmap)) \
    X(mem_map_null, INT, -EINVAL, kvm_get_mem_map(NULL, 0, f->buf))                                           \
    X(mem_map_no_slot, INT, -ENOENT, kvm_get_mem_map(f->kvm, 0xa0000, f->buf))                                \
    X(mem_map_null_buffer, INT, -EFAULT, kvm_get_mem_map(f->kvm, 0, NULL))                                    \
    X(mem_map_range_null_callback, INT, -EFAULT, kvm_get_mem_map_range(f->kvm, 0, RAM, f->buf, NULL, NULL))   \
    X(log_enable_null, INT, -EINVAL, kvm_dirty_pages_log_enable_all(NULL))                                    \
    X(log_reset_null, INT, -EINVAL, kvm_dirty_pages_log_reset(NULL))                                          \
    X(alias_null, INT, -EINVAL, kvm_create_memory_alias(NULL, 0x8000000, 4096, 0x100000))                     \
    X(alias_over_nothing, INT, -EINVAL, kvm_create_memory_alias(f->kvm, 0x8000000, 4096, 0x9000000))          \
    X(alias_unaligned, INT, -EINVAL, kvm_create_memory_alias(f->kvm, 0x8000100, 4096, 0x100000))              \
    X(alias_overlapping_ram, INT, -EEXIST, kvm_create_memory_alias(f->kvm, 0x1000, 4096, 0x100000))           \
    X(alias_destroy_null, INT, -EINVAL, kvm_destroy_memory_alias(NULL, 0x8000000))                            \
    X(alias_destroy_missing, INT, -ENOENT, kvm_destroy_memory_alias(f->kvm, 0x8000000))                       \
    X(old_debug_null, INT, -EINVAL, kvm_guest_debug(NULL, 0, &f->old_debug))                                  \
    X(old_debug_null_request, INT, -EFAULT, kvm_guest_debug(f->kvm, 0, NULL))                                 \
    X(old_debug_not_created, INT, -ENOENT, kvm_guest_debug(f->kvm, NOT_CREATED, &f->old_debug))              \
    X(guest_debug_null, INT, -EINVAL, kvm_set_guest_debug(NULL, 0, &f->debug))                                \
    X(guest_debug_null_request, INT, -EFAULT, kvm_set_guest_debug(f->kvm, 0, NULL))                           \
    X(guest_debug_bad_flags, INT, -EINVAL, (f->debug.control = 0xffffffffu, kvm_set_guest_debug(f->kvm, 0, &f->debug))) \
    X(exit_info_null, INT, -EINVAL, kvm_get_debug_exit_info(NULL, 0, &f->info))                               \
    X(exit_info_null_out, INT, -EFAULT, kvm_get_debug_exit_info(f->kvm, 0, NULL))                             \
    X(exit_info_before_any, INT, -ENOENT, kvm_get_debug_exit_info(f->kvm, 0, &f->info))                       \
    X(insert_null, INT, -EINVAL, kvm_insert_breakpoint(NULL, 0, KVM_GDB_BREAKPOINT_SW, 0x10000, 1))           \
    X(insert_not_created, INT, -ENOENT, kvm_insert_breakpoint(f->kvm, NOT_CREATED, KVM_GDB_BREAKPOINT_SW, 0x10000, 1)) \
    X(insert_bad_type, INT, -EINVAL, kvm_insert_breakpoint(f->kvm, 0, 42, 0x10000, 1))                        \
    X(insert_negative_type, INT, -EINVAL, kvm_insert_breakpoint(f->kvm, 0, -1, 0x10000, 1))                   \
    X(insert_singlestep_type, INT, -EINVAL, kvm_insert_breakpoint(f->kvm, 0, KVM_GDB_SINGLESTEP, 0x10000, 1)) \
    X(insert_watch_length_3, INT, -EINVAL, kvm_insert_breakpoint(f->full, 0, KVM_GDB_WATCHPOINT_WRITE, 0x200000, 3)) \
    X(insert_watch_length_0, INT, -EINVAL, kvm_insert_breakpoint(f->full, 0, KVM_GDB_WATCHPOINT_READ, 0x200000, 0)) \
    X(insert_watch_unaligned, INT, -EINVAL, kvm_insert_breakpoint(f->full, 0, KVM_GDB_WATCHPOINT_ACCESS, 0x200002, 4)) \
    X(page_watch_length_0, INT, -EINVAL, kvm_insert_breakpoint(f->kvm, 0, KVM_GDB_WATCHPOINT_WRITE, 0x200000, 0)) \
    X(page_watch_too_long, INT, -EINVAL, kvm_insert_breakpoint(f->kvm, 0, KVM_GDB_WATCHPOINT_WRITE, 0x200000, 2 << 20)) \
    X(page_watch_unmapped, INT, -EFAULT, kvm_insert_breakpoint(f->kvm, 0, KVM_GDB_WATCHPOINT_WRITE, 0x200000000UL, 8)) \
    X(page_watch_beyond_ram, INT, -EFAULT, kvm_insert_breakpoint(f->kvm, 0, KVM_GDB_WATCHPOINT_WRITE, RAM + 0x1000, 8)) \
    X(page_watch_read_on_running_code, INT, -EBUSY, kvm_insert_breakpoint(f->kvm, 0, KVM_GDB_WATCHPOINT_READ, GUEST_CODE + 8, 4)) \
    X(page_watch_remove_never_inserted, INT, -ENOENT, kvm_remove_breakpoint(f->kvm, 0, KVM_GDB_WATCHPOINT_WRITE, 0x200000, 3)) \
    X(watch_method_null, INT, -EINVAL, kvm_set_watchpoint_method(NULL, KVM_WATCH_AUTO)) \
    X(watch_method_bad, INT, -EINVAL, kvm_set_watchpoint_method(f->kvm, 7)) \
    X(insert_fifth_hardware, INT, -ENOSPC, kvm_insert_breakpoint(f->full, 0, KVM_GDB_BREAKPOINT_HW, 0x10010, 1)) \
    X(insert_fifth_watchpoint, INT, -ENOSPC, kvm_insert_breakpoint(f->full, 0, KVM_GDB_WATCHPOINT_WRITE, 0x300000, 8)) \
    X(insert_unmapped_no_register, INT, -EFAULT, kvm_insert_breakpoint(f->full, 0, KVM_GDB_BREAKPOINT_SW, 0x200000000UL, 1)) \
    X(insert_noncanonical_no_register, INT, -EFAULT, kvm_insert_breakpoint(f->full, 0, KVM_GDB_BREAKPOINT_SW, 0x800000000000UL, 1)) \
    X(remove_null, INT, -EINVAL, kvm_remove_breakpoint(NULL, 0, KVM_GDB_BREAKPOINT_SW, 0x10000, 1))           \
    X(remove_never_inserted, INT, -ENOENT, kvm_remove_breakpoint(f->kvm, 0, KVM_GDB_BREAKPOINT_SW, 0x10000, 1)) \
    X(remove_never_inserted_watch, INT, -ENOENT, kvm_remove_breakpoint(f->kvm, 0, KVM_GDB_WATCHPOINT_WRITE, 0x200000, 8)) \
    X(remove_bad_type, INT, -EINVAL, kvm_remove_breakpoint(f->kvm, 0, 99, 0x10000, 1))                        \
    X(remove_wrong_length, INT, -ENOENT, kvm_remove_breakpoint(f->full, 0, KVM_GDB_WATCHPOINT_WRITE, 0x200000, 4)) \
    X(remove_all_null, VOID, -EINVAL, kvm_remove_all_breakpoints(NULL))                                       \
    X(singlestep_null, INT, -EINVAL, kvm_set_singlestep(NULL, 0, 1))                                          \
    X(singlestep_not_created, INT, -ENOENT, kvm_set_singlestep(f->kvm, NOT_CREATED, 1))                       \
    X(read_virt_null, INT, -EINVAL, kvm_read_guest_virt(NULL, 0, 0x10000, f->buf, 8))                         \
    X(read_virt_null_buffer, INT, -EFAULT, kvm_read_guest_virt(f->kvm, 0, 0x10000, NULL, 8))                  \
    X(read_virt_zero_length, INT, 0, kvm_read_guest_virt(f->kvm, 0, 0x10000, NULL, 0))                        \
    X(read_virt_unmapped, INT, -EFAULT, kvm_read_guest_virt(f->kvm, 0, 0x200000000UL, f->buf, 8))             \
    X(read_virt_noncanonical, INT, -EFAULT, kvm_read_guest_virt(f->kvm, 0, 0x800000000000UL, f->buf, 8))      \
    X(read_virt_beyond_ram, INT, -EFAULT, kvm_read_guest_virt(f->kvm, 0, RAM - 4, f->buf, 8))                 \
    X(read_virt_huge_length, INT, -EFAULT, kvm_read_guest_virt(f->kvm, 0, 0x10000, f->buf, (size_t)1 << 40))  \
    X(read_virt_absurd_length, INT, -EINVAL, kvm_read_guest_virt(f->kvm, 0, 0x10000, f->buf, (size_t)-1))     \
    X(read_virt_not_created, INT, -ENOENT, kvm_read_guest_virt(f->kvm, NOT_CREATED, 0x10000, f->buf, 8))      \
    X(write_virt_null, INT, -EINVAL, kvm_write_guest_virt(NULL, 0, 0x10000, f->buf, 8))                       \
    X(write_virt_null_buffer, INT, -EFAULT, kvm_write_guest_virt(f->kvm, 0, 0x10000, NULL, 8))                \
    X(write_virt_unmapped, INT, -EFAULT, kvm_write_guest_virt(f->kvm, 0, 0x200000000UL, f->buf, 8))          \
    X(write_virt_huge_length, INT, -EFAULT, kvm_write_guest_virt(f->kvm, 0, 0x10000, f->buf, (size_t)1 << 40)) \
    X(translate_null, INT, -EINVAL, kvm_translate_gva(NULL, 0, 0x10000, &f->gpa))                             \
    X(translate_null_out, INT, -EFAULT, kvm_translate_gva(f->kvm, 0, 0x10000, NULL))                          \
    X(translate_unmapped, INT, -EFAULT, kvm_translate_gva(f->kvm, 0, 0x200000000UL, &f->gpa))                 \
    X(translate_noncanonical, INT, -EFAULT, kvm_translate_gva(f->kvm, 0, 0xffff7fff00000000UL, &f->gpa))      \
    X(translate_not_created, INT, -ENOENT, kvm_translate_gva(f->kvm, NOT_CREATED, 0x10000, &f->gpa))          \
    X(translate_ex_null_out, INT, -EFAULT, kvm_translate_gva_ex(f->kvm, 0, 0x10000, NULL))                    \
    X(translate_ex_unmapped, INT, -EFAULT, kvm_translate_gva_ex(f->kvm, 0, 0x200000000UL, &f->translation))   \
    X(gdbstub_start_null, INT, -EINVAL, kvm_gdbstub_start(NULL, "1234"))                                      \
    X(gdbstub_start_null_address, INT, -EFAULT, kvm_gdbstub_start(f->kvm, NULL))                              \
    X(gdbstub_start_garbage, INT, -EINVAL, kvm_gdbstub_start(f->kvm, "not an address"))                       \
    X(gdbstub_start_empty_unix, INT, -EINVAL, kvm_gdbstub_start(f->kvm, "unix:"))                             \
    X(gdbstub_start_twice, INT, -EBUSY, with_fresh_context(gdbstub_twice, f))                                 \
    X(gdbstub_stop_null, INT, -EINVAL, kvm_gdbstub_stop(NULL))                                                \
    X(gdbstub_stop_not_started, INT, -ENOENT, kvm_gdbstub_stop(f->kvm))

#define RESULT_INT(...) return (long)(__VA_ARGS__);
#define RESULT_PTR(...)                                \
    errno = 0;                                         \
    return (__VA_ARGS__) == NULL ? -(long)errno : 9999;
#define RESULT_VOID(...) \
    errno = 0;           \
    __VA_ARGS__;         \
    return -(long)errno;
#define RESULT_VALUE(...)                         \
    errno = 0;                                    \
    return (__VA_ARGS__) == 0 ? -(long)errno : 9999;

#define DEFINE_CASE(name, kind, expected, ...) \
    static long case_##name(struct fixture *f) \
    {                                          \
        (void)f;                               \
        RESULT_##kind(__VA_ARGS__)             \
    }
CASES(DEFINE_CASE)

struct bad_input_case {
    const char *name;
    long expected;
    long (*run)(struct fixture *f);
};

#define TABLE_ROW(name, kind, expected, ...) {#name, expected, case_##name},
static const struct bad_input_case cases[] = {CASES(TABLE_ROW)};

static kvm_context_t fixture_vm(struct test_vm *vm)
{
    static struct kvm_callbacks cb;
    if (test_vm_create(vm, &cb, NULL, RAM, 0) < 0 || test_vcpu_long_mode(vm, 0, GUEST_CODE) < 0)
        return NULL;
    return vm->kvm;
}

static void every_function_refuses_bad_input_with_its_documented_error(void)
{
    static struct fixture f;
    static struct test_vm vm, full;
    size_t i, bad = 0;

    memset(&f, 0, sizeof(f));
    f.kvm = fixture_vm(&vm);
    f.full = fixture_vm(&full);
    REQUIRE(f.kvm && f.full);
    f.ram = vm.mem;
    /* The page-watch cases are about page protection, which KVM_WATCH_AUTO
     * does not pick where debug registers fire data breakpoints. */
    REQUIRE(kvm_set_watchpoint_method(f.kvm, KVM_WATCH_PAGE_PROTECTION) == 0);
    sigemptyset(&f.mask);
    REQUIRE(kvm_set_watchpoint_method(f.full, KVM_WATCH_DEBUG_REGISTERS) == 0);
    REQUIRE(kvm_insert_breakpoint(f.full, 0, KVM_GDB_BREAKPOINT_HW, 0x10000, 1) == 0);
    REQUIRE(kvm_insert_breakpoint(f.full, 0, KVM_GDB_WATCHPOINT_WRITE, 0x200000, 8) == 0);
    REQUIRE(kvm_insert_breakpoint(f.full, 0, KVM_GDB_WATCHPOINT_READ, 0x200010, 4) == 0);
    REQUIRE(kvm_insert_breakpoint(f.full, 0, KVM_GDB_WATCHPOINT_ACCESS, 0x200020, 2) == 0);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        long got = cases[i].run(&f);
        if (got != cases[i].expected) {
            printf("  %s: got %ld, expected %ld\n", cases[i].name, got, cases[i].expected);
            bad++;
        }
    }
    printf("  %zu bad-input cases ran, %zu gave the wrong answer\n", sizeof(cases) / sizeof(cases[0]), bad);
    CHECK_EQ(bad, 0);
    test_vm_destroy(&vm);
    test_vm_destroy(&full);
}

int main(void)
{
    check_set_timeout(120);
    RUN(every_function_refuses_bad_input_with_its_documented_error);
    return check_summary();
}

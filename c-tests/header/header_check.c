/*
 * Compiled three ways by the Makefile: as strict C99, as C++11, and against
 * kernel headers without struct kvm_debug_guest. The assignments below are
 * the prototypes of the 2008 libkvm.h: a signature that drifted from them
 * fails to compile (-Werror). At run time it checks the ABI facts C VMMs
 * rely on.
 */
#include "libkvm.h"

#include <stddef.h>

#include "check.h"

#if defined(EXPECT_NEWER_KERNEL_HEADERS) && (defined(KVM_DEBUG_GUEST) || defined(__KVM_DEPRECATED_VCPU_W_0x87))
#error "the stand-in kernel header still defines the old debug interface"
#endif

/* Assigns `fn` to a pointer of the exact 2008 prototype `ret (*)(args)`. */
#define PROTOTYPE(ret, fn, args)       \
    do {                               \
        ret(*pointer_) args = fn;      \
        CHECK(pointer_ != 0);          \
    } while (0)

/* The 2008 prototypes, exactly (with the widened debug callback). */
static void check_prototypes(void)
{
    PROTOTYPE(kvm_context_t, kvm_init, (struct kvm_callbacks *, void *));
    PROTOTYPE(void, kvm_finalize, (kvm_context_t));
    PROTOTYPE(void, kvm_disable_irqchip_creation, (kvm_context_t));
    PROTOTYPE(void, kvm_disable_pit_creation, (kvm_context_t));
    PROTOTYPE(int, kvm_create, (kvm_context_t, unsigned long, void **));
    PROTOTYPE(int, kvm_create_vm, (kvm_context_t));
    PROTOTYPE(int, kvm_check_extension, (kvm_context_t, int));
    PROTOTYPE(void, kvm_create_irqchip, (kvm_context_t));
    PROTOTYPE(int, kvm_create_vcpu, (kvm_context_t, int));
    PROTOTYPE(int, kvm_run, (kvm_context_t, int));
    PROTOTYPE(int, kvm_get_interrupt_flag, (kvm_context_t, int));
    PROTOTYPE(uint64_t, kvm_get_apic_base, (kvm_context_t, int));
    PROTOTYPE(int, kvm_is_ready_for_interrupt_injection, (kvm_context_t, int));
    PROTOTYPE(int, kvm_get_regs, (kvm_context_t, int, struct kvm_regs *));
    PROTOTYPE(int, kvm_set_regs, (kvm_context_t, int, struct kvm_regs *));
    PROTOTYPE(int, kvm_get_fpu, (kvm_context_t, int, struct kvm_fpu *));
    PROTOTYPE(int, kvm_set_fpu, (kvm_context_t, int, struct kvm_fpu *));
    PROTOTYPE(int, kvm_get_sregs, (kvm_context_t, int, struct kvm_sregs *));
    PROTOTYPE(int, kvm_set_sregs, (kvm_context_t, int, struct kvm_sregs *));
    PROTOTYPE(int, kvm_get_mpstate, (kvm_context_t, int, struct kvm_mp_state *));
    PROTOTYPE(int, kvm_set_mpstate, (kvm_context_t, int, struct kvm_mp_state *));
    PROTOTYPE(struct kvm_msr_list *, kvm_get_msr_list, (kvm_context_t));
    PROTOTYPE(int, kvm_get_msrs, (kvm_context_t, int, struct kvm_msr_entry *, int));
    PROTOTYPE(int, kvm_set_msrs, (kvm_context_t, int, struct kvm_msr_entry *, int));
    PROTOTYPE(int, kvm_inject_irq, (kvm_context_t, int, unsigned));
    PROTOTYPE(int, kvm_guest_debug, (kvm_context_t, int, struct kvm_debug_guest *));
    PROTOTYPE(int, kvm_setup_cpuid, (kvm_context_t, int, int, struct kvm_cpuid_entry *));
    PROTOTYPE(int, kvm_set_shadow_pages, (kvm_context_t, unsigned int));
    PROTOTYPE(int, kvm_get_shadow_pages, (kvm_context_t, unsigned int *));
    PROTOTYPE(void, kvm_set_cr8, (kvm_context_t, int, uint64_t));
    PROTOTYPE(__u64, kvm_get_cr8, (kvm_context_t, int));
    PROTOTYPE(int, kvm_set_signal_mask, (kvm_context_t, int, const sigset_t *));
    PROTOTYPE(int, kvm_dump_vcpu, (kvm_context_t, int));
    PROTOTYPE(void, kvm_show_regs, (kvm_context_t, int));
    PROTOTYPE(void *, kvm_create_phys_mem, (kvm_context_t, unsigned long, unsigned long, int, int));
    PROTOTYPE(void, kvm_destroy_phys_mem, (kvm_context_t, unsigned long, unsigned long));
    PROTOTYPE(int, kvm_is_intersecting_mem, (kvm_context_t, unsigned long));
    PROTOTYPE(int, kvm_is_allocated_mem, (kvm_context_t, unsigned long, unsigned long));
    PROTOTYPE(int, kvm_create_mem_hole, (kvm_context_t, unsigned long, unsigned long));
    PROTOTYPE(int, kvm_register_userspace_phys_mem, (kvm_context_t, unsigned long, void *, unsigned long, int));
    PROTOTYPE(int, kvm_get_dirty_pages, (kvm_context_t, unsigned long, void *));
    PROTOTYPE(int, kvm_get_dirty_pages_range, (kvm_context_t, unsigned long, unsigned long, void *, void *, int (*)(unsigned long, unsigned long, void *, void *)));
    PROTOTYPE(int, kvm_create_memory_alias, (kvm_context_t, uint64_t, uint64_t, uint64_t));
    PROTOTYPE(int, kvm_destroy_memory_alias, (kvm_context_t, uint64_t));
    PROTOTYPE(int, kvm_get_mem_map, (kvm_context_t, unsigned long, void *));
    PROTOTYPE(int, kvm_get_mem_map_range, (kvm_context_t, unsigned long, unsigned long, void *, void *, int (*)(unsigned long, unsigned long, void *, void *)));
    PROTOTYPE(int, kvm_set_irq_level, (kvm_context_t, int, int));
    PROTOTYPE(int, kvm_dirty_pages_log_enable_all, (kvm_context_t));
    PROTOTYPE(int, kvm_dirty_pages_log_reset, (kvm_context_t));
    PROTOTYPE(int, kvm_irqchip_in_kernel, (kvm_context_t));
    PROTOTYPE(int, kvm_pit_in_kernel, (kvm_context_t));
    PROTOTYPE(int, kvm_get_irqchip, (kvm_context_t, struct kvm_irqchip *));
    PROTOTYPE(int, kvm_set_irqchip, (kvm_context_t, struct kvm_irqchip *));
    PROTOTYPE(int, kvm_get_lapic, (kvm_context_t, int, struct kvm_lapic_state *));
    PROTOTYPE(int, kvm_set_lapic, (kvm_context_t, int, struct kvm_lapic_state *));
    PROTOTYPE(int, kvm_get_pit, (kvm_context_t, struct kvm_pit_state *));
    PROTOTYPE(int, kvm_set_pit, (kvm_context_t, struct kvm_pit_state *));
    PROTOTYPE(int, kvm_enable_tpr_access_reporting, (kvm_context_t, int));
    PROTOTYPE(int, kvm_disable_tpr_access_reporting, (kvm_context_t, int));
    PROTOTYPE(int, kvm_enable_vapic, (kvm_context_t, int, uint64_t));
    PROTOTYPE(int, kvm_register_coalesced_mmio, (kvm_context_t, uint64_t, uint32_t));
    PROTOTYPE(int, kvm_unregister_coalesced_mmio, (kvm_context_t, uint64_t, uint32_t));
    /* A static inline function of the header, as in 2008. */
    PROTOTYPE(int, kvm_reset_mpstate, (kvm_context_t, int));
}

static void callbacks_keep_the_2008_field_order(void)
{
    const size_t fn = sizeof(void (*)(void));

    CHECK_EQ(offsetof(struct kvm_callbacks, inb), 0 * fn);
    CHECK_EQ(offsetof(struct kvm_callbacks, outb), 3 * fn);
    CHECK_EQ(offsetof(struct kvm_callbacks, mmio_read), 6 * fn);
    CHECK_EQ(offsetof(struct kvm_callbacks, debug), 8 * fn);
    CHECK_EQ(offsetof(struct kvm_callbacks, halt), 9 * fn);
    CHECK_EQ(offsetof(struct kvm_callbacks, io_window), 11 * fn);
    CHECK_EQ(offsetof(struct kvm_callbacks, post_kvm_run), 13 * fn);
    CHECK_EQ(offsetof(struct kvm_callbacks, tpr_access), 15 * fn);
    CHECK_EQ(sizeof(struct kvm_callbacks), 16 * fn);
}

static void break_types_have_the_patch_values(void)
{
    CHECK_EQ(KVM_GDB_BREAKPOINT_SW, 0);
    CHECK_EQ(KVM_GDB_BREAKPOINT_HW, 1);
    CHECK_EQ(KVM_GDB_WATCHPOINT_WRITE, 2);
    CHECK_EQ(KVM_GDB_WATCHPOINT_READ, 3);
    CHECK_EQ(KVM_GDB_WATCHPOINT_ACCESS, 4);
    CHECK_EQ(KVM_GDB_SINGLESTEP, 5);
}

static void old_debug_request_has_the_kernel_layout(void)
{
    CHECK_EQ(sizeof(struct kvm_breakpoint), 16);
    CHECK_EQ(offsetof(struct kvm_debug_guest, breakpoints), 8);
    CHECK_EQ(offsetof(struct kvm_debug_guest, singlestep), 72);
    CHECK_EQ(sizeof(struct kvm_debug_guest), 80);
}

static void library_links_and_refuses_null_callbacks(void)
{
    CHECK(kvm_init(NULL, NULL) == NULL);
    kvm_finalize(NULL);
}

int main(void)
{
    RUN(check_prototypes);
    RUN(callbacks_keep_the_2008_field_order);
    RUN(break_types_have_the_patch_values);
    RUN(old_debug_request_has_the_kernel_layout);
    RUN(library_links_and_refuses_null_callbacks);
    return check_summary();
}

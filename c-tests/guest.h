/*
 * Shared guest set-up for the C tests: a context with RAM, and vcpus in
 * real mode or in the flat 64-bit long mode that works on every KVM host
 * (the low 4 GiB identity-mapped with 2 MiB pages).
 *
 * Guest memory layout (guest-physical, 64-bit guests):
 *   0x0500  GDT: null, 64-bit code (selector 0x08), data (selector 0x10)
 *   0x1000  PML4, 0x2000 PDPT, 0x3000-0x6fff four PDs (2 MiB pages, 4 GiB)
 *   0x8000  IDT (256 gates)
 *   0x10000 guest code (GUEST_CODE), loaded from a guests/ *.S program
 *   0x80000 - vcpu * 0x4000: initial stack
 */
#ifndef GUEST_H
#define GUEST_H

#include <stdint.h>
#include <stddef.h>
#include "libkvm.h"
#include "guests/layout.h"

/* The legacy VGA window that test VMs leave unbacked, for MMIO. */
#define VGA_START 0xa0000UL
#define VGA_END 0xc0000UL

/* A context with RAM and vcpu 0. */
struct test_vm {
    kvm_context_t kvm;
    uint8_t *mem;
    unsigned long mem_size;
};

/* Options for test_vm_create. */
enum {
    TEST_VM_IRQCHIP = 1, /* keep the in-kernel irqchip and PIT (hlt then blocks) */
};

/* kvm_init + kvm_create, then, as qemu-kvm of 2008 did, `mem_size` bytes
 * of the test's own RAM registered at 0 around the VGA window
 * (0xa0000-0xbffff stays MMIO), and vcpu 0. Without TEST_VM_IRQCHIP the
 * irqchip and PIT are disabled so `hlt` exits. Returns 0 or a negative
 * errno. */
int test_vm_create(struct test_vm *vm, struct kvm_callbacks *callbacks, void *opaque, unsigned long mem_size,
                   int flags);

/* kvm_finalize, and unmaps the RAM. */
void test_vm_destroy(struct test_vm *vm);

/* Copies [start, end) to guest-physical `gpa`. */
void test_vm_load(struct test_vm *vm, uint64_t gpa, const void *start, const void *end);

/* Loads a guest program assembled with GUEST_BEGIN(name) at GUEST_CODE. */
#define TEST_VM_LOAD_GUEST(vm, name) test_vm_load((vm), GUEST_CODE, name##_start, name##_end)

/* Declares the symbols of guest program `name`. */
#define DECLARE_GUEST(name) extern const uint8_t name##_start[], name##_end[]
/* Declares a label inside guest program `name`. */
#define DECLARE_GUEST_LABEL(name, label) extern const uint8_t name##_##label[]
/* Guest address of `label`, inside the program starting at `start`, once
 * that program is loaded at GUEST_CODE. */
static inline uint64_t guest_code_addr(const void *start, const void *label)
{
    return GUEST_CODE + (uint64_t)((uintptr_t)label - (uintptr_t)start);
}
/* Guest address of a label of a program loaded at GUEST_CODE. */
#define GUEST_LABEL_ADDR(name, label) guest_code_addr(name##_start, name##_##label)

/* Puts `vcpu` in 64-bit long mode at `rip`, writing the page tables, GDT
 * and an empty IDT, and setting the host's supported CPUID. */
int test_vcpu_long_mode(struct test_vm *vm, int vcpu, uint64_t rip);

/* Puts `vcpu` in 32-bit protected mode at `eip` with flat segments, the
 * GDT at GUEST_GDT and a 256-entry IDT at GUEST_IDT; with `paging`, 4 MiB
 * pages (PSE) identity-map the low 4 GiB from a directory at GUEST_PML4. */
int test_vcpu_protected_mode(struct test_vm *vm, int vcpu, uint64_t eip, int paging);

/* Points IDT vector `vector` at `handler` (32-bit interrupt gate). */
void test_vm_set_idt_gate32(struct test_vm *vm, int vector, uint32_t handler);

/* Points IDT vector `vector` at `handler` (64-bit interrupt gate). */
void test_vm_set_idt_gate(struct test_vm *vm, int vector, uint64_t handler);

/* Puts `vcpu` in real mode at `cs:ip` with all data segments = `cs`. */
int test_vcpu_real_mode(struct test_vm *vm, int vcpu, uint16_t cs, uint16_t ip);

/* A `halt` callback that ends kvm_run with 1 (the guests end with hlt). */
int test_stop_on_halt(void *opaque, int vcpu);

/* A 64-bit FNV-1a hash of `n` bytes, to compare memory before and after. */
uint64_t test_checksum(const uint8_t *p, size_t n);

/* KVM_CHECK_EXTENSION straight on /dev/kvm (kvm_check_extension says only
 * 1 or 0, as in 2008); negative errno on failure. */
int test_host_extension(int cap);

/* True when the program runs under valgrind (make check-leaks), where
 * timings and RSS mean nothing. */
int test_under_valgrind(void);

/* Number of open file descriptors of this process. */
int test_count_fds(void);

/* Resident set size of this process in KiB. */
long test_rss_kib(void);

#endif

/*
 * Guests for the client-style tests: test_kvmctl_style.c (a BIOS started
 * from the reset vector) and test_qemu_style.c (ROM reads, interrupts
 * from a PIC, coalesced MMIO, and a long-running loop under memory layout
 * changes).
 */
#include "guest.inc"
#include "clients.h"

/*
 * A 64 KiB real-mode BIOS for 0xF0000, entered at the reset vector
 * (0xf000:0xfff0) of a vcpu fresh from kvm_create_vcpu. It stores a word
 * at the start and one at the end of the VGA window (RAM for kvmctl), reads
 * the first back, writes it to port 0x10 and halts.
 */
    .code16
    .section .rodata.kvmctl_bios, "a"
    .globl kvmctl_bios_start, kvmctl_bios_end
kvmctl_bios_start:
kvmctl_bios_main:
    mov $0xa000, %ax
    mov %ax, %ds
    movw $KVMCTL_VGA_WORD, 0x0000
    movw $KVMCTL_VGA_WORD_END, 0xfffe
    mov $0xb000, %ax
    mov %ax, %ds
    movw $KVMCTL_VGA_WORD_END, 0xfffe
    mov $0xa000, %ax
    mov %ax, %ds
    mov 0x0000, %ax
    out %ax, $0x10
1:  hlt
    jmp 1b
    .org 0xfff0
    ljmp $0xf000, $(kvmctl_bios_main - kvmctl_bios_start)
    .org 0x10000
kvmctl_bios_end:

    .code64

/* The BIOS image's first quadword at 0xfffe0000 + 0x10 into rax, and the
 * same through the ISA BIOS window at 0xe0010 into rbx. */
GUEST_BEGIN(read_rom)
    mov $(QEMU_ROM_BASE + 0x10), %esi
    mov (%rsi), %rax
    mov $(QEMU_ISA_BIOS + 0x10), %esi
    mov (%rsi), %rbx
    hlt
GUEST_END(read_rom)

/*
 * Programs the master 8259 (vectors 0x20-0x27, only IRQ 4 unmasked),
 * tells the VMM on port 0x10 (value 1), then waits with `sti; hlt` until
 * its IRQ 4 handler has counted QEMU_IRQS interrupts, and writes 2 to
 * port 0x10.
 */
GUEST_BEGIN(pic_interrupts)
    mov $0x11, %al            /* ICW1: edge triggered, cascade, ICW4 follows */
    out %al, $0x20
    mov $0x20, %al            /* ICW2: vector base 0x20 */
    out %al, $0x21
    mov $0x04, %al            /* ICW3: a slave on IRQ 2 */
    out %al, $0x21
    mov $0x01, %al            /* ICW4: 8086 mode */
    out %al, $0x21
    mov $0xef, %al            /* OCW1: only IRQ 4 unmasked */
    out %al, $0x21
    mov $1, %al
    out %al, $0x10
1:  cli
    cmpl $QEMU_IRQS, QEMU_IRQ_COUNT
    jae 2f
    sti                       /* the interrupt shadow makes sti; hlt atomic */
    hlt
    jmp 1b
2:  mov $2, %al
    out %al, $0x10
    hlt
LABEL(pic_interrupts, irq4)
    push %rax
    incl QEMU_IRQ_COUNT
    mov $0x20, %al            /* non-specific EOI */
    out %al, $0x20
    pop %rax
    iretq
GUEST_END(pic_interrupts)

/* Stores 0, 1, 2, ... QEMU_COALESCED_WRITES - 1 to consecutive words of
 * the coalesced zone, writes 1 to port 0x10, stores QEMU_COALESCED_WRITES
 * more, and halts. */
GUEST_BEGIN(coalesced_writes)
    mov $QEMU_COALESCED_ZONE, %ebx
    xor %ecx, %ecx
1:  mov %ecx, (%rbx,%rcx,4)
    inc %ecx
    cmp $QEMU_COALESCED_WRITES, %ecx
    jb 1b
    mov $1, %al
    out %al, $0x10
2:  mov %ecx, (%rbx,%rcx,4)
    inc %ecx
    cmp $(2 * QEMU_COALESCED_WRITES), %ecx
    jb 2b
    hlt
GUEST_END(coalesced_writes)

/*
 * Runs until the VMM sets the quadword at QEMU_STOP: r12 counts the
 * rounds, r13 sums 0 + 1 + ... + (r12 - 1), each round also stores the
 * count and calls code on the next page, so it fetches and stores in
 * several pages of one slot. Then writes 2 to port 0x10 and halts.
 */
GUEST_BEGIN(layout_churn)
    xor %r12, %r12
    xor %r13, %r13
1:  add %r12, %r13
    inc %r12
    mov %r12, QEMU_COUNT
    call layout_churn_next_page
    cmpq $0, QEMU_STOP
    je 1b
    mov $2, %al
    out %al, $0x10
    hlt
    .balign 4096
LABEL(layout_churn, next_page)
    mov %r13, QEMU_COUNT + 8
    ret
GUEST_END(layout_churn)

    .section .note.GNU-stack, "", @progbits

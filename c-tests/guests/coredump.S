/* Guests for test_core.c. */
#include "guest.inc"

    .code64

/* Each vcpu sets registers from its number (rdi), then halts for good
 * with interrupts off: with an in-kernel irqchip it stays inside KVM_RUN. */
GUEST_BEGIN(halt_with_registers)
    mov %rdi, %rbx
    imul $0x1111, %rbx
    lea 1(%rbx), %r12
    lea 2(%rbx), %r13
    mov $0x7e57ab1e, %r15
    cli
LABEL(halt_with_registers, halt)
    hlt
    jmp halt_with_registers_halt
GUEST_END(halt_with_registers)

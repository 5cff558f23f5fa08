/* Guests for test_state.c: each reads or shows one piece of vcpu state. */
#include "guest.inc"

    .code64

/* rdmsr of MSR rcx into rax. */
GUEST_BEGIN(read_msr)
    rdmsr
    hlt
GUEST_END(read_msr)

/* cpuid of leaf rax: results in rax, rbx, rcx, rdx. */
GUEST_BEGIN(run_cpuid)
    xor %ecx, %ecx
    cpuid
    hlt
GUEST_END(run_cpuid)

/* cr8 into rax; then cr8 = 3 and an out to port 0x10. */
GUEST_BEGIN(cr8)
    mov %cr8, %rax
    mov $3, %ebx
    mov %rbx, %cr8
    out %al, $0x10
    hlt
GUEST_END(cr8)

/* Interrupts on, an exit, interrupts off, an exit. */
GUEST_BEGIN(interrupt_flag)
    sti
    nop
    out %al, $0x10
    cli
    out %al, $0x11
    hlt
GUEST_END(interrupt_flag)

/* Interrupts on and exits in a loop; the handler of vector 0x40 says so and halts. */
GUEST_BEGIN(wait_for_irq)
    sti
LABEL(wait_for_irq, loop)
    out %al, $0x21
    jmp wait_for_irq_loop
LABEL(wait_for_irq, handler)
    mov $0x40, %al
    out %al, $0x40
    hlt
GUEST_END(wait_for_irq)

/* Reads and then writes the LAPIC's TPR register, each followed by an out. */
GUEST_BEGIN(touch_tpr)
    mov $0xfee00080, %ebx
    mov (%rbx), %eax
    out %al, $0x10
    movl $0x10, (%rbx)
    out %al, $0x11
    hlt
GUEST_END(touch_tpr)

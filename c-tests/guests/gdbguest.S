/* The guest that the gdb tests debug (c-tests/gdb). Two vcpus: vcpu 0 runs
 * `main`, vcpu 1 runs `second`; both halt once `quit` is set. */
#include "guest.inc"

    .code64

GUEST_BEGIN(gdbguest)
LABEL(gdbguest, main)
    mov $0x1111111111111111, %r8
    mov $0x2222222222222222, %r9
    mov $0x3333333333333333, %r12
    mov $0xfedcba9876543210, %r15
LABEL(gdbguest, regs_set)
    nop
LABEL(gdbguest, write_var)
    movq $0xabcdef, gdbguest_variable(%rip)
LABEL(gdbguest, after_write)
    nop
LABEL(gdbguest, read_var)
    mov gdbguest_variable(%rip), %rax
LABEL(gdbguest, after_read)
    nop
    xor %ebx, %ebx
    xor %eax, %eax
    xor %ecx, %ecx
    xor %edx, %edx
LABEL(gdbguest, step_loop)
    inc %rbx
LABEL(gdbguest, step_add)
    add $2, %rcx
LABEL(gdbguest, step_xor)
    xor %rdx, %rax
LABEL(gdbguest, step_cmp)
    cmp $1000, %rbx
LABEL(gdbguest, step_jne)
    jne gdbguest_step_loop
LABEL(gdbguest, spin)
    cmpl $0, gdbguest_quit(%rip)
    je gdbguest_spin
    mov $0x4f, %al
    out %al, $0x10
    hlt

LABEL(gdbguest, second)
    call gdbguest_second_func
    cmpl $0, gdbguest_quit(%rip)
    je gdbguest_second
    hlt
LABEL(gdbguest, second_func)
    nop
    ret

    /* Data on a page of its own, so that reads of it can be watched. */
    .balign 4096
LABEL(gdbguest, variable)
    .quad 0
LABEL(gdbguest, quit)
    .long 0
GUEST_END(gdbguest)

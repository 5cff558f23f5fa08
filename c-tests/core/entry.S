/* Entry of the test_core guest kernel: a stack per vcpu (rdi = vcpu), then kmain. */
    .section .text.entry, "ax"
    .globl _start
_start:
    lea stacks_top(%rip), %rsp
    mov %rdi, %rax
    shl $14, %rax
    sub %rax, %rsp
    xor %ebp, %ebp
    call kmain
1:  hlt
    jmp 1b

    .section .bss
    .balign 4096
stacks:
    .skip 4 * 16384
stacks_top:

    .section .note.GNU-stack, "", @progbits

/* The guest kernel ELF (KERNEL_ELF, built by the Makefile) inside test_core. */
    .section .rodata.core_kernel, "a"
    .globl core_kernel_start, core_kernel_end
    .balign 16
core_kernel_start:
    .incbin KERNEL_ELF
core_kernel_end:
    .section .note.GNU-stack, "", @progbits

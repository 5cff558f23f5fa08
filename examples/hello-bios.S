/*
 * The demo guest: a 64 KiB real-mode "BIOS" loaded at guest-physical
 * 0xF0000 the way 2008 guests were. The vcpu starts at the reset vector
 * (0xf000:0xfff0, CS based at 0xF0000 as on a 2008 kernel), jumps to `start`,
 * writes a greeting to port 0xE9 one byte at a time and halts.
 */
    .code16
    .section .rodata.hello_bios, "a"
    .globl hello_bios_start, hello_bios_end
hello_bios_start:
start:
    mov $0xf000, %ax
    mov %ax, %ds
    mov $(greeting - hello_bios_start), %si
    cld
next:
    lodsb
    test %al, %al
    jz done
    out %al, $0xe9
    jmp next
done:
    hlt
    jmp done
greeting:
    .asciz "Hello from a real-mode guest, booted at the reset vector by libkvm!\n"

    .org 0xfff0
reset_vector:
    ljmp $0xf000, $(start - hello_bios_start)
    .org 0x10000
hello_bios_end:

    .section .note.GNU-stack, "", @progbits

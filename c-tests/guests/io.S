/* Guests for test_io.c: port I/O, MMIO, halt, shutdown. */
#include "guest.inc"

    .code64

/* out of each size, then in of each size echoed back out on port + 0x10. */
GUEST_BEGIN(io_sizes)
    mov $0x12, %al
    out %al, $0x10
    mov $0x1234, %ax
    out %ax, $0x12
    mov $0x12345678, %eax
    out %eax, $0x14
    in $0x20, %al
    out %al, $0x30
    in $0x22, %ax
    out %ax, $0x32
    in $0x24, %eax
    out %eax, $0x34
    hlt
GUEST_END(io_sizes)

/* rep outsb of "hello" to port 0x40, then rep insb of 4 bytes from port 0x41 to GUEST_DATA. */
GUEST_BEGIN(string_io)
    cld
    lea message(%rip), %rsi
    mov $5, %ecx
    mov $0x40, %dx
    rep outsb
    mov $GUEST_DATA, %edi
    mov $4, %ecx
    mov $0x41, %dx
    rep insb
    hlt
message:
    .ascii "hello"
GUEST_END(string_io)

/* A 4-byte MMIO store to 0xA0000 (the VGA hole), then an 8-byte MMIO load into rax. */
GUEST_BEGIN(mmio)
    movl $0xcafef00d, 0xa0000
    movq 0xa0008, %rax
    hlt
GUEST_END(mmio)

/* Divide by zero with an empty IDT: #DE, #GP, #DF, triple fault. */
GUEST_BEGIN(triple_fault)
    lidt empty_idt(%rip)
    xor %ecx, %ecx
    div %ecx
    hlt
empty_idt:
    .word 0
    .quad 0
GUEST_END(triple_fault)

/* Spins without exits until something stops the vcpu. */
GUEST_BEGIN(spin)
LABEL(spin, loop)
    jmp spin_loop
GUEST_END(spin)

    .code16

/* Real mode: out 0x41 ('A') to port 0x10, read port 0x11 into al, write it to 0x12, halt. */
GUEST_BEGIN(real_mode_io)
    mov $0x41, %al
    out %al, $0x10
    in $0x11, %al
    out %al, $0x12
    hlt
GUEST_END(real_mode_io)

    .code64

/* An undefined instruction with an empty IDT. */
GUEST_BEGIN(undefined_instruction)
    lidt undefined_instruction_empty_idt(%rip)
    ud2
    hlt
LABEL(undefined_instruction, empty_idt)
    .word 0
    .quad 0
GUEST_END(undefined_instruction)

/* Stores to MMIO forever. */
GUEST_BEGIN(mmio_forever_store)
    mov $0xa0000, %ebx
1:  movl $0x55, (%rbx)
    jmp 1b
GUEST_END(mmio_forever_store)

/* Jumps into the VGA hole: code fetched from unbacked memory. */
GUEST_BEGIN(execute_mmio)
    mov $0xa0000, %eax
    jmp *%rax
GUEST_END(execute_mmio)

/* vcpu N writes its number (rbx) to port 0x20 forever. */
GUEST_BEGIN(out_forever)
    mov %ebx, %eax
1:  out %al, $0x20
    jmp 1b
GUEST_END(out_forever)

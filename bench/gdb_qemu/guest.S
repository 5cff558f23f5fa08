/*
 * The guest that `make bench-gdb-qemu` debugs on QEMU+KVM and on a libkvm
 * VMM alike: a 32-bit multiboot (v1) kernel, so that `qemu-system-x86_64
 * -kernel` boots it and libkvm_vmm.c can load the same file.
 *
 * Entered in 32-bit protected mode, paging off, flat segments, as
 * multiboot says (EAX = 0x2BADB002, EBX = the info structure, which it
 * ignores). It loops forever: a straight stretch of 2,000 ALU instructions
 * (stepi), then a call to bench_func (breakpoints), which increments
 * bench_counter (the watchpoint) and writes to port 0x80 (an exit to the
 * VMM, which both ignore).
 *
 * gcc -m32 -c guest.S; ld -m elf_i386 -T guest.ld: see Makefile.snippet.
 */

#define MULTIBOOT_MAGIC 0x1BADB002
#define MULTIBOOT_FLAGS 0 /* no alignment, memory map or video requests */
#define BENCH_PORT 0x80   /* the POST delay port: a no-op on QEMU */

    .section .multiboot, "a"
    .balign 4
    .long MULTIBOOT_MAGIC
    .long MULTIBOOT_FLAGS
    .long -(MULTIBOOT_MAGIC + MULTIBOOT_FLAGS)

    .text
    .code32
    .globl _start
_start:
    cli
    movl $stack_top, %esp
    xorl %eax, %eax
    xorl %ebx, %ebx
    xorl %ecx, %ecx
    xorl %edx, %edx

    /* The top of the loop: where each side is first stopped, and where
     * the steps start. */
    .globl bench_loop
bench_loop:
    /* 4 x 500 register-only instructions: no memory access, no exit, so a
     * stepi costs the debugger's round trip and one emulated instruction. */
    .rept 500
    addl $3, %eax
    xorl %eax, %ebx
    subl %ebx, %ecx
    incl %edx
    .endr
    call bench_func
    jmp bench_loop

    .globl bench_func
    .type bench_func, @function
bench_func:
    incl bench_counter
    /* Where a write watchpoint on bench_counter stops: after the store. */
    .globl bench_func_stored
bench_func_stored:
    outb %al, $BENCH_PORT
    /* Past the store and the port write: the watchpoint probe's guard
     * breakpoint, which stops there only if the watchpoint did not fire. */
    .globl bench_func_ret
bench_func_ret:
    ret
    .size bench_func, . - bench_func

    /* The watched word alone on its page: a VMM that watches by page
     * protection then traps on no other store (the stack is elsewhere). */
    .data
    .balign 4096
    .globl bench_counter
    .type bench_counter, @object
bench_counter:
    .long 0
    .size bench_counter, 4
    .balign 4096

    .bss
    .balign 16
stack:
    .skip 4096
stack_top:

    .section .note.GNU-stack, "", @progbits

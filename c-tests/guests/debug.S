/* Guests for test_debug.c. Labels mark instructions the tests break on. */
#include "guest.inc"

    .code64

/* Straight-line code: breakpoints and single steps land on the labels. */
GUEST_BEGIN(straight)
LABEL(straight, first)
    mov $1, %eax
LABEL(straight, second)
    out %al, $0x10
LABEL(straight, third)
    mov $2, %eax
LABEL(straight, fourth)
    add $3, %eax
LABEL(straight, fifth)
    out %al, $0x11
LABEL(straight, last)
    hlt
GUEST_END(straight)

/* One-byte instructions, then a halt: each single step moves RIP by one
 * byte, and only the last is a `hlt`. */
GUEST_BEGIN(one_byte_steps)
    nop
LABEL(one_byte_steps, second)
    cmc
    cld
    cmc
LABEL(one_byte_steps, last)
    hlt
GUEST_END(one_byte_steps)

/* Writes the 6000 bytes at GUEST_DATA to port 0x12 with one `rep outsb`:
 * more than the kernel's I/O page, so it leaves the guest in pieces. */
GUEST_BEGIN(string_out)
    mov $GUEST_DATA, %esi
    mov $6000, %ecx
    mov $0x12, %dx
    rep outsb
    hlt
GUEST_END(string_out)

/* Passes the instruction at `body` three times, then halts. */
GUEST_BEGIN(loop3)
    mov $3, %ecx
LABEL(loop3, body)
    out %al, $0x10
    dec %ecx
    jnz loop3_body
    hlt
GUEST_END(loop3)

/* A spot to break on, then 1,000 turns of a loop without an exit, one
 * `out` to port 0x10 and a halt. */
GUEST_BEGIN(spin_after)
LABEL(spin_after, spot)
    mov $1000, %ecx
1:  dec %ecx
    jnz 1b
    out %al, $0x10
    hlt
GUEST_END(spin_after)

/* Writes 8 bytes to `variable`, says so on port 0x10, halts. */
GUEST_BEGIN(store_variable)
    movq $0x1234, store_variable_variable(%rip)
    out %al, $0x10
    hlt
    .balign 8
LABEL(store_variable, variable)
    .quad 0
GUEST_END(store_variable)

/* The guest's own int3, handled by its IDT vector 3 handler (which says so
 * on port 0x33), then a spot the debugger breaks on. */
GUEST_BEGIN(own_int3)
    int3
    out %al, $0x10
LABEL(own_int3, debugger_spot)
    nop
    out %al, $0x11
    hlt
LABEL(own_int3, handler)
    out %al, $0x33
    iretq
GUEST_END(own_int3)

/* The guest single-steps itself with TF: its #DB handler reports DR6.BS on
 * port 0x31, clears TF in the interrupted RFLAGS and returns. */
GUEST_BEGIN(own_trap_flag)
    pushfq
    orq $0x100, (%rsp)
    popfq
    nop
    out %al, $0x10
    hlt
LABEL(own_trap_flag, handler)
    mov %dr6, %rax
    shr $14, %eax
    and $1, %eax
    out %al, $0x31
    andq $~0x100, 16(%rsp)
    iretq
GUEST_END(own_trap_flag)

/* Moves RSP below the top of mapped memory and back without touching the
 * stack (the test puts RSP at the end of the page tables' map). */
GUEST_BEGIN(stack_off_the_map)
LABEL(stack_off_the_map, move)
    sub $8, %rsp
    add $8, %rsp
    out %al, $0x10
    hlt
GUEST_END(stack_off_the_map)

/* Code with an int3 in it, as a 2008 frontend would have patched. */
GUEST_BEGIN(patched_by_frontend)
    mov $7, %eax
LABEL(patched_by_frontend, int3)
    int3
    out %al, $0x10
    hlt
GUEST_END(patched_by_frontend)

/* Maps the 2 MiB page at gpa 0x600000 at virtual 0x40000000 (PD 1, entry
 * 0), then jumps to the code there (at offset `remote_entry`). */
GUEST_BEGIN(map_and_jump)
    mov $(0x600000 | 0x83), %eax
    mov %rax, (GUEST_PD + 0x1000)
    invlpg 0x40000000
    mov $0x40000000 + 0x100, %eax
    jmp *%rax
GUEST_END(map_and_jump)

/* Code placed at gpa 0x600100 by the test, run at virtual 0x40000100. */
GUEST_BEGIN(remote_code)
    nop
LABEL(remote_code, target)
    out %al, $0x10
    hlt
GUEST_END(remote_code)

    .code16

/* Real mode: two outs and a halt. */
GUEST_BEGIN(real_straight)
    mov $1, %al
LABEL(real_straight, target)
    out %al, $0x10
    hlt
GUEST_END(real_straight)

/* Counts on port 0x10 (the low byte of 1, 2, 3, ...) until GUEST_DATA
 * holds non-zero, then halts with the count in rax. */
    .code64
GUEST_BEGIN(count_until_told)
    xor %eax, %eax
LABEL(count_until_told, next)
    inc %rax
LABEL(count_until_told, say)
    out %al, $0x10
    mov GUEST_DATA, %rcx
    test %rcx, %rcx
    jz count_until_told_next
    hlt
GUEST_END(count_until_told)

/* test_matrix.c: one pass through port I/O, a store and a load of
 * GUEST_DATA, an MMIO store, the guest's own int3 and its own trap flag,
 * each instruction labelled m0.. in order. The handlers say on ports 0x33
 * (#BP) and 0x31 (#DB, clearing TF in the frame). */
    .code64
GUEST_BEGIN(matrix)
LABEL(matrix, m0)
    mov $1, %eax
LABEL(matrix, m1)
    out %al, $0x10
LABEL(matrix, m2)
    mov %rax, GUEST_DATA
LABEL(matrix, m3)
    mov GUEST_DATA, %rcx
LABEL(matrix, m4)
    mov %ecx, 0xa0000
LABEL(matrix, m5)
    int3
LABEL(matrix, m6)
    pushfq
LABEL(matrix, m7)
    orq $0x100, (%rsp)
LABEL(matrix, m8)
    popfq
LABEL(matrix, m9)
    nop
LABEL(matrix, m10)
    add $5, %eax
LABEL(matrix, m11)
    out %al, $0x11
LABEL(matrix, m12)
    hlt
LABEL(matrix, bp_handler)
    out %al, $0x33
    iretq
LABEL(matrix, db_handler)
    out %al, $0x31
    andq $~0x100, 16(%rsp)
    iretq
GUEST_END(matrix)

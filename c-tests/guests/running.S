/* Guests for test_running.c: vcpus that compute without exits. */
#include "guest.inc"

    .code64

/*
 * Counts without exits until the quadword at RUNNING_STOP is set: rax
 * counts the rounds and rbx sums their numbers, so at `add` (the loop
 * top) rbx = rax * (rax - 1) / 2 and at `inc` rbx = rax * (rax + 1) / 2.
 * An instruction lost or run twice breaks that. Then halts.
 */
GUEST_BEGIN(count)
LABEL(count, add)
    add %rax, %rbx
LABEL(count, inc)
    inc %rax
    cmpq $0, RUNNING_STOP
    je count_add
LABEL(count, halt)
    hlt
    jmp count_halt
LABEL(count, unused)
    nop                     /* breakpoints go here: never executed */
    nop
GUEST_END(count)

/* Guests for test_memory.c: one access each, parameters in registers. */
#include "guest.inc"

    .code64

/* Stores rsi (8 bytes) at [rdi], then halts. */
GUEST_BEGIN(store64)
    mov %rsi, (%rdi)
    hlt
GUEST_END(store64)

/* Loads 8 bytes at [rdi] into rax, then halts. */
GUEST_BEGIN(load64)
    mov (%rdi), %rax
    hlt
GUEST_END(load64)

/* Guests for the benchmarks (bench/exit_bench.c): each exits forever. */
#include "guest.inc"

    .code64

/* A port write per turn. */
GUEST_BEGIN(pio_forever)
1:  out %al, $0x10
    jmp 1b
GUEST_END(pio_forever)

/* An MMIO store per turn (0xA0000 is the unbacked VGA window). */
GUEST_BEGIN(mmio_forever)
    mov $0xa0000, %ebx
1:  movl $1, (%rbx)
    jmp 1b
GUEST_END(mmio_forever)

/* A hlt per turn (no in-kernel irqchip: each exits). */
GUEST_BEGIN(hlt_forever)
1:  hlt
    jmp 1b
GUEST_END(hlt_forever)

/* Straight-line code for single steps and a breakpoint at `spot`. */
GUEST_BEGIN(nops_forever)
LABEL(nops_forever, spot)
    nop
    nop
    jmp nops_forever_spot
GUEST_END(nops_forever)

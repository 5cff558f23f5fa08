/* Guests for test_vcpus.c and test_lifecycle.c. */
#include "guest.inc"

    .code64

/* vcpu 0 waits for vcpu 1's flag at GUEST_DATA, then reports on port 0x10;
 * vcpu 1 sets the flag, reports on port 0x11. Both halt. */
GUEST_BEGIN(two_vcpus)
LABEL(two_vcpus, waiter)
    mov $GUEST_DATA, %ebx
1:  cmpl $0, (%rbx)
    je 1b
    out %al, $0x10
    hlt
LABEL(two_vcpus, setter)
    mov $GUEST_DATA, %ebx
    movl $1, (%rbx)
    out %al, $0x11
    hlt
GUEST_END(two_vcpus)

/* Outputs rbx on port 0x10 and halts. */
GUEST_BEGIN(say_rbx)
    mov %ebx, %eax
    out %eax, $0x10
    hlt
GUEST_END(say_rbx)

/* Guests for test_implicit.c: each makes the CPU use a page by itself (a
 * descriptor load, sgdt/lgdt, an exception through the IDT, on a stack,
 * through the TSS, page walks, string stores, a store across a page edge),
 * then stores 0x1234 to the variable at rbx/ebx, loads it back, says it on
 * port 0x10 and halts. The test puts the structure and the variable on the
 * same page. */
#include "guest.inc"

#define THE_PAGE 0x20000

#define EPILOGUE64             \
    movq $0x1234, (%rbx);      \
    mov (%rbx), %rax;          \
    out %eax, $0x10;           \
    hlt

#define EPILOGUE32             \
    movl $0x1234, (%ebx);      \
    mov (%ebx), %eax;          \
    out %eax, $0x10;           \
    hlt

    .code64

/* Loads DS and CS from descriptors whose accessed bit is clear. */
GUEST_BEGIN(imp64_gdt)
    mov $0x10, %eax
    mov %eax, %ds
    pushq $0x08
    lea 1f(%rip), %rax
    pushq %rax
    lretq
1:  EPILOGUE64
GUEST_END(imp64_gdt)

/* Stores and loads the descriptor-table registers through THE_PAGE. */
GUEST_BEGIN(imp64_sgdt)
    sgdt THE_PAGE + 0x100
    lgdt THE_PAGE + 0x100
    sidt THE_PAGE + 0x200
    lidt THE_PAGE + 0x200
    EPILOGUE64
GUEST_END(imp64_sgdt)

/* Takes a #UD, whose handler skips the ud2. */
GUEST_BEGIN(imp64_ud)
    ud2
    EPILOGUE64
LABEL(imp64_ud, handler)
    addq $2, (%rsp)
    iretq
GUEST_END(imp64_ud)

/* Only the epilogue: the page walks of every access. */
GUEST_BEGIN(imp64_plain)
    EPILOGUE64
GUEST_END(imp64_plain)

/* rep stosb over the 16 bytes from 8 below the variable. */
GUEST_BEGIN(imp64_string)
    lea -8(%rbx), %rdi
    mov $16, %ecx
    mov $0x55, %al
    rep stosb
    EPILOGUE64
GUEST_END(imp64_string)

    .code32

GUEST_BEGIN(imp32_gdt)
    mov $0x10, %eax
    mov %eax, %ds
    ljmp $0x08, $ADDR(imp32_gdt, reloaded)
LABEL(imp32_gdt, reloaded)
    EPILOGUE32
GUEST_END(imp32_gdt)

GUEST_BEGIN(imp32_sgdt)
    sgdt THE_PAGE + 0x100
    lgdt THE_PAGE + 0x100
    sidt THE_PAGE + 0x200
    lidt THE_PAGE + 0x200
    EPILOGUE32
GUEST_END(imp32_sgdt)

GUEST_BEGIN(imp32_ud)
    ud2
    EPILOGUE32
LABEL(imp32_ud, handler)
    addl $2, (%esp)
    iret
GUEST_END(imp32_ud)

GUEST_BEGIN(imp32_plain)
    EPILOGUE32
GUEST_END(imp32_plain)

GUEST_BEGIN(imp32_string)
    lea -8(%ebx), %edi
    mov $16, %ecx
    mov $0x55, %al
    rep stosb
    EPILOGUE32
GUEST_END(imp32_string)

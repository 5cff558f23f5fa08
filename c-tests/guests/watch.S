/* Guests for test_watch.c. Data lives at GUEST_DATA (its own pages); the
 * code page holds `code_var` for the test of a watched code page. */
#include "guest.inc"

    .code64

/* Loads from the watched page, stores to data+8 (watched), loads it back. */
GUEST_BEGIN(store_and_load)
    mov $GUEST_DATA, %ebx
    mov 0x10(%rbx), %rcx          /* a load next to the watched range */
    movq $0x1122334455667788, %rax
LABEL(store_and_load, store)
    mov %rax, 8(%rbx)
LABEL(store_and_load, after_store)
    mov 8(%rbx), %rdx             /* a load of the watched range itself */
    out %al, $0x10
    hlt
GUEST_END(store_and_load)

/* Stores rcx into each of 100 pages from GUEST_DATA, page by page. */
GUEST_BEGIN(hundred_pages)
    mov $GUEST_DATA, %ebx
    mov $100, %ecx
1:  mov %rcx, (%rbx)
    add $4096, %rbx
    dec %ecx
    jnz 1b
    hlt
GUEST_END(hundred_pages)

/* Two stores to one page: data+0x100, then data+0x800. */
GUEST_BEGIN(two_on_a_page)
    mov $GUEST_DATA, %ebx
    movl $1, 0x100(%rbx)
    movl $2, 0x800(%rbx)
    hlt
GUEST_END(two_on_a_page)

/* vcpu 0 (`loader`) loads the qword at GUEST_DATA 2000 times, then sets
 * the flag at GUEST_DATA+8 and halts; vcpu 1 (`poller`) polls that flag,
 * on the same page, with the same registers every time, then halts. */
GUEST_BEGIN(poll_and_load)
LABEL(poll_and_load, loader)
    mov $2000, %ecx
1:  mov GUEST_DATA, %rax
    dec %ecx
    jnz 1b
    movl $1, GUEST_DATA + 8
    hlt
LABEL(poll_and_load, poller)
    cmpl $0, GUEST_DATA + 8
    je poll_and_load_poller
    hlt
GUEST_END(poll_and_load)

/* Loads the watched qword at data+0x40 into rax, then says rax on port 0x10. */
GUEST_BEGIN(load_watched)
    mov $GUEST_DATA, %ebx
LABEL(load_watched, load)
    mov 0x40(%rbx), %rax
LABEL(load_watched, after_load)
    out %eax, $0x10
    hlt
GUEST_END(load_watched)

/* Stores to a variable in its own code page, ten times, then halts. */
GUEST_BEGIN(code_page_store)
    mov $10, %ecx
1:  mov %ecx, code_page_store_code_var(%rip)
    dec %ecx
    jnz 1b
    hlt
LABEL(code_page_store, code_var)
    .long 0
GUEST_END(code_page_store)

/* Stores forever to data+0 (the watchpoint benchmark). */
GUEST_BEGIN(store_forever)
    mov $GUEST_DATA, %ebx
1:  incq (%rbx)
    jmp 1b
GUEST_END(store_forever)

/* Jumps to code the test put at GUEST_DATA + 0x200. */
GUEST_BEGIN(jump_to_data)
    mov $(GUEST_DATA + 0x200), %eax
    jmp *%rax
GUEST_END(jump_to_data)

/*
 * The guest kernel of test_core.c: a freestanding 64-bit C program linked
 * in the higher half (at 0xffffffff80200000, loaded at 0x200000) and built
 * with -g, like any kernel with symbols. Vcpu 0 stores a value in a global
 * and crashes three calls deep (an undefined instruction with an empty IDT:
 * a triple fault); the other vcpus wait two calls deep until released.
 */
#include <stdint.h>

volatile uint64_t core_counter;
volatile uint64_t core_waiters;
volatile uint64_t core_release; /* set by the VMM once the core is written */

/* An IDT with no entries: any exception becomes a triple fault. */
static struct __attribute__((packed)) {
    uint16_t limit;
    uint64_t base;
} empty_idt = {0, 0};

__attribute__((noinline)) static void crash_here(void)
{
    __asm__ volatile("lidt %0; ud2" : : "m"(empty_idt));
}

__attribute__((noinline)) static void level2(uint64_t value)
{
    core_counter = value;
    crash_here();
}

__attribute__((noinline)) static void level1(void)
{
    level2(0x1234abcd5678ef00ULL);
}

__attribute__((noinline)) static void wait_forever(void)
{
    __atomic_add_fetch(&core_waiters, 1, __ATOMIC_SEQ_CST);
    while (!core_release)
        __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void waiter(void)
{
    wait_forever();
}

void kmain(uint64_t vcpu)
{
    if (vcpu == 0) {
        while (core_waiters == 0)
            __asm__ volatile("" ::: "memory");
        level1();
    }
    waiter();
}

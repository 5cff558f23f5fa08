/*
 * hello: the smallest VMM written against the 2008 libkvm API.
 *
 * It creates a VM, gives it 2 MiB of RAM and vcpu 0, copies a real-mode
 * BIOS to 0xF0000 (where 2008-era guests lived), and runs the vcpu from
 * the reset vector (0xf000:0xfff0).
 * The guest writes a greeting to port 0xE9, which outb() prints, and halts.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "libkvm.h"

extern const uint8_t hello_bios_start[], hello_bios_end[];

enum { HELLO_PORT = 0xe9, RAM_SIZE = 2 << 20, BIOS_BASE = 0xf0000 };

static int hello_outb(void *opaque, uint16_t port, uint8_t value)
{
    (void)opaque;
    if (port == HELLO_PORT)
        putchar(value);
    return 0;
}

static int hello_halt(void *opaque, int vcpu)
{
    (void)opaque;
    (void)vcpu;
    return 1; /* the guest is done: end kvm_run */
}

int main(void)
{
    struct kvm_callbacks callbacks;
    kvm_context_t kvm;
    void *ram;
    int r;

    memset(&callbacks, 0, sizeof(callbacks));
    callbacks.outb = hello_outb;
    callbacks.halt = hello_halt;

    kvm = kvm_init(&callbacks, NULL);
    if (!kvm) {
        perror("kvm_init");
        return 1;
    }
    /* Without an in-kernel irqchip, hlt exits to us instead of waiting for an interrupt. */
    kvm_disable_irqchip_creation(kvm);
    r = kvm_create(kvm, RAM_SIZE, &ram);
    if (r < 0) {
        fprintf(stderr, "kvm_create: %s\n", strerror(-r));
        kvm_finalize(kvm);
        return 1;
    }
    /* As kvmctl did: the RAM, then vcpu 0. */
    ram = kvm_create_phys_mem(kvm, 0, RAM_SIZE, 0, 1);
    if (!ram || (r = kvm_create_vcpu(kvm, 0)) < 0) {
        fprintf(stderr, "creating RAM and vcpu 0: %s\n", strerror(ram ? -r : errno));
        kvm_finalize(kvm);
        return 1;
    }
    memcpy((uint8_t *)ram + BIOS_BASE, hello_bios_start, (size_t)(hello_bios_end - hello_bios_start));

    r = kvm_run(kvm, 0);
    fflush(stdout);
    kvm_finalize(kvm);
    if (r != 1) {
        fprintf(stderr, "kvm_run returned %d\n", r);
        return 1;
    }
    return 0;
}

/* Constants shared by the client-style tests and their guests (clients.S). */
#ifndef GUEST_CLIENTS_H
#define GUEST_CLIENTS_H

/* kvmctl style: what the BIOS stores in the VGA window. */
#define KVMCTL_VGA_WORD 0x5aa5
#define KVMCTL_VGA_WORD_END 0x1234

/* qemu style: the BIOS ROM at the top of 4 GiB, and the ISA BIOS window
 * that shows its last 128 KiB below 1 MiB. */
#define QEMU_ROM_BASE 0xfffe0000
#define QEMU_ROM_SIZE 0x20000
#define QEMU_ISA_BIOS 0xe0000

/* Interrupts the PIC guest waits for, and where it counts them. */
#define QEMU_IRQS 20
#define QEMU_IRQ_COUNT 0x100000

/* The coalesced MMIO zone and how many words the guest stores per batch
 * (more than the ring holds, so some arrive as plain MMIO exits). */
#define QEMU_COALESCED_ZONE 0xd0000000
#define QEMU_COALESCED_WRITES 400

/* The layout-churn guest's count and sum, and the VMM's stop flag. */
#define QEMU_COUNT 0x100100
#define QEMU_STOP 0x100200

#endif

/* Guest-physical layout shared by the C tests and the guest programs. */
#ifndef GUEST_LAYOUT_H
#define GUEST_LAYOUT_H

#define GUEST_GDT 0x500
#define GUEST_PML4 0x1000
#define GUEST_PDPT 0x2000
#define GUEST_PD 0x3000 /* four page directories: 0x3000-0x6fff map 4 GiB */
#define GUEST_IDT 0x8000
#define GUEST_CODE 0x10000
#define GUEST_STACK_TOP 0x80000
#define GUEST_STACK_SIZE 0x4000
#define GUEST_DATA 0x100000
/* test_running.c: the flag that ends the counting guests. */
#define RUNNING_STOP 0x1ff000

#endif

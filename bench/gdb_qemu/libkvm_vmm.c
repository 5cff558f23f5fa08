/*
 * The libkvm side of `make bench-gdb-qemu`: a small VMM that boots a
 * 32-bit multiboot (v1) ELF kernel the way QEMU's -kernel does, so that gdb
 * debugs the same guest on both sides.
 *
 *   LIBKVM_GDB=127.0.0.1:PORT libkvm_vmm guest.elf
 *
 * It copies the ELF's PT_LOAD segments into guest RAM at their physical
 * addresses, puts vcpu 0 in 32-bit flat protected mode at the entry point
 * with paging off (the C tests' set-up, c-tests/guest.c), EAX = 0x2BADB002
 * and EBX = an empty multiboot info structure, and runs it. LIBKVM_GDB makes kvm_create start the gdb stub
 * and hold the vcpu before its first instruction, as in c-tests/gdb. The
 * guest writes to a port the VMM ignores; the VMM ends when gdb kills the
 * guest (the shutdown callback) or after ALARM_SECONDS in any case.
 */
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "guest.h"

#define RAM_BYTES (64UL << 20) /* as QEMU's -m 64 */
/* Multiboot info: all zero, flags = 0. In the page-table area of the test
 * layout, unused without paging. */
#define MBI_ADDR 0x2000UL
#define MULTIBOOT_BOOT_MAGIC 0x2BADB002U
/* A wedged benchmark must not leave a VMM behind. */
#define ALARM_SECONDS 600

static int ignore_outb(void *opaque, uint16_t port, uint8_t value)
{
    (void)opaque;
    (void)port;
    (void)value;
    return 0;
}

/* gdb's `kill` ends kvm_run through this callback. */
static int end_run(void *opaque, int vcpu)
{
    (void)opaque;
    (void)vcpu;
    return 1;
}

/* Reads the whole of `path` into a malloc'd buffer; NULL with errno set. */
static uint8_t *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long len = -1;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0)
        len = ftell(f);
    if (len > 0 && fseek(f, 0, SEEK_SET) == 0)
        buf = malloc((size_t)len);
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (!buf) {
        errno = EIO;
        return NULL;
    }
    *size = (size_t)len;
    return buf;
}

/* Copies the PT_LOAD segments of the 32-bit ELF in `elf` into `ram` at
 * their physical addresses (RAM is fresh, so the .bss tails are zero).
 * Returns the entry point, or 0 when the file is not what multiboot loads. */
static uint32_t load_elf32(const uint8_t *elf, size_t size, uint8_t *ram)
{
    const Elf32_Ehdr *eh = (const void *)elf;
    int i;

    if (size < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS32 ||
        eh->e_machine != EM_386 || eh->e_phentsize != sizeof(Elf32_Phdr) ||
        eh->e_phoff + (size_t)eh->e_phnum * sizeof(Elf32_Phdr) > size) {
        fprintf(stderr, "not a 32-bit x86 ELF executable\n");
        return 0;
    }
    for (i = 0; i < eh->e_phnum; i++) {
        Elf32_Phdr ph;

        /* The table need not be aligned inside the file: copy each entry. */
        memcpy(&ph, elf + eh->e_phoff + (size_t)i * sizeof(ph), sizeof(ph));
        if (ph.p_type != PT_LOAD)
            continue;
        if (ph.p_filesz > ph.p_memsz || (uint64_t)ph.p_offset + ph.p_filesz > size ||
            (uint64_t)ph.p_paddr + ph.p_memsz > RAM_BYTES) {
            fprintf(stderr, "segment %d does not fit the file or the guest's RAM\n", i);
            return 0;
        }
        memcpy(ram + ph.p_paddr, elf + ph.p_offset, ph.p_filesz);
    }
    return eh->e_entry;
}

/* The machine state multiboot promises: flat 4 GiB segments, protected
 * mode without paging, interrupts off, EAX the boot magic and EBX the info
 * structure. */
static int enter_multiboot(struct test_vm *vm, uint32_t entry)
{
    struct kvm_regs regs;
    int r = test_vcpu_protected_mode(vm, 0, entry, 0);

    if (r == 0)
        r = kvm_get_regs(vm->kvm, 0, &regs);
    if (r < 0)
        return r;
    regs.rax = MULTIBOOT_BOOT_MAGIC;
    regs.rbx = MBI_ADDR;
    return kvm_set_regs(vm->kvm, 0, &regs);
}

int main(int argc, char **argv)
{
    struct kvm_callbacks callbacks;
    struct test_vm vm;
    uint8_t *elf;
    size_t elf_size = 0;
    uint32_t entry;
    int r;

    if (argc != 2) {
        fprintf(stderr, "usage: LIBKVM_GDB=HOST:PORT %s GUEST.ELF\n", argv[0]);
        return 2;
    }
    alarm(ALARM_SECONDS);
    elf = read_file(argv[1], &elf_size);
    if (!elf) {
        fprintf(stderr, "%s: %s\n", argv[1], strerror(errno));
        return 1;
    }

    memset(&callbacks, 0, sizeof(callbacks));
    callbacks.outb = ignore_outb;
    callbacks.halt = end_run;
    callbacks.shutdown = end_run;
    /* No in-kernel irqchip or PIT: the guest runs with interrupts off.
     * kvm_create starts the stub (LIBKVM_GDB). */
    r = test_vm_create(&vm, &callbacks, NULL, RAM_BYTES, 0);
    if (r < 0) {
        fprintf(stderr, "VM set-up: %s\n", strerror(-r));
        return 1;
    }
    entry = load_elf32(elf, elf_size, vm.mem);
    free(elf);
    if (!entry)
        return 1;
    r = enter_multiboot(&vm, entry);
    if (r < 0) {
        fprintf(stderr, "vcpu set-up: %s\n", strerror(-r));
        return 1;
    }
    printf("ready entry %#x\n", (unsigned)entry);
    fflush(stdout);

    r = kvm_run(vm.kvm, 0);
    printf("kvm_run returned %d\n", r);
    test_vm_destroy(&vm);
    return r < 0 ? 1 : 0;
}

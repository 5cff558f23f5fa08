/* Shared guest set-up for the C tests (see guest.h). */
#include "guest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

int test_vm_create(struct test_vm *vm, struct kvm_callbacks *callbacks, void *opaque, unsigned long mem_size,
                   int flags)
{
    void *ram;
    int r;

    memset(vm, 0, sizeof(*vm));
    ram = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ram == MAP_FAILED)
        return -errno;
    vm->mem = ram;
    vm->mem_size = mem_size;
    vm->kvm = kvm_init(callbacks, opaque);
    if (!vm->kvm) {
        r = -errno;
        goto fail;
    }
    if (!(flags & TEST_VM_IRQCHIP)) {
        kvm_disable_irqchip_creation(vm->kvm);
        kvm_disable_pit_creation(vm->kvm);
    }
    /* The 2008 pattern: kvm_create makes the VM and leaves the VMM's RAM
     * pointer alone; the VMM registers its RAM around the VGA window and
     * creates vcpu 0. */
    r = kvm_create(vm->kvm, mem_size, &ram);
    if (r == 0 && ram != vm->mem)
        r = -EINVAL;
    if (r == 0)
        r = kvm_register_userspace_phys_mem(vm->kvm, 0, vm->mem, mem_size < VGA_START ? mem_size : VGA_START, 0);
    if (r == 0 && mem_size > VGA_END)
        r = kvm_register_userspace_phys_mem(vm->kvm, VGA_END, vm->mem + VGA_END, mem_size - VGA_END, 0);
    if (r == 0)
        r = kvm_create_vcpu(vm->kvm, 0);
    if (r < 0)
        goto fail;
    return 0;
fail:
    test_vm_destroy(vm);
    return r;
}

void test_vm_destroy(struct test_vm *vm)
{
    if (vm->kvm)
        kvm_finalize(vm->kvm);
    if (vm->mem)
        munmap(vm->mem, vm->mem_size);
    memset(vm, 0, sizeof(*vm));
}

void test_vm_load(struct test_vm *vm, uint64_t gpa, const void *start, const void *end)
{
    memcpy(vm->mem + gpa, start, (size_t)((const uint8_t *)end - (const uint8_t *)start));
}

static void write_u64(struct test_vm *vm, uint64_t gpa, uint64_t value)
{
    memcpy(vm->mem + gpa, &value, sizeof(value));
}

/* The host's supported CPUID as old-style entries (sub-leaf 0 only). */
static int set_supported_cpuid(struct test_vm *vm, int vcpu)
{
    struct {
        struct kvm_cpuid2 header;
        struct kvm_cpuid_entry2 entries[256];
    } supported;
    struct kvm_cpuid_entry entries[256];
    int kvm_fd, n = 0, r;
    unsigned i;

    memset(&supported, 0, sizeof(supported));
    supported.header.nent = 256;
    kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm_fd < 0)
        return -errno;
    r = ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, &supported);
    close(kvm_fd);
    if (r < 0)
        return -errno;
    for (i = 0; i < supported.header.nent; i++) {
        const struct kvm_cpuid_entry2 *e = &supported.entries[i];
        if (e->index != 0)
            continue;
        memset(&entries[n], 0, sizeof(entries[n]));
        entries[n].function = e->function;
        entries[n].eax = e->eax;
        entries[n].ebx = e->ebx;
        entries[n].ecx = e->ecx;
        entries[n].edx = e->edx;
        n++;
    }
    return kvm_setup_cpuid(vm->kvm, vcpu, n, entries);
}

static void flat_segment(struct kvm_segment *s, uint16_t selector, uint8_t type, int code64)
{
    memset(s, 0, sizeof(*s));
    s->base = 0;
    s->limit = 0xffffffff;
    s->selector = selector;
    s->type = type;
    s->present = 1;
    s->s = 1;
    s->g = 1;
    s->l = code64 ? 1 : 0;
    s->db = code64 ? 0 : 1;
}

int test_vcpu_long_mode(struct test_vm *vm, int vcpu, uint64_t rip)
{
    struct kvm_sregs sregs;
    struct kvm_regs regs;
    int i, r;

    /* Identity map of the low 4 GiB with 2 MiB pages (the LAPIC is at 0xfee00000). */
    write_u64(vm, GUEST_PML4, GUEST_PDPT | 0x3);
    for (i = 0; i < 4; i++)
        write_u64(vm, GUEST_PDPT + 8 * i, (GUEST_PD + 0x1000 * (uint64_t)i) | 0x3);
    for (i = 0; i < 4 * 512; i++)
        write_u64(vm, GUEST_PD + 8 * i, ((uint64_t)i << 21) | 0x83);
    write_u64(vm, GUEST_GDT, 0);
    write_u64(vm, GUEST_GDT + 8, 0x00af9b000000ffffULL);  /* 64-bit code */
    write_u64(vm, GUEST_GDT + 16, 0x00cf93000000ffffULL); /* data */

    r = set_supported_cpuid(vm, vcpu);
    if (r < 0)
        return r;
    r = kvm_get_sregs(vm->kvm, vcpu, &sregs);
    if (r < 0)
        return r;
    flat_segment(&sregs.cs, 0x08, 11, 1);
    flat_segment(&sregs.ds, 0x10, 3, 0);
    sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
    sregs.tr.base = 0;
    sregs.tr.limit = 0x67;
    sregs.tr.type = 11;
    sregs.tr.present = 1;
    sregs.gdt.base = GUEST_GDT;
    sregs.gdt.limit = 3 * 8 - 1;
    sregs.idt.base = GUEST_IDT;
    sregs.idt.limit = 256 * 16 - 1;
    sregs.cr0 = 0x80050033;
    sregs.cr3 = GUEST_PML4;
    sregs.cr4 = 0x20;
    sregs.efer = 0x501;
    r = kvm_set_sregs(vm->kvm, vcpu, &sregs);
    if (r < 0)
        return r;
    memset(&regs, 0, sizeof(regs));
    regs.rip = rip;
    regs.rsp = GUEST_STACK_TOP - (uint64_t)vcpu * GUEST_STACK_SIZE;
    regs.rflags = 2;
    return kvm_set_regs(vm->kvm, vcpu, &regs);
}

int test_vcpu_protected_mode(struct test_vm *vm, int vcpu, uint64_t eip, int paging)
{
    struct kvm_sregs sregs;
    struct kvm_regs regs;
    int i, r;

    write_u64(vm, GUEST_GDT, 0);
    write_u64(vm, GUEST_GDT + 8, 0x00cf9b000000ffffULL);  /* 32-bit code */
    write_u64(vm, GUEST_GDT + 16, 0x00cf93000000ffffULL); /* data */
    /* With paging: an identity map of the low 4 GiB with 4 MiB pages. */
    for (i = 0; paging && i < 1024; i++) {
        uint32_t pde = ((uint32_t)i << 22) | 0x83;
        memcpy(vm->mem + GUEST_PML4 + 4 * i, &pde, sizeof(pde));
    }
    r = set_supported_cpuid(vm, vcpu);
    if (r < 0)
        return r;
    r = kvm_get_sregs(vm->kvm, vcpu, &sregs);
    if (r < 0)
        return r;
    flat_segment(&sregs.cs, 0x08, 11, 0);
    flat_segment(&sregs.ds, 0x10, 3, 0);
    sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
    sregs.tr.base = 0;
    sregs.tr.limit = 0x67;
    sregs.tr.type = 11;
    sregs.tr.present = 1;
    sregs.gdt.base = GUEST_GDT;
    sregs.gdt.limit = 3 * 8 - 1;
    sregs.idt.base = GUEST_IDT;
    sregs.idt.limit = 256 * 8 - 1;
    sregs.cr0 = paging ? 0x80000011 : 0x11;
    sregs.cr3 = paging ? GUEST_PML4 : 0;
    sregs.cr4 = paging ? 0x10 : 0; /* PSE */
    sregs.efer = 0;
    r = kvm_set_sregs(vm->kvm, vcpu, &sregs);
    if (r < 0)
        return r;
    memset(&regs, 0, sizeof(regs));
    regs.rip = eip;
    regs.rsp = GUEST_STACK_TOP - (uint64_t)vcpu * GUEST_STACK_SIZE;
    regs.rflags = 2;
    return kvm_set_regs(vm->kvm, vcpu, &regs);
}

void test_vm_set_idt_gate32(struct test_vm *vm, int vector, uint32_t handler)
{
    uint8_t *gate = vm->mem + GUEST_IDT + 8 * vector;
    uint16_t selector = 0x08;

    memset(gate, 0, 8);
    gate[0] = handler & 0xff;
    gate[1] = (handler >> 8) & 0xff;
    memcpy(gate + 2, &selector, 2);
    gate[5] = 0x8e; /* present, DPL 0, 32-bit interrupt gate */
    gate[6] = (handler >> 16) & 0xff;
    gate[7] = (handler >> 24) & 0xff;
}

void test_vm_set_idt_gate(struct test_vm *vm, int vector, uint64_t handler)
{
    uint8_t *gate = vm->mem + GUEST_IDT + 16 * vector;
    uint16_t selector = 0x08;

    memset(gate, 0, 16);
    gate[0] = handler & 0xff;
    gate[1] = (handler >> 8) & 0xff;
    memcpy(gate + 2, &selector, 2);
    gate[5] = 0x8e; /* present, DPL 0, 64-bit interrupt gate */
    gate[6] = (handler >> 16) & 0xff;
    gate[7] = (handler >> 24) & 0xff;
    gate[8] = (handler >> 32) & 0xff;
    gate[9] = (handler >> 40) & 0xff;
    gate[10] = (handler >> 48) & 0xff;
    gate[11] = (handler >> 56) & 0xff;
}

int test_vcpu_real_mode(struct test_vm *vm, int vcpu, uint16_t cs, uint16_t ip)
{
    struct kvm_sregs sregs;
    struct kvm_regs regs;
    int r;

    r = kvm_get_sregs(vm->kvm, vcpu, &sregs);
    if (r < 0)
        return r;
    sregs.cs.selector = cs;
    sregs.cs.base = (uint64_t)cs << 4;
    sregs.ds = sregs.es = sregs.ss = sregs.fs = sregs.gs = sregs.cs;
    sregs.ds.type = sregs.es.type = sregs.ss.type = sregs.fs.type = sregs.gs.type = 3;
    r = kvm_set_sregs(vm->kvm, vcpu, &sregs);
    if (r < 0)
        return r;
    memset(&regs, 0, sizeof(regs));
    regs.rip = ip;
    regs.rsp = 0xfffe;
    regs.rflags = 2;
    return kvm_set_regs(vm->kvm, vcpu, &regs);
}

int test_stop_on_halt(void *opaque, int vcpu)
{
    (void)opaque;
    (void)vcpu;
    return 1;
}

uint64_t test_checksum(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    size_t i;

    for (i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

int test_host_extension(int cap)
{
    int kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC), r;

    if (kvm_fd < 0)
        return -errno;
    r = ioctl(kvm_fd, KVM_CHECK_EXTENSION, cap);
    if (r < 0)
        r = -errno;
    close(kvm_fd);
    return r;
}

int test_under_valgrind(void)
{
    const char *preload = getenv("LD_PRELOAD");
    return preload && strstr(preload, "vgpreload") != NULL;
}

int test_count_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *entry;
    int n = 0;

    if (!dir)
        return -1;
    while ((entry = readdir(dir)) != NULL)
        if (entry->d_name[0] != '.')
            n++;
    closedir(dir);
    return n - 1; /* the directory's own fd */
}

long test_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

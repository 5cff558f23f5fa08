/*
 * Guest memory: the VMM's RAM around the VGA window, new phys mem,
 * read-only RAM, destroying RAM, holes, caller-owned RAM, aliases, dirty
 * logging and memory maps, each observed by a real guest access.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "check.h"
#include "guest.h"

DECLARE_GUEST(store64);
DECLARE_GUEST(load64);

enum { RAM = 4 << 20, MMIO_VALUE = 0x55 };

/* What the last access that left RAM did. */
struct mmio_log {
    int reads, writes;
    uint64_t addr;
    uint64_t written;
};

static int log_mmio_read(void *opaque, uint64_t addr, uint8_t *data, int len)
{
    struct mmio_log *log = opaque;
    log->reads++;
    log->addr = addr;
    memset(data, MMIO_VALUE, (size_t)len);
    return 0;
}

static int log_mmio_write(void *opaque, uint64_t addr, uint8_t *data, int len)
{
    struct mmio_log *log = opaque;
    log->writes++;
    log->addr = addr;
    log->written = 0;
    memcpy(&log->written, data, (size_t)len);
    return 0;
}

struct memory_vm {
    struct test_vm vm;
    struct mmio_log log;
    struct kvm_callbacks cb;
};

static int memory_vm_create(struct memory_vm *m)
{
    memset(m, 0, sizeof(*m));
    m->cb.mmio_read = log_mmio_read;
    m->cb.mmio_write = log_mmio_write;
    m->cb.halt = test_stop_on_halt;
    if (test_vm_create(&m->vm, &m->cb, &m->log, RAM, 0) < 0)
        return -1;
    return test_vcpu_long_mode(&m->vm, 0, GUEST_CODE);
}

/* Loads `program` and points the vcpu at it with rdi and rsi set. */
static int guest_prepare(struct memory_vm *m, const uint8_t *start, const uint8_t *end, uint64_t rdi, uint64_t rsi)
{
    struct kvm_regs regs;
    test_vm_load(&m->vm, GUEST_CODE, start, end);
    if (kvm_get_regs(m->vm.kvm, 0, &regs) < 0)
        return -1;
    regs.rip = GUEST_CODE;
    regs.rdi = rdi;
    regs.rsi = rsi;
    return kvm_set_regs(m->vm.kvm, 0, &regs);
}

/* Runs `mov %rsi, (%rdi)` in the guest. */
static int guest_store(struct memory_vm *m, uint64_t addr, uint64_t value)
{
    if (guest_prepare(m, store64_start, store64_end, addr, value) < 0)
        return -1;
    return kvm_run(m->vm.kvm, 0);
}

/* Runs `mov (%rdi), %rax` in the guest and returns rax. */
static uint64_t guest_load(struct memory_vm *m, uint64_t addr)
{
    struct kvm_regs regs;
    if (guest_prepare(m, load64_start, load64_end, addr, 0) < 0)
        return ~0ULL;
    if (kvm_run(m->vm.kvm, 0) != 1 || kvm_get_regs(m->vm.kvm, 0, &regs) < 0)
        return ~0ULL;
    return regs.rax;
}

static const uint64_t MMIO_PATTERN = 0x5555555555555555ULL;

static void the_vmms_ram_around_the_vga_window_is_the_guests(void)
{
    struct memory_vm m;

    REQUIRE(memory_vm_create(&m) == 0);
    CHECK_EQ(kvm_is_intersecting_mem(m.vm.kvm, 0), 1);
    CHECK_EQ(kvm_is_intersecting_mem(m.vm.kvm, 0x9ffff), 1);
    CHECK_EQ(kvm_is_intersecting_mem(m.vm.kvm, 0xa0000), 0);
    CHECK_EQ(kvm_is_intersecting_mem(m.vm.kvm, 0xbffff), 0);
    CHECK_EQ(kvm_is_intersecting_mem(m.vm.kvm, 0xc0000), 1);
    CHECK_EQ(kvm_is_intersecting_mem(m.vm.kvm, RAM - 1), 1);
    CHECK_EQ(kvm_is_intersecting_mem(m.vm.kvm, RAM), 0);
    CHECK_EQ(kvm_is_intersecting_mem(m.vm.kvm, 0xffff0000), 0); /* no BIOS shadow of the library's */
    CHECK_EQ(kvm_is_allocated_mem(m.vm.kvm, 0, 0xa0000), 1);
    CHECK_EQ(kvm_is_allocated_mem(m.vm.kvm, 0xc0000, RAM - 0xc0000), 1);
    CHECK_EQ(kvm_is_allocated_mem(m.vm.kvm, 0, RAM), 0);
    /* The VMM's own mapping: the host writes at ram + gpa, the guest reads it. */
    memcpy(m.vm.mem + 0x300000, "\x11\x22\x33\x44\x55\x66\x77\x88", 8);
    CHECK_EQ(guest_load(&m, 0x300000), 0x8877665544332211ULL);
    CHECK_EQ(guest_load(&m, 0xa0000), MMIO_PATTERN);
    test_vm_destroy(&m.vm);
}

static void create_phys_mem_over_a_range_no_slot_backs_registers_fresh_ram(void)
{
    struct memory_vm m;
    uint8_t *first, *again, *in_hole;

    REQUIRE(memory_vm_create(&m) == 0);
    /* RAM destroyed, then created again: registered, and zeroed. */
    first = kvm_create_phys_mem(m.vm.kvm, 0x1000000, 0x4000, 0, 1);
    REQUIRE(first != NULL);
    first[0x1000] = 0x5a;
    kvm_destroy_phys_mem(m.vm.kvm, 0x1000000, 0x4000);
    again = kvm_create_phys_mem(m.vm.kvm, 0x1000000, 0x4000, 0, 1);
    REQUIRE(again != NULL);
    CHECK_EQ(kvm_is_allocated_mem(m.vm.kvm, 0x1000000, 0x4000), 1);
    CHECK_EQ(again[0x1000], 0);
    CHECK_EQ(guest_store(&m, 0x1001000, 0x77), 1);
    CHECK_EQ(again[0x1000], 0x77);
    /* Part of it destroyed, then created again inside the rest's old mapping. */
    kvm_destroy_phys_mem(m.vm.kvm, 0x1001000, 0x1000);
    in_hole = kvm_create_phys_mem(m.vm.kvm, 0x1001000, 0x1000, 0, 1);
    REQUIRE(in_hole != NULL);
    CHECK(in_hole != again + 0x1000);
    CHECK_EQ(in_hole[0], 0);
    CHECK_EQ(guest_store(&m, 0x1001000, 0x99), 1);
    CHECK_EQ(in_hole[0], 0x99);
    /* A memory hole in the VMM's RAM, filled with new RAM. */
    CHECK_EQ(kvm_create_mem_hole(m.vm.kvm, 0x200000, 0x1000), 0);
    in_hole = kvm_create_phys_mem(m.vm.kvm, 0x200000, 0x1000, 0, 1);
    REQUIRE(in_hole != NULL);
    CHECK_EQ(guest_store(&m, 0x200008, 0x1234), 1);
    CHECK_EQ(*(uint64_t *)(in_hole + 8), 0x1234);
    CHECK_EQ(m.log.reads + m.log.writes, 0);
    test_vm_destroy(&m.vm);
}

static void new_phys_mem_is_ram_shared_with_the_host(void)
{
    struct memory_vm m;
    uint8_t *p;

    REQUIRE(memory_vm_create(&m) == 0);
    p = kvm_create_phys_mem(m.vm.kvm, 0x1000000, 0x10000, 0, 1);
    REQUIRE(p != NULL);
    CHECK_EQ(kvm_is_allocated_mem(m.vm.kvm, 0x1000000, 0x10000), 1);
    CHECK_EQ(guest_store(&m, 0x1000008, 0xfeedfacecafebeefULL), 1);
    CHECK_EQ(*(uint64_t *)(p + 8), 0xfeedfacecafebeefULL);
    *(uint64_t *)(p + 0x100) = 42;
    CHECK_EQ(guest_load(&m, 0x1000100), 42);
    CHECK_EQ(m.log.reads + m.log.writes, 0);
    /* Unaligned or overlapping requests are refused. */
    CHECK(kvm_create_phys_mem(m.vm.kvm, 0x2000800, 0x1000, 0, 1) == NULL);
    CHECK_EQ(errno, EINVAL);
    CHECK(kvm_create_phys_mem(m.vm.kvm, 0x1008000, 0x10000, 0, 1) == NULL);
    CHECK_EQ(errno, EEXIST);
    test_vm_destroy(&m.vm);
}

static void read_only_phys_mem_turns_guest_stores_into_mmio(void)
{
    struct memory_vm m;
    uint8_t *p;

    REQUIRE(memory_vm_create(&m) == 0);
    p = kvm_create_phys_mem(m.vm.kvm, 0x2000000, 0x1000, 0, 0);
    REQUIRE(p != NULL);
    *(uint64_t *)p = 0x1234;
    CHECK_EQ(guest_load(&m, 0x2000000), 0x1234);
    CHECK_EQ(m.log.reads, 0);
    CHECK_EQ(guest_store(&m, 0x2000000, 0x9999), 1);
    CHECK_EQ(m.log.writes, 1);
    CHECK_EQ(m.log.addr, 0x2000000);
    CHECK_EQ(m.log.written, 0x9999);
    CHECK_EQ(*(uint64_t *)p, 0x1234);
    test_vm_destroy(&m.vm);
}

static void destroyed_phys_mem_becomes_mmio(void)
{
    struct memory_vm m;

    REQUIRE(memory_vm_create(&m) == 0);
    REQUIRE(kvm_create_phys_mem(m.vm.kvm, 0x1000000, 0x4000, 0, 1) != NULL);
    kvm_destroy_phys_mem(m.vm.kvm, 0x1000000, 0x4000);
    CHECK_EQ(kvm_is_intersecting_mem(m.vm.kvm, 0x1000000), 0);
    CHECK_EQ(guest_load(&m, 0x1000000), MMIO_PATTERN);
    CHECK_EQ(m.log.reads, 1);
    CHECK_EQ(m.log.addr, 0x1000000);
    test_vm_destroy(&m.vm);
}

static void mem_hole_splits_ram_and_becomes_mmio(void)
{
    struct memory_vm m;

    REQUIRE(memory_vm_create(&m) == 0);
    m.vm.mem[0x1ff000] = 1;
    m.vm.mem[0x201000] = 2;
    CHECK_EQ(kvm_create_mem_hole(m.vm.kvm, 0x200000, 0x1000), 0);
    CHECK_EQ(kvm_is_intersecting_mem(m.vm.kvm, 0x1ff000), 1);
    CHECK_EQ(kvm_is_intersecting_mem(m.vm.kvm, 0x200000), 0);
    CHECK_EQ(kvm_is_intersecting_mem(m.vm.kvm, 0x201000), 1);
    CHECK_EQ(guest_load(&m, 0x200000), MMIO_PATTERN);
    CHECK_EQ(m.log.addr, 0x200000);
    CHECK_EQ(guest_load(&m, 0x1ff000) & 0xff, 1);
    CHECK_EQ(guest_load(&m, 0x201000) & 0xff, 2);
    CHECK_EQ(kvm_create_mem_hole(m.vm.kvm, 0x200800, 0x1000), -EINVAL);
    test_vm_destroy(&m.vm);
}

static void caller_owned_memory_becomes_guest_ram(void)
{
    struct memory_vm m;
    uint64_t *own = mmap(NULL, 0x2000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    REQUIRE(own != MAP_FAILED);
    REQUIRE(memory_vm_create(&m) == 0);
    CHECK_EQ(kvm_register_userspace_phys_mem(m.vm.kvm, 0x3000000, own, 0x2000, 0), 0);
    CHECK_EQ(guest_store(&m, 0x3001000, 77), 1);
    CHECK_EQ(own[0x1000 / 8], 77);
    CHECK_EQ(kvm_register_userspace_phys_mem(m.vm.kvm, 0x3001000, own, 0x1000, 0), -EEXIST);
    CHECK_EQ(kvm_register_userspace_phys_mem(m.vm.kvm, 0x4000000, NULL, 0x1000, 0), -EFAULT);
    test_vm_destroy(&m.vm);
    munmap(own, 0x2000);
}

static void alias_shows_the_same_ram_at_a_second_address(void)
{
    struct memory_vm m;

    REQUIRE(memory_vm_create(&m) == 0);
    *(uint64_t *)(m.vm.mem + 0x100000) = 0xabcdef;
    CHECK_EQ(kvm_create_memory_alias(m.vm.kvm, 0x4000000, 0x1000, 0x100000), 0);
    CHECK_EQ(guest_load(&m, 0x4000000), 0xabcdef);
    CHECK_EQ(guest_store(&m, 0x4000008, 0x5150), 1);
    CHECK_EQ(*(uint64_t *)(m.vm.mem + 0x100008), 0x5150);
    CHECK_EQ(kvm_destroy_memory_alias(m.vm.kvm, 0x4000000), 0);
    CHECK_EQ(guest_load(&m, 0x4000000), MMIO_PATTERN);
    CHECK_EQ(kvm_destroy_memory_alias(m.vm.kvm, 0x4000000), -ENOENT);
    /* An alias of memory that does not exist. */
    CHECK_EQ(kvm_create_memory_alias(m.vm.kvm, 0x4000000, 0x1000, 0x8000000), -EINVAL);
    test_vm_destroy(&m.vm);
}

struct dirty_report {
    int calls;
    unsigned long start, len;
    uint8_t first_bytes[16];
};

static int record_bitmap(unsigned long start, unsigned long len, void *bitmap, void *opaque)
{
    struct dirty_report *r = opaque;
    r->calls++;
    r->start = start;
    r->len = len;
    memcpy(r->first_bytes, bitmap, sizeof(r->first_bytes));
    return 0;
}

static void dirty_bitmap_shows_the_pages_the_guest_wrote(void)
{
    struct dirty_report report;
    struct memory_vm m;
    uint8_t bitmap[64];

    REQUIRE(memory_vm_create(&m) == 0);
    REQUIRE(kvm_create_phys_mem(m.vm.kvm, 0x5000000, 0x10000, 1, 1) != NULL);
    memset(bitmap, 0xee, sizeof(bitmap));
    CHECK_EQ(kvm_get_dirty_pages(m.vm.kvm, 0x5000000, bitmap), 0); /* clear */
    CHECK_EQ(guest_store(&m, 0x5001000, 1), 1);
    CHECK_EQ(guest_store(&m, 0x5003008, 1), 1);
    CHECK_EQ(kvm_get_dirty_pages(m.vm.kvm, 0x5000010, bitmap), 0);
    CHECK_EQ(bitmap[0], 0x0a);
    CHECK_EQ(bitmap[1], 0x00);
    CHECK_EQ(bitmap[2], 0xee); /* 16 pages: two bytes written, no more */
    CHECK_EQ(kvm_get_dirty_pages(m.vm.kvm, 0x5000000, bitmap), 0);
    CHECK_EQ(bitmap[0], 0x00);
    /* kvm_create's RAM does not log until logging is enabled for all. */
    CHECK_EQ(kvm_get_dirty_pages(m.vm.kvm, 0x100000, bitmap), -ENOENT);
    CHECK_EQ(kvm_dirty_pages_log_enable_all(m.vm.kvm), 0);
    memset(&report, 0, sizeof(report));
    CHECK_EQ(guest_store(&m, 0xc2000, 1), 1);
    {
        static uint8_t big[(RAM / 4096 + 7) / 8];
        CHECK_EQ(kvm_get_dirty_pages_range(m.vm.kvm, 0xc0000, RAM, big, &report, record_bitmap), 0);
    }
    CHECK_EQ(report.calls, 1);
    CHECK_EQ(report.start, 0xc0000);
    CHECK_EQ(report.len, RAM - 0xc0000);
    CHECK(report.first_bytes[0] & 0x04); /* page 2 of the slot: 0xc2000 */
    CHECK_EQ(kvm_dirty_pages_log_reset(m.vm.kvm), 0);
    CHECK_EQ(kvm_get_dirty_pages(m.vm.kvm, 0x100000, bitmap), -ENOENT);
    CHECK_EQ(kvm_get_dirty_pages(m.vm.kvm, 0x5000000, bitmap), 0);
    test_vm_destroy(&m.vm);
}

static void mem_map_marks_every_page_of_a_slot_backed(void)
{
    struct dirty_report report;
    struct memory_vm m;
    uint8_t bitmap[8];

    REQUIRE(memory_vm_create(&m) == 0);
    REQUIRE(kvm_create_phys_mem(m.vm.kvm, 0x5000000, 0xa000, 0, 1) != NULL);
    memset(bitmap, 0, sizeof(bitmap));
    CHECK_EQ(kvm_get_mem_map(m.vm.kvm, 0x5000000, bitmap), 0);
    CHECK_EQ(bitmap[0], 0xff);
    CHECK_EQ(bitmap[1], 0x03);
    CHECK_EQ(kvm_get_mem_map(m.vm.kvm, 0xa0000, bitmap), -ENOENT);
    memset(&report, 0, sizeof(report));
    {
        static uint8_t big[(0xa0000 / 4096 + 7) / 8];
        CHECK_EQ(kvm_get_mem_map_range(m.vm.kvm, 0, 0x100000, big, &report, record_bitmap), 0);
    }
    CHECK_EQ(report.calls, 1); /* only [0, 0xa0000) lies inside the range */
    CHECK_EQ(report.start, 0);
    CHECK_EQ(report.len, 0xa0000);
    CHECK_EQ(report.first_bytes[0], 0xff);
    test_vm_destroy(&m.vm);
}

int main(void)
{
    check_set_timeout(120);
    RUN(the_vmms_ram_around_the_vga_window_is_the_guests);
    RUN(create_phys_mem_over_a_range_no_slot_backs_registers_fresh_ram);
    RUN(new_phys_mem_is_ram_shared_with_the_host);
    RUN(read_only_phys_mem_turns_guest_stores_into_mmio);
    RUN(destroyed_phys_mem_becomes_mmio);
    RUN(mem_hole_splits_ram_and_becomes_mmio);
    RUN(caller_owned_memory_becomes_guest_ram);
    RUN(alias_shows_the_same_ram_at_a_second_address);
    RUN(dirty_bitmap_shows_the_pages_the_guest_wrote);
    RUN(mem_map_marks_every_page_of_a_slot_backed);
    return check_summary();
}

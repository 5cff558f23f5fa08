/*
 * What libkvm costs over raw KVM ioctls, measured in one process on one
 * guest: rounds of a hand-written ioctl(KVM_RUN) loop alternate with
 * rounds of kvm_run and its callbacks on the same vcpu, and the medians
 * are compared. Then absolute rates of the debugging calls.
 *
 * Each result is one line: bench <name> <value> <unit> [ratio=<r>] [spread=<min>..<max>]
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "guest.h"

DECLARE_GUEST(pio_forever);
DECLARE_GUEST(mmio_forever);
DECLARE_GUEST(hlt_forever);
DECLARE_GUEST(nops_forever);
DECLARE_GUEST(store_forever);
DECLARE_GUEST_LABEL(nops_forever, spot);

/* Exit comparisons: EXIT_ROUNDS short rounds of each, alternating, and the
 * median of each pair's ratio (adjacent rounds share the host's drift). */
enum { ROUNDS = 31, EXIT_ROUNDS = 151, RAM = 8 << 20 };

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), compare_doubles);
    return v[n / 2];
}

static void die(const char *what)
{
    fprintf(stderr, "exit_bench: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* The same vcpu, driven without libkvm: its fd (found among the process's
 * fds) and a second mapping of its kvm_run. */
struct raw_vcpu {
    int fd;
    struct kvm_run *run;
};

static struct raw_vcpu find_raw_vcpu(int index)
{
    char want[64], link[128], path[300];
    struct raw_vcpu raw = {-1, NULL};
    struct dirent *entry;
    DIR *dir = opendir("/proc/self/fd");
    int kvm_fd, size;

    snprintf(want, sizeof(want), "anon_inode:kvm-vcpu:%d", index);
    while (dir && (entry = readdir(dir)) != NULL) {
        ssize_t n;
        snprintf(path, sizeof(path), "/proc/self/fd/%s", entry->d_name);
        n = readlink(path, link, sizeof(link) - 1);
        if (n > 0) {
            link[n] = '\0';
            if (strcmp(link, want) == 0)
                raw.fd = atoi(entry->d_name);
        }
    }
    if (dir)
        closedir(dir);
    kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    close(kvm_fd);
    if (raw.fd < 0 || size <= 0)
        die("finding the vcpu fd");
    raw.run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, raw.fd, 0);
    if (raw.run == MAP_FAILED)
        die("mapping kvm_run");
    return raw;
}

/* What both loops do with an exit: the raw loop calls it through a pointer
 * as kvm_run calls a callback. */
static volatile long exits_seen;
static long exits_wanted;

static int count_exit(void)
{
    return ++exits_seen >= exits_wanted;
}
static int (*volatile raw_handler)(void) = count_exit;

static int lib_outb(void *opaque, uint16_t port, uint8_t value)
{
    (void)opaque, (void)port, (void)value;
    return count_exit();
}

static int lib_mmio_write(void *opaque, uint64_t addr, uint8_t *data, int len)
{
    (void)opaque, (void)addr, (void)data, (void)len;
    return count_exit();
}

static int lib_halt(void *opaque, int vcpu)
{
    (void)opaque, (void)vcpu;
    return count_exit();
}

static int lib_debug(void *opaque, int vcpu, int type, uint64_t watch)
{
    (void)opaque, (void)vcpu, (void)type, (void)watch;
    return count_exit();
}

static void raw_set_guest_debug(struct raw_vcpu *raw, unsigned control)
{
    struct kvm_guest_debug dbg;
    memset(&dbg, 0, sizeof(dbg));
    dbg.control = control;
    if (ioctl(raw->fd, KVM_SET_GUEST_DEBUG, &dbg) < 0)
        die("KVM_SET_GUEST_DEBUG");
}

/* n exits with nothing but KVM_RUN and the handler. */
static void raw_exits(struct raw_vcpu *raw, long n, unsigned expected_reason)
{
    exits_seen = 0;
    exits_wanted = n;
    do {
        if (ioctl(raw->fd, KVM_RUN, 0) < 0)
            die("KVM_RUN");
        if (raw->run->exit_reason != expected_reason) {
            fprintf(stderr, "exit_bench: exit %u, expected %u\n", raw->run->exit_reason, expected_reason);
            exit(1);
        }
    } while (!raw_handler());
}

/* A software breakpoint hit and resumed by hand: int3 at `gpa`, the exit
 * (#BP, or an emulation failure on emulating hosts), the original byte
 * back, one single step, int3 again. */
static void raw_breakpoint_hits(struct test_vm *vm, struct raw_vcpu *raw, uint64_t gpa, long n)
{
    const uint8_t original = vm->mem[gpa];
    const unsigned sw = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP;

    exits_seen = 0;
    exits_wanted = n;
    vm->mem[gpa] = 0xcc;
    raw_set_guest_debug(raw, sw);
    do {
        if (ioctl(raw->fd, KVM_RUN, 0) < 0)
            die("KVM_RUN");
        if (raw->run->exit_reason != KVM_EXIT_DEBUG && raw->run->exit_reason != KVM_EXIT_INTERNAL_ERROR)
            die("breakpoint exit");
        vm->mem[gpa] = original;
        raw_set_guest_debug(raw, sw | KVM_GUESTDBG_SINGLESTEP);
        if (ioctl(raw->fd, KVM_RUN, 0) < 0 || raw->run->exit_reason != KVM_EXIT_DEBUG)
            die("single step");
        vm->mem[gpa] = 0xcc;
        raw_set_guest_debug(raw, sw);
    } while (!raw_handler());
    vm->mem[gpa] = original;
    raw_set_guest_debug(raw, 0);
}

enum scenario { PIO, MMIO, HLT, STEP, BREAKPOINT };

static void lib_round(struct test_vm *vm, enum scenario s, long n)
{
    struct kvm_guest_debug none;
    const uint64_t spot = GUEST_LABEL_ADDR(nops_forever, spot);
    int r;

    exits_seen = 0;
    exits_wanted = n;
    if (s == BREAKPOINT && kvm_insert_breakpoint(vm->kvm, 0, KVM_GDB_BREAKPOINT_SW, spot, 1) < 0)
        die("kvm_insert_breakpoint");
    r = kvm_run(vm->kvm, 0);
    if (r != 1) {
        fprintf(stderr, "exit_bench: kvm_run returned %d\n", r);
        exit(1);
    }
    if (s == BREAKPOINT) {
        kvm_remove_breakpoint(vm->kvm, 0, KVM_GDB_BREAKPOINT_SW, spot, 1);
        /* The raw rounds program guest debugging behind libkvm's back. */
        memset(&none, 0, sizeof(none));
        kvm_set_guest_debug(vm->kvm, 0, &none);
    }
}

static void raw_round(struct test_vm *vm, struct raw_vcpu *raw, enum scenario s, long n)
{
    /* While it debugs, the library asks KVM to copy the registers into
     * kvm_run at every exit (kvm_valid_regs), and the field stays set in
     * the mapping both loops share: a raw loop that left it would pay for
     * the library's copies (about 200 ns an exit here, most of it the
     * segment registers). */
    raw->run->kvm_valid_regs = 0;
    switch (s) {
    case PIO:
        raw_exits(raw, n, KVM_EXIT_IO);
        break;
    case MMIO:
        raw_exits(raw, n, KVM_EXIT_MMIO);
        break;
    case HLT:
        raw_exits(raw, n, KVM_EXIT_HLT);
        break;
    case STEP:
        raw_exits(raw, n, KVM_EXIT_DEBUG);
        break;
    case BREAKPOINT:
        raw_breakpoint_hits(vm, raw, GUEST_LABEL_ADDR(nops_forever, spot), n);
        break;
    }
}

/* Alternating rounds on the same vcpu; prints both medians and the ratio. */
static void compare(const char *name, enum scenario s, const uint8_t *start, const uint8_t *end, long n)
{
    struct kvm_callbacks cb;
    double raw_ns[EXIT_ROUNDS], lib_ns[EXIT_ROUNDS], ratios[EXIT_ROUNDS], t, raw_median, lib_median, ratio;
    struct raw_vcpu raw;
    struct test_vm vm;
    int i;

    memset(&cb, 0, sizeof(cb));
    cb.outb = lib_outb;
    cb.mmio_write = lib_mmio_write;
    cb.halt = lib_halt;
    cb.debug = lib_debug;
    if (test_vm_create(&vm, &cb, NULL, RAM, 0) < 0)
        die("kvm_create");
    test_vm_load(&vm, GUEST_CODE, start, end);
    if (test_vcpu_long_mode(&vm, 0, GUEST_CODE) < 0)
        die("long mode");
    raw = find_raw_vcpu(0);
    if (s == STEP) {
        kvm_set_singlestep(vm.kvm, 0, 1);
        raw_set_guest_debug(&raw, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP);
    }
    /* Warm up both paths. */
    raw_round(&vm, &raw, s, n / 10);
    lib_round(&vm, s, n / 10);
    for (i = 0; i < EXIT_ROUNDS; i++) {
        t = now();
        raw_round(&vm, &raw, s, n);
        raw_ns[i] = (now() - t) * 1e9 / (double)n;
        t = now();
        lib_round(&vm, s, n);
        lib_ns[i] = (now() - t) * 1e9 / (double)n;
        ratios[i] = lib_ns[i] / raw_ns[i];
    }
    ratio = median(ratios, EXIT_ROUNDS);
    raw_median = median(raw_ns, EXIT_ROUNDS); /* sorts: [0] and [EXIT_ROUNDS - 1] are the extremes */
    lib_median = median(lib_ns, EXIT_ROUNDS);
    printf("bench %s_raw %.0f ns/exit spread=%.0f..%.0f\n", name, raw_median, raw_ns[0], raw_ns[EXIT_ROUNDS - 1]);
    printf("bench %s_libkvm %.0f ns/exit ratio=%.4f spread=%.0f..%.0f\n", name, lib_median, ratio, lib_ns[0],
           lib_ns[EXIT_ROUNDS - 1]);
    fflush(stdout);
    munmap(raw.run, 4096);
    test_vm_destroy(&vm);
}

/* Calls per second of `body`, over ROUNDS rounds of `n` calls. */
static void rate(const char *name, const char *unit, void (*body)(struct test_vm *, long), struct test_vm *vm, long n)
{
    double per_second[ROUNDS], t;
    int i;

    body(vm, n / 10);
    for (i = 0; i < ROUNDS; i++) {
        t = now();
        body(vm, n);
        per_second[i] = (double)n / (now() - t);
    }
    t = median(per_second, ROUNDS);
    printf("bench %s %.0f %s spread=%.0f..%.0f\n", name, t, unit, per_second[0], per_second[ROUNDS - 1]);
    fflush(stdout);
}

static void insert_remove_pairs(struct test_vm *vm, long n)
{
    long i;
    for (i = 0; i < n; i++) {
        uint64_t addr = 0x200000 + (uint64_t)(i % 4096) * 64;
        if (kvm_insert_breakpoint(vm->kvm, 0, KVM_GDB_BREAKPOINT_SW, addr, 1) < 0 ||
            kvm_remove_breakpoint(vm->kvm, 0, KVM_GDB_BREAKPOINT_SW, addr, 1) < 0)
            die("insert/remove");
    }
}

static void translations(struct test_vm *vm, long n)
{
    uint64_t gpa, sum = 0;
    long i;
    for (i = 0; i < n; i++) {
        if (kvm_translate_gva(vm->kvm, 0, 0x100000 + (uint64_t)(i & 0xffff) * 16, &gpa) < 0)
            die("translate");
        sum += gpa;
    }
    if (sum == 1)
        puts("");
}

static void page_reads(struct test_vm *vm, long n)
{
    static uint8_t page[4096];
    long i;
    for (i = 0; i < n; i++)
        if (kvm_read_guest_virt(vm->kvm, 0, 0x200000 + (uint64_t)(i % 256) * 4096, page, sizeof(page)) < 0)
            die("read");
}

/* A write watchpoint by page protection, hit n times by a store loop. */
static void watch_hits(struct test_vm *vm, long n)
{
    exits_seen = 0;
    exits_wanted = n;
    if (kvm_run(vm->kvm, 0) != 1)
        die("kvm_run with a watchpoint");
}

static void page_watch_pairs(struct test_vm *vm, long n)
{
    long i;
    for (i = 0; i < n; i++) {
        uint64_t addr = GUEST_DATA + 0x10000 + (uint64_t)(i % 64) * 4096;
        if (kvm_insert_breakpoint(vm->kvm, 0, KVM_GDB_WATCHPOINT_WRITE, addr, 8) < 0 ||
            kvm_remove_breakpoint(vm->kvm, 0, KVM_GDB_WATCHPOINT_WRITE, addr, 8) < 0)
            die("page watch insert/remove");
    }
}

static void contexts(struct test_vm *vm, long n)
{
    struct kvm_callbacks cb;
    long i;
    (void)vm;
    memset(&cb, 0, sizeof(cb));
    for (i = 0; i < n; i++) {
        kvm_context_t kvm = kvm_init(&cb, NULL);
        if (!kvm || kvm_create_vm(kvm) < 0 || kvm_create_vcpu(kvm, 0) < 0)
            die("context");
        kvm_finalize(kvm);
    }
}

/* 1000 page-protection watchpoints on 1000 pages, inserted one by one and
 * removed one by one: the totals, and the cost of the last 100 inserts
 * (removes) over the first 100, which is 1 when the cost does not grow
 * with the count. */
enum { SCALE_WATCHES = 1000, SCALE_EDGE = 100 };

static void page_watch_scale(void)
{
    static double insert_at[SCALE_WATCHES + 1], remove_at[SCALE_WATCHES + 1];
    struct kvm_callbacks cb;
    struct test_vm vm;
    int i;

    memset(&cb, 0, sizeof(cb));
    if (test_vm_create(&vm, &cb, NULL, 16 << 20, 0) < 0 || test_vcpu_long_mode(&vm, 0, GUEST_CODE) < 0)
        die("vm");
    kvm_set_watchpoint_method(vm.kvm, KVM_WATCH_PAGE_PROTECTION);
    insert_at[0] = now();
    for (i = 0; i < SCALE_WATCHES; i++) {
        /* Every other page, so that each watch is its own piece. */
        if (kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_WRITE, 0x400000 + (uint64_t)i * 8192, 8) < 0)
            die("scale insert");
        insert_at[i + 1] = now();
    }
    remove_at[0] = now();
    for (i = 0; i < SCALE_WATCHES; i++) {
        if (kvm_remove_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_WRITE, 0x400000 + (uint64_t)i * 8192, 8) < 0)
            die("scale remove");
        remove_at[i + 1] = now();
    }
    printf("bench page_watchpoint_1000_inserts %.0f ms last100/first100=%.2f\n",
           (insert_at[SCALE_WATCHES] - insert_at[0]) * 1e3,
           (insert_at[SCALE_WATCHES] - insert_at[SCALE_WATCHES - SCALE_EDGE]) / (insert_at[SCALE_EDGE] - insert_at[0]));
    printf("bench page_watchpoint_1000_removes %.0f ms last100/first100=%.2f\n",
           (remove_at[SCALE_WATCHES] - remove_at[0]) * 1e3,
           (remove_at[SCALE_WATCHES] - remove_at[SCALE_WATCHES - SCALE_EDGE]) / (remove_at[SCALE_EDGE] - remove_at[0]));
    fflush(stdout);
    test_vm_destroy(&vm);
}

/* Core dumps of a 1 GiB guest to a file in $TMPDIR (or /tmp). The
 * baseline is a hand-written pwrite of `baseline_len` bytes of the RAM: all
 * of it for the mostly-zero guest (what a VMM dumping by itself writes),
 * just the data for the guest with 128 MiB of it (the least any dumper must
 * write). Prints guest RAM covered per second and time(libkvm)/time(raw). */
enum { CORE_RAM = 1 << 30, CORE_DATA = 128 << 20, CORE_DATA_AT = 0x200000, CORE_ROUNDS = 5 };

static void raw_ram_write(const char *path, const uint8_t *ram, size_t len)
{
    size_t done = 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        die("baseline core file");
    while (done < len) {
        ssize_t n = pwrite(fd, ram + done, len - done, (off_t)done);
        if (n <= 0)
            die("baseline write");
        done += (size_t)n;
    }
    close(fd);
}

static void core_dump_times(const char *name, struct test_vm *vm, const uint8_t *baseline, size_t baseline_len)
{
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char ours[512], theirs[512];
    double lib[CORE_ROUNDS], raw[CORE_ROUNDS], t, lib_median, raw_median;
    int i;

    snprintf(ours, sizeof(ours), "%s/libkvm-bench-core.%d", tmp, (int)getpid());
    snprintf(theirs, sizeof(theirs), "%s/libkvm-bench-raw.%d", tmp, (int)getpid());
    for (i = 0; i < CORE_ROUNDS; i++) {
        unlink(ours);
        t = now();
        if (kvm_dump_guest_core(vm->kvm, ours, 0) < 0)
            die("kvm_dump_guest_core");
        lib[i] = now() - t;
        t = now();
        raw_ram_write(theirs, baseline, baseline_len);
        raw[i] = now() - t;
    }
    unlink(ours);
    unlink(theirs);
    lib_median = median(lib, CORE_ROUNDS);
    raw_median = median(raw, CORE_ROUNDS);
    printf("bench %s_raw_pwrite %.0f ms (%zu MiB)\n", name, raw_median * 1e3, baseline_len >> 20);
    printf("bench %s_libkvm %.2f GB/s ratio=%.3f spread=%.0f..%.0f ms\n", name, (double)CORE_RAM / lib_median / 1e9,
           lib_median / raw_median, lib[0] * 1e3, lib[CORE_ROUNDS - 1] * 1e3);
    fflush(stdout);
}

static void core_dumps(void)
{
    struct kvm_callbacks cb;
    struct test_vm vm;
    size_t i;

    memset(&cb, 0, sizeof(cb));
    if (test_vm_create(&vm, &cb, NULL, CORE_RAM, 0) < 0 || test_vcpu_long_mode(&vm, 0, GUEST_CODE) < 0)
        die("1 GiB vm");
    for (i = 0; i < CORE_RAM; i += 100 * 4096)
        vm.mem[i + 8] = (uint8_t)(i >> 12);
    core_dump_times("core_dump_1g_mostly_zero", &vm, vm.mem, CORE_RAM);
    for (i = 0; i < CORE_DATA; i += 8)
        *(uint64_t *)(vm.mem + CORE_DATA_AT + i) = i * 0x9e3779b97f4a7c15ull | 1;
    core_dump_times("core_dump_1g_with_128m_data", &vm, vm.mem + CORE_DATA_AT, CORE_DATA);
    test_vm_destroy(&vm);
}

/* `exit_bench scale`, `exit_bench core` or `exit_bench debug` (single steps
 * and breakpoint hits) runs only that part. */
/* Many short alternating rounds: the median shrugs off the machine's drift. */
static void exit_comparisons(void)
{
    compare("pio_exit", PIO, pio_forever_start, pio_forever_end, 1000);
    compare("mmio_exit", MMIO, mmio_forever_start, mmio_forever_end, 1000);
    compare("hlt_exit", HLT, hlt_forever_start, hlt_forever_end, 1000);
}

static void debug_comparisons(void)
{
    compare("singlestep_exit", STEP, nops_forever_start, nops_forever_end, 1000);
    compare("breakpoint_hit_resume", BREAKPOINT, nops_forever_start, nops_forever_end, 300);
}

int main(int argc, char **argv)
{
    struct kvm_callbacks cb;
    struct test_vm vm;

    if (argc > 1 && strcmp(argv[1], "scale") == 0) {
        page_watch_scale();
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "core") == 0) {
        core_dumps();
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "exits") == 0) {
        exit_comparisons();
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "debug") == 0) {
        debug_comparisons();
        return 0;
    }
    if (argc == 1) {
        exit_comparisons();
        debug_comparisons();
    } else if (strcmp(argv[1], "rates") != 0) {
        fprintf(stderr, "usage: %s [exits|debug|rates|scale|core]\n", argv[0]);
        return 2;
    }

    memset(&cb, 0, sizeof(cb));
    if (test_vm_create(&vm, &cb, NULL, RAM, 0) < 0 || test_vcpu_long_mode(&vm, 0, GUEST_CODE) < 0)
        die("vm");
    rate("breakpoint_insert_remove_pairs", "per_s", insert_remove_pairs, &vm, 100000);
    rate("translate_gva_4level", "per_s", translations, &vm, 1000000);
    rate("read_guest_virt_4k", "per_s", page_reads, &vm, 50000);
    rate("context_create_vcpu_finalize", "per_s", contexts, &vm, 100);
    kvm_set_watchpoint_method(vm.kvm, KVM_WATCH_PAGE_PROTECTION);
    rate("page_watchpoint_insert_remove_pairs", "per_s", page_watch_pairs, &vm, 2000);
    test_vm_destroy(&vm);

    /* Watchpoint hits: for comparison, on this machine QEMU with KVM never
     * stops on a watchpoint and QEMU with TCG manages about 1,250 per second. */
    memset(&cb, 0, sizeof(cb));
    cb.debug = lib_debug;
    if (test_vm_create(&vm, &cb, NULL, RAM, 0) < 0 || test_vcpu_long_mode(&vm, 0, GUEST_CODE) < 0)
        die("vm");
    TEST_VM_LOAD_GUEST(&vm, store_forever);
    kvm_set_watchpoint_method(vm.kvm, KVM_WATCH_PAGE_PROTECTION);
    if (kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_WATCHPOINT_WRITE, GUEST_DATA, 8) < 0)
        die("watchpoint");
    rate("watchpoint_hits", "per_s", watch_hits, &vm, 20000);
    test_vm_destroy(&vm);

    if (argc == 1) {
        page_watch_scale();
        core_dumps();
    }
    return 0;
}

/*
 * Guest core dumps: a C kernel with symbols (core/kernel.c, in the higher
 * half) crashes with LIBKVM_CORE set and gdb reads its core (threads,
 * backtraces, a global, registers); the core's segments and notes are what
 * they should be; registers in a core of running vcpus match the vcpus';
 * bad input leaves nothing behind.
 */
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "guest.h"

DECLARE_GUEST(halt_with_registers);
DECLARE_GUEST(count);
DECLARE_GUEST_LABEL(count, inc);
extern const uint8_t core_kernel_start[], core_kernel_end[];

enum { RAM = 16 << 20, VCPUS = 2 };
/* The kernel's higher half: 0xffffffff80000000 maps guest-physical 0. */
#define HIGHER_HALF 0xffffffff80000000ULL
#define HIGH_PDPT 0x7000

static char scratch[256];

/* A fresh scratch directory for one test. */
static const char *scratch_dir(const char *name)
{
    snprintf(scratch, sizeof(scratch), "/tmp/libkvm-core-test-%d-%s", (int)getpid(), name);
    mkdir(scratch, 0700);
    return scratch;
}

static int files_in(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.' || (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0);
    closedir(d);
    return n;
}

static void remove_dir(const char *dir)
{
    char command[512];
    snprintf(command, sizeof(command), "rm -rf '%s'", dir);
    if (system(command) != 0)
        printf("  could not remove %s\n", dir);
}

/* ---- reading a core back ---- */

struct core {
    uint8_t *bytes;
    size_t size;
    const Elf64_Ehdr *ehdr;
    const Elf64_Phdr *phdr;
};

static int core_open(struct core *c, const char *path)
{
    FILE *f = fopen(path, "rb");
    long n;
    memset(c, 0, sizeof(*c));
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    c->bytes = malloc((size_t)n);
    c->size = (size_t)n;
    if (!c->bytes || fread(c->bytes, 1, c->size, f) != c->size) {
        fclose(f);
        return -1;
    }
    fclose(f);
    c->ehdr = (const Elf64_Ehdr *)c->bytes;
    c->phdr = (const Elf64_Phdr *)(c->bytes + c->ehdr->e_phoff);
    return memcmp(c->bytes, ELFMAG, SELFMAG) == 0 && c->ehdr->e_type == ET_CORE ? 0 : -1;
}

static void core_close(struct core *c)
{
    free(c->bytes);
}

/* Calls `visit` for each note of the core. */
static void core_notes(const struct core *c, void (*visit)(void *arg, const char *name, uint32_t type, const uint8_t *desc, uint32_t len),
                       void *arg)
{
    int i;
    for (i = 0; i < c->ehdr->e_phnum; i++) {
        const Elf64_Phdr *p = &c->phdr[i];
        size_t at = p->p_offset, end = p->p_offset + p->p_filesz;
        if (p->p_type != PT_NOTE)
            continue;
        while (at + 12 <= end) {
            const uint32_t *n = (const uint32_t *)(c->bytes + at);
            const char *name = (const char *)(c->bytes + at + 12);
            const uint8_t *desc = c->bytes + at + 12 + ((n[0] + 3) & ~3u);
            visit(arg, name, n[2], desc, n[1]);
            at += 12 + ((n[0] + 3) & ~3u) + ((n[1] + 3) & ~3u);
        }
    }
}

/* The general registers of pr_pid `pid` from its NT_PRSTATUS. */
struct prstatus_find {
    int pid;
    int found, threads, fpregsets, vcpu_states;
    uint64_t reg[27];
    struct kvm_core_vcpu_state state;
};

static void find_prstatus(void *arg, const char *name, uint32_t type, const uint8_t *desc, uint32_t len)
{
    struct prstatus_find *f = arg;
    int32_t pid;
    if (strcmp(name, "CORE") == 0 && type == NT_PRSTATUS && len == 336) {
        f->threads++;
        memcpy(&pid, desc + 32, 4);
        if (pid == f->pid) {
            memcpy(f->reg, desc + 112, sizeof(f->reg));
            f->found = 1;
        }
    } else if (strcmp(name, "CORE") == 0 && type == NT_FPREGSET && len == 512) {
        f->fpregsets++;
    } else if (strcmp(name, "LIBKVM") == 0 && type == KVM_CORE_NOTE_VCPU_STATE && len == sizeof(f->state)) {
        struct kvm_core_vcpu_state s;
        memcpy(&s, desc, sizeof(s));
        f->vcpu_states++;
        if ((int)s.vcpu + 1 == f->pid)
            f->state = s;
    }
}

/* user_regs_struct indices */
enum { R_RBX = 5, R_R12 = 3, R_R13 = 2, R_R15 = 0, R_RAX = 10, R_RIP = 16, R_RSP = 19 };

/* The bytes the core holds at virtual address `va` (NULL if none). */
static const uint8_t *core_at(const struct core *c, uint64_t va, size_t len)
{
    int i;
    for (i = 0; i < c->ehdr->e_phnum; i++) {
        const Elf64_Phdr *p = &c->phdr[i];
        if (p->p_type == PT_LOAD && va >= p->p_vaddr && va + len <= p->p_vaddr + p->p_filesz)
            return c->bytes + p->p_offset + (va - p->p_vaddr);
    }
    return NULL;
}

/* ---- the guest kernel ---- */

struct kernel_vm {
    struct test_vm vm;
    uint64_t entry;
    uint64_t counter, waiters, release; /* symbol addresses, higher half */
    int shutdowns;
};

static int kernel_shutdown(void *opaque, int vcpu)
{
    struct kernel_vm *k = opaque;
    (void)vcpu;
    k->shutdowns++;
    return 2;
}

/* The symbol `name` of the embedded kernel ELF. */
static uint64_t kernel_symbol(const char *name)
{
    const Elf64_Ehdr *e = (const Elf64_Ehdr *)core_kernel_start;
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(core_kernel_start + e->e_shoff);
    int i;
    for (i = 0; i < e->e_shnum; i++) {
        if (sh[i].sh_type == SHT_SYMTAB) {
            const Elf64_Sym *sym = (const Elf64_Sym *)(core_kernel_start + sh[i].sh_offset);
            const char *strings = (const char *)(core_kernel_start + sh[sh[i].sh_link].sh_offset);
            size_t n = sh[i].sh_size / sizeof(*sym), j;
            for (j = 0; j < n; j++)
                if (strcmp(strings + sym[j].st_name, name) == 0)
                    return sym[j].st_value;
        }
    }
    return 0;
}

/* A VM with the kernel loaded at its physical addresses, the higher half
 * mapped, and VCPUS vcpus at its entry with rdi = vcpu. */
static int kernel_vm_create(struct kernel_vm *k, struct kvm_callbacks *cb)
{
    const Elf64_Ehdr *e = (const Elf64_Ehdr *)core_kernel_start;
    const Elf64_Phdr *ph = (const Elf64_Phdr *)(core_kernel_start + e->e_phoff);
    struct kvm_regs regs;
    uint64_t entry;
    int i;

    memset(k, 0, sizeof(*k));
    if (test_vm_create(&k->vm, cb, k, RAM, 0) < 0)
        return -1;
    for (i = 0; i < e->e_phnum; i++) {
        if (ph[i].p_type != PT_LOAD)
            continue;
        memset(k->vm.mem + ph[i].p_paddr, 0, ph[i].p_memsz);
        memcpy(k->vm.mem + ph[i].p_paddr, core_kernel_start + ph[i].p_offset, ph[i].p_filesz);
    }
    for (i = 0; i < VCPUS; i++) {
        if (i > 0 && kvm_create_vcpu(k->vm.kvm, i) < 0)
            return -1;
        if (test_vcpu_long_mode(&k->vm, i, e->e_entry) < 0 || kvm_get_regs(k->vm.kvm, i, &regs) < 0)
            return -1;
        regs.rdi = (uint64_t)i;
        if (kvm_set_regs(k->vm.kvm, i, &regs) < 0)
            return -1;
    }
    /* PML4[511] -> a PDPT whose entry 510 is the first PD (0-1 GiB). */
    entry = HIGH_PDPT | 3;
    memcpy(k->vm.mem + GUEST_PML4 + 511 * 8, &entry, 8);
    entry = GUEST_PD | 3;
    memcpy(k->vm.mem + HIGH_PDPT + 510 * 8, &entry, 8);
    k->entry = e->e_entry;
    k->counter = kernel_symbol("core_counter");
    k->waiters = kernel_symbol("core_waiters");
    k->release = kernel_symbol("core_release");
    return k->counter && k->waiters && k->release ? 0 : -1;
}

static volatile uint64_t *kernel_global(struct kernel_vm *k, uint64_t symbol)
{
    return (volatile uint64_t *)(k->vm.mem + (symbol - HIGHER_HALF));
}

struct vcpu_arg {
    kvm_context_t kvm;
    int vcpu, result;
    volatile int done;
};

static void *run_vcpu(void *arg)
{
    struct vcpu_arg *a = arg;
    a->result = kvm_run(a->kvm, a->vcpu);
    a->done = 1;
    return NULL;
}

/* Runs `command`, returns its output (malloc'ed) or NULL. */
static char *output_of(const char *command)
{
    FILE *p = popen(command, "r");
    size_t n = 0, cap = 1 << 16;
    char *out = malloc(cap);
    if (!p || !out)
        return NULL;
    while (n + 1 < cap && fgets(out + n, (int)(cap - n), p))
        n += strlen(out + n);
    out[n] = 0;
    pclose(p);
    return out;
}

static int have_program(const char *name)
{
    char command[128];
    snprintf(command, sizeof(command), "command -v %s >/dev/null 2>&1", name);
    return system(command) == 0;
}

/* The one file in `dir` named libkvm-core.*, into `path`. */
static int find_core(const char *dir, char *path, size_t size)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d)
        return 0;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, "libkvm-core.", 12) == 0 && ++n == 1)
            snprintf(path, size, "%s/%s", dir, e->d_name);
    closedir(d);
    return n;
}

static void a_triple_fault_with_libkvm_core_leaves_a_core_gdb_reads(void)
{
    const char *dir = scratch_dir("crash");
    char core_path[512], kernel_path[512], command[2048];
    struct kvm_callbacks cb;
    struct kernel_vm k;
    struct vcpu_arg args[VCPUS];
    pthread_t threads[VCPUS];
    struct prstatus_find f;
    struct core c;
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    int reset_by_host;
    FILE *kernel;
    char *gdb;
    int i;

    memset(&cb, 0, sizeof(cb));
    cb.shutdown = kernel_shutdown;
    cb.halt = test_stop_on_halt;
    setenv("LIBKVM_CORE", dir, 1);
    i = kernel_vm_create(&k, &cb);
    unsetenv("LIBKVM_CORE");
    REQUIRE(i == 0);
    for (i = 0; i < VCPUS; i++) {
        args[i].kvm = k.vm.kvm;
        args[i].vcpu = i;
        args[i].done = 0;
        REQUIRE(pthread_create(&threads[i], NULL, run_vcpu, &args[i]) == 0);
    }
    pthread_join(threads[0], NULL);
    CHECK_EQ(args[0].result, 2); /* the shutdown callback's */
    /* kvm_amd INITs a vcpu at a triple fault (its VMCB is undefined after
     * the shutdown intercept): the crash's registers are gone before the
     * library sees the exit. Memory and the other vcpu are still checked. */
    REQUIRE(kvm_get_regs(k.vm.kvm, 0, &regs) == 0 && kvm_get_sregs(k.vm.kvm, 0, &sregs) == 0);
    reset_by_host = regs.rip == 0xfff0 && sregs.cs.base == 0xffff0000;
    if (reset_by_host)
        printf("  skipped: this host's KVM resets a vcpu at a triple fault (kvm_amd does): "
               "the crashed vcpu's registers and frames are not in the core\n");
    CHECK_EQ(*kernel_global(&k, k.counter), 0x1234abcd5678ef00ULL);
    *kernel_global(&k, k.release) = 1;
    for (i = 1; i < VCPUS; i++)
        pthread_join(threads[i], NULL);
    REQUIRE(find_core(dir, core_path, sizeof(core_path)) == 1);

    /* Our own reading: a thread and a vcpu note per vcpu, the crash's RIP. */
    REQUIRE(core_open(&c, core_path) == 0);
    memset(&f, 0, sizeof(f));
    f.pid = 1;
    core_notes(&c, find_prstatus, &f);
    CHECK_EQ(f.threads, VCPUS);
    CHECK_EQ(f.fpregsets, VCPUS);
    CHECK_EQ(f.vcpu_states, VCPUS);
    CHECK(f.found);
    CHECK_EQ(f.state.version, KVM_CORE_VCPU_STATE_VERSION);
    if (!reset_by_host)
        CHECK(f.reg[R_RIP] >= kernel_symbol("crash_here") && f.reg[R_RIP] < kernel_symbol("level2"));
    CHECK(core_at(&c, k.counter, 8) != NULL);
    if (core_at(&c, k.counter, 8))
        CHECK_EQ(*(const uint64_t *)core_at(&c, k.counter, 8), 0x1234abcd5678ef00ULL);
    core_close(&c);

    /* gdb with the kernel's symbols. */
    if (!have_program("gdb")) {
        test_vm_destroy(&k.vm);
        remove_dir(dir);
        SKIP("no gdb on this host to open the core with");
    }
    snprintf(kernel_path, sizeof(kernel_path), "%s/kernel.elf", dir);
    kernel = fopen(kernel_path, "wb");
    REQUIRE(kernel != NULL);
    fwrite(core_kernel_start, 1, (size_t)(core_kernel_end - core_kernel_start), kernel);
    fclose(kernel);
    snprintf(command, sizeof(command),
             "gdb -batch -nx -ex 'info threads' -ex 'thread apply all bt' -ex 'p/x core_counter' "
             "-ex 'thread 1' -ex 'info registers rip rsp' '%s' '%s' 2>&1",
             kernel_path, core_path);
    gdb = output_of(command);
    REQUIRE(gdb != NULL);
    CHECK(strstr(gdb, "LWP 1") != NULL && strstr(gdb, "LWP 2") != NULL && strstr(gdb, "LWP 3") == NULL);
    if (!reset_by_host)
        CHECK(strstr(gdb, "crash_here") && strstr(gdb, "level2") && strstr(gdb, "level1") && strstr(gdb, "kmain"));
    CHECK(strstr(gdb, "wait_forever") && strstr(gdb, "waiter"));
    CHECK(strstr(gdb, "= 0x1234abcd5678ef00") != NULL);
    snprintf(command, sizeof(command), "%#llx", (unsigned long long)f.reg[R_RIP]);
    CHECK(strstr(gdb, command) != NULL);
    snprintf(command, sizeof(command), "%#llx", (unsigned long long)f.reg[R_RSP]);
    CHECK(strstr(gdb, command) != NULL);
    if (check_current_failed)
        printf("%s", gdb);
    free(gdb);
    test_vm_destroy(&k.vm);
    remove_dir(dir);
}

static void segments_and_notes_are_what_readelf_shows(void)
{
    const char *dir = scratch_dir("readelf");
    char path[512], command[1024];
    struct kvm_callbacks cb;
    struct kernel_vm k;
    struct core c;
    int i, physical = 0, higher_half = 0;
    char *out;

    memset(&cb, 0, sizeof(cb));
    REQUIRE(kernel_vm_create(&k, &cb) == 0);
    snprintf(path, sizeof(path), "%s/paged.core", dir);
    REQUIRE(kvm_dump_guest_core(k.vm.kvm, path, KVM_CORE_PAGING) == 0);
    REQUIRE(core_open(&c, path) == 0);
    for (i = 0; i < c.ehdr->e_phnum; i++) {
        const Elf64_Phdr *p = &c.phdr[i];
        if (p->p_type != PT_LOAD)
            continue;
        physical += p->p_vaddr == p->p_paddr && p->p_vaddr < HIGHER_HALF;
        higher_half += p->p_vaddr >= HIGHER_HALF;
        if (p->p_vaddr >= HIGHER_HALF)
            CHECK_EQ(p->p_vaddr - HIGHER_HALF, p->p_paddr);
    }
    CHECK_EQ(physical, 2); /* the test VM's RAM below and above the VGA window */
    CHECK(higher_half >= 1);
    /* The VGA window is MMIO: no segment has it. */
    CHECK(core_at(&c, 0xa0000, 1) == NULL);
    /* A higher-half symbol resolves to the bytes the guest has there. */
    *kernel_global(&k, k.counter) = 0x600d;
    core_close(&c);
    REQUIRE(kvm_dump_guest_core(k.vm.kvm, path, KVM_CORE_PAGING) == 0);
    REQUIRE(core_open(&c, path) == 0);
    CHECK(core_at(&c, k.counter, 8) != NULL && *(const uint64_t *)core_at(&c, k.counter, 8) == 0x600d);
    core_close(&c);
    if (have_program("readelf")) {
        snprintf(command, sizeof(command), "readelf -lnW '%s'", path);
        out = output_of(command);
        REQUIRE(out != NULL);
        CHECK(strstr(out, "Elf file type is CORE") != NULL);
        CHECK(strstr(out, "NOTE") != NULL && strstr(out, "0xffffffff80") != NULL);
        CHECK(strstr(out, "NT_PRSTATUS") != NULL && strstr(out, "NT_FPREGSET") != NULL);
        CHECK(strstr(out, "LIBKVM") != NULL);
        if (check_current_failed)
            printf("%.2000s\n", out);
        free(out);
    } else {
        printf("  no readelf here: the core was checked by the test's own reader only\n");
    }
    /* Without paging, no higher-half segment. */
    REQUIRE(kvm_dump_guest_core(k.vm.kvm, path, 0) == 0);
    REQUIRE(core_open(&c, path) == 0);
    CHECK(core_at(&c, k.counter, 8) == NULL);
    CHECK(core_at(&c, k.counter - HIGHER_HALF, 8) != NULL);
    core_close(&c);
    test_vm_destroy(&k.vm);
    remove_dir(dir);
}

static void nothing(int signal)
{
    (void)signal;
}

static volatile int stop_halted;

static int stop_when_asked(void *opaque)
{
    (void)opaque;
    return stop_halted ? 1 : 0;
}

static void a_core_of_running_vcpus_has_their_registers(void)
{
    const char *dir = scratch_dir("running");
    char path[512];
    struct kvm_callbacks cb;
    struct test_vm vm;
    struct vcpu_arg args[VCPUS];
    pthread_t threads[VCPUS];
    struct sigaction action;
    sigset_t mask;
    struct core c;
    int i;

    memset(&cb, 0, sizeof(cb));
    cb.io_window = stop_when_asked;
    memset(&action, 0, sizeof(action));
    action.sa_handler = nothing;
    sigaction(SIGUSR1, &action, NULL);
    sigemptyset(&mask);
    REQUIRE(test_vm_create(&vm, &cb, NULL, RAM, TEST_VM_IRQCHIP) == 0);
    TEST_VM_LOAD_GUEST(&vm, halt_with_registers);
    for (i = 0; i < VCPUS; i++) {
        struct kvm_regs regs;
        if (i > 0)
            REQUIRE(kvm_create_vcpu(vm.kvm, i) == 0);
        REQUIRE(test_vcpu_long_mode(&vm, i, GUEST_CODE) == 0);
        REQUIRE(kvm_get_regs(vm.kvm, i, &regs) == 0);
        regs.rdi = (uint64_t)i + 1;
        REQUIRE(kvm_set_regs(vm.kvm, i, &regs) == 0);
        REQUIRE(kvm_set_signal_mask(vm.kvm, i, &mask) == 0);
        if (i > 0) {
            /* With the in-kernel irqchip an application processor waits
             * for INIT and SIPI: let it run at once. */
            struct kvm_mp_state runnable = {KVM_MP_STATE_RUNNABLE};
            REQUIRE(kvm_set_mpstate(vm.kvm, i, &runnable) == 0);
        }
        args[i].kvm = vm.kvm;
        args[i].vcpu = i;
        args[i].done = 0;
    }
    stop_halted = 0;
    for (i = 0; i < VCPUS; i++)
        REQUIRE(pthread_create(&threads[i], NULL, run_vcpu, &args[i]) == 0);
    usleep(300 * 1000); /* both halt inside KVM_RUN */
    snprintf(path, sizeof(path), "%s/running.core", dir);
    CHECK_EQ(kvm_dump_guest_core(vm.kvm, path, 0), 0);
    REQUIRE(core_open(&c, path) == 0);
    for (i = 0; i < VCPUS; i++) {
        struct prstatus_find f;
        struct kvm_regs now;
        memset(&f, 0, sizeof(f));
        f.pid = i + 1;
        core_notes(&c, find_prstatus, &f);
        CHECK(f.found);
        REQUIRE(kvm_get_regs(vm.kvm, i, &now) == 0);
        CHECK_EQ(f.reg[R_RBX], now.rbx);
        CHECK_EQ(f.reg[R_RBX], ((uint64_t)i + 1) * 0x1111);
        CHECK_EQ(f.reg[R_R12], now.r12);
        CHECK_EQ(f.reg[R_R15], now.r15);
        CHECK_EQ(f.reg[R_RIP], now.rip);
        CHECK_EQ(f.reg[R_RSP], now.rsp);
        CHECK_EQ(f.state.regs.r13, now.r13);
        CHECK(f.state.flags & KVM_CORE_HAS_LAPIC);
    }
    core_close(&c);
    stop_halted = 1;
    for (i = 0; i < VCPUS; i++) {
        /* A signal that lands between two KVM_RUNs (the dump's kicks send
         * the vcpus round again) wakes nothing: send until it ends. */
        while (!args[i].done) {
            pthread_kill(threads[i], SIGUSR1);
            usleep(10 * 1000);
        }
        pthread_join(threads[i], NULL);
        CHECK_EQ(args[i].result, 1);
    }
    test_vm_destroy(&vm);
    remove_dir(dir);
}

/* The counting guest (running.S), dumped while it runs: every vcpu's
 * registers in the core are at one instruction boundary of its loop. */
static void a_core_of_spinning_vcpus_is_a_consistent_snapshot(void)
{
    const char *dir = scratch_dir("spinning");
    char path[512];
    struct kvm_callbacks cb;
    struct test_vm vm;
    struct vcpu_arg args[VCPUS];
    pthread_t threads[VCPUS];
    struct core c;
    int i, round;

    memset(&cb, 0, sizeof(cb));
    cb.halt = test_stop_on_halt;
    REQUIRE(test_vm_create(&vm, &cb, NULL, RAM, 0) == 0);
    TEST_VM_LOAD_GUEST(&vm, count);
    for (i = 0; i < VCPUS; i++) {
        if (i > 0)
            REQUIRE(kvm_create_vcpu(vm.kvm, i) == 0);
        REQUIRE(test_vcpu_long_mode(&vm, i, GUEST_CODE) == 0);
        args[i].kvm = vm.kvm;
        args[i].vcpu = i;
        args[i].done = 0;
        REQUIRE(pthread_create(&threads[i], NULL, run_vcpu, &args[i]) == 0);
    }
    snprintf(path, sizeof(path), "%s/spinning.core", dir);
    for (round = 0; round < 5; round++) {
        usleep(50 * 1000);
        CHECK_EQ(kvm_dump_guest_core(vm.kvm, path, 0), 0);
        REQUIRE(core_open(&c, path) == 0);
        for (i = 0; i < VCPUS; i++) {
            struct prstatus_find f;
            uint64_t n;
            memset(&f, 0, sizeof(f));
            f.pid = i + 1;
            core_notes(&c, find_prstatus, &f);
            CHECK(f.found);
            n = f.reg[R_RAX];
            if (f.reg[R_RIP] == GUEST_LABEL_ADDR(count, inc))
                CHECK_EQ(f.reg[R_RBX], n * (n + 1) / 2);
            else
                CHECK_EQ(f.reg[R_RBX], n * (n - 1) / 2);
        }
        core_close(&c);
    }
    *(volatile uint64_t *)(vm.mem + RUNNING_STOP) = 1;
    for (i = 0; i < VCPUS; i++) {
        pthread_join(threads[i], NULL);
        CHECK_EQ(args[i].result, 1);
    }
    test_vm_destroy(&vm);
    remove_dir(dir);
}

static void bad_input_is_an_error_and_leaves_nothing(void)
{
    const char *dir = scratch_dir("bad");
    char path[600], small[300];
    struct kvm_callbacks cb;
    struct kernel_vm k;
    kvm_context_t empty;
    void *ram = NULL;

    struct kvm_regs before, after;
    uint64_t memory_before;
    int r;

    memset(&cb, 0, sizeof(cb));
    REQUIRE(kernel_vm_create(&k, &cb) == 0);
    /* Non-zero pages everywhere, so that sparseness cannot fit the core in
     * the small file system below. */
    memset(k.vm.mem + 0x300000, 0x5a, 8 << 20);
    REQUIRE(kvm_get_regs(k.vm.kvm, 0, &before) == 0);
    memory_before = test_checksum(k.vm.mem, RAM);
    CHECK_EQ(kvm_dump_guest_core(NULL, "/tmp/x", 0), -EINVAL);
    CHECK_EQ(kvm_dump_guest_core(k.vm.kvm, NULL, 0), -EFAULT);
    CHECK_EQ(kvm_dump_guest_core(k.vm.kvm, "", 0), -ENOENT);
    CHECK_EQ(kvm_dump_guest_core(k.vm.kvm, "/tmp/x", 0x80), -EINVAL);
    snprintf(path, sizeof(path), "%s/no/such/dir/core", dir);
    CHECK_EQ(kvm_dump_guest_core(k.vm.kvm, path, 0), -ENOENT);
    /* A place no file can be made: a clear error, whichever the file system gives. */
    r = kvm_dump_guest_core(k.vm.kvm, "/proc/self/libkvm.core", 0);
    CHECK(r == -EACCES || r == -ENOENT || r == -EPERM);
    /* A VM without vcpus. */
    empty = kvm_init(&cb, NULL);
    REQUIRE(empty != NULL);
    REQUIRE(kvm_create(empty, RAM, &ram) == 0);
    REQUIRE(kvm_create_phys_mem(empty, 0, 1 << 20, 0, 1) != NULL);
    snprintf(path, sizeof(path), "%s/empty.core", dir);
    CHECK_EQ(kvm_dump_guest_core(empty, path, 0), -ENOENT);
    kvm_finalize(empty);
    CHECK_EQ(files_in(dir), 0);
    /* A full disk: a 64 KiB tmpfs cannot hold 16 MiB of guest. */
    snprintf(small, sizeof(small), "%s/small", dir);
    mkdir(small, 0700);
    if (mount("tmpfs", small, "tmpfs", 0, "size=64k") == 0) {
        snprintf(path, sizeof(path), "%s/full.core", small);
        CHECK_EQ(kvm_dump_guest_core(k.vm.kvm, path, 0), -ENOSPC);
        CHECK_EQ(files_in(small), 0);
        umount(small);
    } else {
        printf("  no tmpfs mount here (%s): the full-disk case is not run\n", strerror(errno));
    }
    /* The guest is unaffected. */
    CHECK_EQ(test_checksum(k.vm.mem, RAM), memory_before);
    REQUIRE(kvm_get_regs(k.vm.kvm, 0, &after) == 0);
    CHECK(memcmp(&before, &after, sizeof(before)) == 0);
    test_vm_destroy(&k.vm);
    remove_dir(dir);
}

int main(void)
{
    check_set_timeout(240);
    RUN(a_triple_fault_with_libkvm_core_leaves_a_core_gdb_reads);
    RUN(segments_and_notes_are_what_readelf_shows);
    RUN(a_core_of_running_vcpus_has_their_registers);
    RUN(a_core_of_spinning_vcpus_is_a_consistent_snapshot);
    RUN(bad_input_is_an_error_and_leaves_nothing);
    return check_summary();
}

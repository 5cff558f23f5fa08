//! The per-exit path of `kvm_run` allocates nothing: a counting global
//! allocator sees no allocation on the running thread across 100,000
//! port exits, MMIO exits, single steps and breakpoint hits.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::{c_int, c_ulong, c_void};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use kvm::callbacks::kvm_callbacks;
use kvm::capi::*;
use kvm_bindings::{kvm_cpuid_entry, kvm_regs, kvm_sregs};

/// Counts allocations made by threads that asked to be counted.
struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

fn note_allocation() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Exits seen, and how many end kvm_run.
struct Budget {
    seen: AtomicU64,
    wanted: AtomicU64,
}

fn spend(opaque: *mut c_void) -> c_int {
    // SAFETY: opaque is the &Budget given to kvm_init, alive for the test.
    let budget = unsafe { &*(opaque as *const Budget) };
    c_int::from(budget.seen.fetch_add(1, Ordering::Relaxed) + 1 >= budget.wanted.load(Ordering::Relaxed))
}

unsafe extern "C" fn on_outb(opaque: *mut c_void, _port: u16, _data: u8) -> c_int {
    spend(opaque)
}
unsafe extern "C" fn on_mmio_write(opaque: *mut c_void, _addr: u64, _data: *mut u8, _len: c_int) -> c_int {
    spend(opaque)
}
unsafe extern "C" fn on_debug(opaque: *mut c_void, _vcpu: c_int, _kind: c_int, _watch: u64) -> c_int {
    spend(opaque)
}

const CODE: u64 = 0x10000;
const RAM: u64 = 8 << 20;

/// A VM with vcpu 0 in 64-bit mode (identity-mapped 1 GiB) at CODE, running `code`.
struct Vm {
    kvm: kvm_context_t,
    budget: Box<Budget>,
}

impl Vm {
    fn new(code: &[u8]) -> Vm {
        let budget = Box::new(Budget { seen: AtomicU64::new(0), wanted: AtomicU64::new(u64::MAX) });
        let mut callbacks = kvm_callbacks {
            outb: Some(on_outb),
            mmio_write: Some(on_mmio_write),
            debug: Some(on_debug),
            ..Default::default()
        };
        // SAFETY: valid callbacks and a budget that outlives the context.
        unsafe {
            let kvm = kvm_init(&mut callbacks, &*budget as *const Budget as *mut c_void);
            assert!(!kvm.is_null());
            kvm_disable_irqchip_creation(kvm);
            // The 2008 pattern: the VMM's RAM around the VGA window (MMIO), then vcpu 0.
            let mut ram = vec![0u8; RAM as usize + 4096].leak().as_mut_ptr();
            ram = ram.add(ram.align_offset(4096));
            let mut phys_ram_base = ram.cast::<c_void>();
            assert_eq!(kvm_create(kvm, RAM as _, &mut phys_ram_base), 0);
            assert_eq!(kvm_register_userspace_phys_mem(kvm, 0, ram.cast(), 0xa0000, 0), 0);
            assert_eq!(
                kvm_register_userspace_phys_mem(kvm, 0xc0000, ram.add(0xc0000).cast(), RAM as c_ulong - 0xc0000, 0),
                0
            );
            assert_eq!(kvm_create_vcpu(kvm, 0), 0);
            let put = |gpa: u64, value: u64| std::ptr::write_unaligned(ram.add(gpa as usize).cast::<u64>(), value);
            put(0x1000, 0x2000 | 3);
            put(0x2000, 0x3000 | 3);
            for i in 0..512 {
                put(0x3000 + 8 * i, (i << 21) | 0x83);
            }
            put(0x500 + 8, 0x00af_9b00_0000_ffff);
            put(0x500 + 16, 0x00cf_9300_0000_ffff);
            std::ptr::copy_nonoverlapping(code.as_ptr(), ram.add(CODE as usize), code.len());
            let supported = kvm_ioctls::Kvm::new().unwrap().get_supported_cpuid(256).unwrap();
            let mut entries: Vec<kvm_cpuid_entry> = supported
                .as_slice()
                .iter()
                .filter(|e| e.index == 0)
                .map(|e| kvm_cpuid_entry {
                    function: e.function,
                    eax: e.eax,
                    ebx: e.ebx,
                    ecx: e.ecx,
                    edx: e.edx,
                    padding: 0,
                })
                .collect();
            assert_eq!(kvm_setup_cpuid(kvm, 0, entries.len() as c_int, entries.as_mut_ptr()), 0);
            let mut sregs = kvm_sregs::default();
            assert_eq!(kvm_get_sregs(kvm, 0, &mut sregs), 0);
            sregs.cs = kvm_bindings::kvm_segment {
                selector: 8,
                limit: 0xffff_ffff,
                type_: 11,
                present: 1,
                s: 1,
                l: 1,
                g: 1,
                ..Default::default()
            };
            let data = kvm_bindings::kvm_segment {
                selector: 16,
                limit: 0xffff_ffff,
                type_: 3,
                present: 1,
                s: 1,
                db: 1,
                g: 1,
                ..Default::default()
            };
            (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
            sregs.gdt.base = 0x500;
            sregs.gdt.limit = 23;
            sregs.cr0 = 0x8005_0033;
            sregs.cr3 = 0x1000;
            sregs.cr4 = 0x20;
            sregs.efer = 0x501;
            assert_eq!(kvm_set_sregs(kvm, 0, &mut sregs), 0);
            let mut regs = kvm_regs { rip: CODE, rsp: 0x80000, rflags: 2, ..Default::default() };
            assert_eq!(kvm_set_regs(kvm, 0, &mut regs), 0);
            Vm { kvm, budget }
        }
    }

    /// Runs `exits` exits; returns the allocations made meanwhile.
    fn allocations_over(&self, exits: u64) -> usize {
        self.budget.seen.store(0, Ordering::Relaxed);
        self.budget.wanted.store(exits, Ordering::Relaxed);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        COUNTING.with(|c| c.set(true));
        // SAFETY: a live context.
        let result = unsafe { kvm_run(self.kvm, 0) };
        COUNTING.with(|c| c.set(false));
        assert_eq!(result, 1, "kvm_run ended by the budget");
        assert_eq!(self.budget.seen.load(Ordering::Relaxed), exits);
        ALLOCATIONS.load(Ordering::Relaxed) - before
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // SAFETY: the context came from kvm_init.
        unsafe { kvm_finalize(self.kvm) }
    }
}

#[test]
fn port_io_exits_allocate_nothing() {
    let vm = Vm::new(&[0xe6, 0x10, 0xeb, 0xfc]); // 1: out %al,$0x10; jmp 1b
    vm.allocations_over(1000); // first entry: thread-local set-up
    assert_eq!(vm.allocations_over(100_000), 0);
}

#[test]
fn mmio_exits_allocate_nothing() {
    // mov $0xa0000,%ebx; 1: movl $1,(%rbx); jmp 1b
    let vm = Vm::new(&[0xbb, 0x00, 0x00, 0x0a, 0x00, 0xc7, 0x03, 0x01, 0x00, 0x00, 0x00, 0xeb, 0xf8]);
    vm.allocations_over(1000);
    assert_eq!(vm.allocations_over(20_000), 0);
}

#[test]
fn single_steps_allocate_nothing() {
    let vm = Vm::new(&[0x90, 0x90, 0xeb, 0xfc]); // 1: nop; nop; jmp 1b
                                                 // SAFETY: a live context.
    assert_eq!(unsafe { kvm_set_singlestep(vm.kvm, 0, 1) }, 0);
    vm.allocations_over(1000);
    assert_eq!(vm.allocations_over(20_000), 0);
}

#[test]
fn breakpoint_hits_and_resumes_allocate_nothing() {
    let vm = Vm::new(&[0x90, 0x90, 0xeb, 0xfc]);
    // SAFETY: a live context.
    assert_eq!(unsafe { kvm_insert_breakpoint(vm.kvm, 0, KVM_GDB_BREAKPOINT_SW, CODE, 1) }, 0);
    vm.allocations_over(100);
    assert_eq!(vm.allocations_over(5_000), 0);
}

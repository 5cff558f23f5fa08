//! The software page walker alone, on page tables built in memory: 4-level
//! and 5-level walks (this project's host has no LA57, so 5-level paging
//! cannot be measured through a vcpu). Prints `bench` lines like
//! bench/exit_bench.c.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use kvm::debug::pagewalk::{translate, PagingRegisters, PhysicalMemory};

/// Guest-physical memory of u64 words.
struct Tables(HashMap<u64, u64>);

impl PhysicalMemory for Tables {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        Some(self.0.get(&gpa).copied().unwrap_or(0))
    }
}

/// Tables mapping 512 4 KiB pages at virtual 0 (and, with `five_level`,
/// through a PML5) to physical 0x100000 upwards.
fn tables(five_level: bool) -> (Tables, PagingRegisters) {
    const RW: u64 = 3;
    let mut t = HashMap::new();
    let mut table = 0x1000;
    if five_level {
        t.insert(0x1000, 0x2000 | RW);
        table = 0x2000;
    }
    t.insert(table, 0x3000 | RW);
    t.insert(0x3000, 0x4000 | RW);
    t.insert(0x4000, 0x5000 | RW);
    for i in 0..512u64 {
        t.insert(0x5000 + 8 * i, (0x10_0000 + 0x1000 * i) | RW);
    }
    let cr4 = (1 << 5) | if five_level { 1 << 12 } else { 0 };
    (Tables(t), PagingRegisters { cr0: 0x8000_0011, cr3: 0x1000, cr4, efer: 0x500 })
}

fn main() {
    for (name, five_level) in [("pagewalk_4level", false), ("pagewalk_5level", true)] {
        let (mem, regs) = tables(five_level);
        let mut rates = Vec::new();
        for _ in 0..9 {
            let n = 1_000_000u64;
            let start = Instant::now();
            for i in 0..n {
                black_box(translate(&regs, &mem, black_box((i & 511) << 12 | 0x10)).expect("mapped"));
            }
            rates.push(n as f64 / start.elapsed().as_secs_f64());
        }
        rates.sort_by(|a, b| a.total_cmp(b));
        println!("bench {name} {:.0} per_s spread={:.0}..{:.0}", rates[4], rates[0], rates[8]);
    }
}

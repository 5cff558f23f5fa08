//! The page walker on page tables made of the fuzzer's bytes: it must
//! never panic, and a translation must land inside what the tables allow.
#![no_main]

use kvm::debug::pagewalk::{translate, PagingRegisters, PhysicalMemory};
use libfuzzer_sys::fuzz_target;

struct Bytes<'a>(&'a [u8]);

impl PhysicalMemory for Bytes<'_> {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        let start = usize::try_from(gpa).ok()?;
        let bytes = self.0.get(start..start.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 40 {
        return;
    }
    let word = |i: usize| u64::from_le_bytes(data[i * 8..i * 8 + 8].try_into().unwrap());
    let regs = PagingRegisters { cr0: word(0), cr3: word(1) % 0x10000, cr4: word(2), efer: word(3) };
    let gva = word(4);
    if let Ok(t) = translate(&regs, &Bytes(&data[40..]), gva) {
        assert!(t.page_size.is_power_of_two());
        assert_eq!(t.gpa & (t.page_size - 1).min(0xfff), gva & (t.page_size - 1).min(0xfff));
    }
});

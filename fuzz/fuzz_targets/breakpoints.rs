//! The breakpoint table driven by the fuzzer's bytes as operations: it must
//! never panic, and give the guest its memory back exactly when everything
//! is removed.
#![no_main]

use std::cell::RefCell;

use kvm::debug::breakpoints::{BreakpointTable, INT3};
use kvm::debug::BreakType;
use kvm::error::Errno;
use libfuzzer_sys::fuzz_target;

const KINDS: [BreakType; 4] = [BreakType::HardwareBreakpoint, BreakType::WatchWrite, BreakType::WatchRead, BreakType::WatchAccess];

fuzz_target!(|data: &[u8]| {
    let mut guest: Vec<u8> = (0..64u8).map(|i| i | 1).collect();
    let mem = RefCell::new(guest.clone());
    let mut table = BreakpointTable::default();
    for op in data.chunks_exact(3) {
        let (a, b) = (op[1], op[2]);
        let gva = u64::from(a % 96);
        let location = if gva < 64 { Ok(gva) } else { Err(Errno::FAULT) };
        let _ = match op[0] % 7 {
            0 => table.insert_software(gva, location, b & 1 == 1, &mem),
            1 => table.remove_software(gva, &mem),
            2 => table.insert_hardware(KINDS[(b % 4) as usize], u64::from(a), u64::from(b >> 4)),
            3 => table.remove_hardware(KINDS[(b % 4) as usize], u64::from(a), u64::from(b >> 4)),
            4 if b != INT3 => {
                let gpa = (a % 64) as usize;
                guest[gpa] = b;
                mem.borrow_mut()[gpa] = b;
                Ok(())
            }
            5 => {
                table.rearm(|g| if g < 64 { Ok(g) } else { Err(Errno::FAULT) }, &mem);
                Ok(())
            }
            _ => Ok(()),
        };
    }
    table.remove_all(&mem);
    assert_eq!(*mem.borrow(), guest);
});

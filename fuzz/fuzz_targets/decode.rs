//! The debug-exit decoder on any exception, DR6, DR7 and programmed registers.
#![no_main]

use kvm::debug::decode::{decode_debug_exit, ProgrammedRegisters};
use kvm_bindings::kvm_debug_exit_arch;
use libfuzzer_sys::fuzz_target;

fn word(data: &[u8], i: usize) -> u64 {
    let mut bytes = [0u8; 8];
    for (k, b) in bytes.iter_mut().enumerate() {
        *b = data.get(i * 8 + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(bytes)
}

fuzz_target!(|data: &[u8]| {
    let arch = kvm_debug_exit_arch { exception: word(data, 0) as u32, pad: 0, pc: word(data, 1), dr6: word(data, 2), dr7: word(data, 3) };
    let programmed = ProgrammedRegisters { addresses: [word(data, 4), word(data, 5), word(data, 6), word(data, 7)], dr7: word(data, 8) };
    let event = decode_debug_exit(&arch, &programmed);
    assert!([0, 1, 2, 4, 8].contains(&event.watch_len));
});
